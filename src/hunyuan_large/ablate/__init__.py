"""Matched-run ablations of the paper's choices: suite files, the runs, and their report."""

from .run import run_suite
from .suite import Suite

__all__ = ["Suite", "run_suite"]
