"""Inference: the paged GQA + CLA KV cache with prefix caching, sampling, the batched engine and the server."""

from .engine import Engine, EngineConfig, Result, StepOutput
from .kv_cache import KVCache
from .sampling import SamplingParams, load_generation_defaults

__all__ = ["Engine", "EngineConfig", "KVCache", "Result", "SamplingParams", "StepOutput",
           "load_generation_defaults"]
