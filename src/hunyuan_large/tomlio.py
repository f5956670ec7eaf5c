"""TOML in (tomllib) and out (a small writer for plain config values)."""

from __future__ import annotations

import json
import tomllib
from typing import Any


def format_value(v: Any) -> str:
    """One TOML value (scalar, array or inline table) as text."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {format_value(x)}" for k, x in v.items()) + "}"
    if v is None:
        raise ValueError("TOML has no null; leave the key out")
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dumps(sections: dict[str, dict[str, Any]]) -> str:
    """TOML text for {section: {key: value}} (values: scalars, lists, inline tables)."""
    out = []
    for name, body in sections.items():
        out.append(f"[{name}]")
        out += [f"{k} = {format_value(v)}" for k, v in body.items() if v is not None]
        out.append("")
    return "\n".join(out)


def parse_value(text: str) -> Any:
    """A command-line value as TOML (3e-4, true, [1, 2], {a = 1}); else the raw string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


loads = tomllib.loads
