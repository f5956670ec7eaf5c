"""Pre-training: run config, optimizer groups, schedule, the loop, run checkpoints, metrics."""

from .config import RunConfig
from .trainer import Trainer, TrainResult

__all__ = ["RunConfig", "Trainer", "TrainResult"]
