"""RULER-style long-context evaluation: offline generators sized to a token length, RULER's scoring.

Tasks follow RULER (Hsieh et al., 2024): needle-in-a-haystack variants, variable tracking and word
frequency extraction, each prompt plus its generation budget filling a requested number of tokens
of the model's own tokenizer. `hunyuan eval ruler` runs them through the engine.
"""

from .metrics import string_match_all, string_match_part
from .samples import Sample, make_samples
from .tasks import TASKS, TaskSpec

__all__ = ["Sample", "TASKS", "TaskSpec", "make_samples", "string_match_all", "string_match_part"]
