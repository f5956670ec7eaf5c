"""`generation_config.json` of a model folder: the one place it is read and written.

HF's format: `eos_token_id` (an id or a list), `bos_token_id`, `pad_token_id`, and sampling
defaults (`do_sample`, `temperature`, `top_k`, `top_p`, `repetition_penalty`, `max_new_tokens`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import UserError, is_int

GENERATION_CONFIG = "generation_config.json"


def read_generation_config(folder: str | Path) -> dict[str, Any] | None:
    """The folder's generation_config.json as a dict, or None without one."""
    path = Path(folder) / GENERATION_CONFIG
    if not path.exists():
        return None
    try:
        g = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(g, dict):
        raise UserError(f"{path} must hold a JSON object")
    return g


def eos_token_ids(g: dict[str, Any], folder: str | Path = "") -> tuple[int, ...]:
    """`eos_token_id` (an id or a list of ids) as a tuple; () when absent."""
    eos = g.get("eos_token_id")
    if eos is None:
        return ()
    ids = [eos] if is_int(eos) else eos
    if not isinstance(ids, list) or not all(is_int(i) for i in ids):
        raise UserError(f"{Path(folder) / GENERATION_CONFIG}: eos_token_id must be an id or a list of ids, "
                        f"got {eos!r}")
    return tuple(ids)


def write_generation_config(folder: str | Path, values: dict[str, Any]) -> Path:
    """Write `values` as the folder's generation_config.json; returns its path."""
    path = Path(folder) / GENERATION_CONFIG
    path.write_text(json.dumps(values, indent=2) + "\n")
    return path
