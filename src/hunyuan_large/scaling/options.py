"""Option dataclasses (the shape rule, the grid): fields with help lines, validation."""

from __future__ import annotations

from dataclasses import field
from typing import Any


def option(default: Any, text: str) -> Any:
    """A dataclass field with a help line; the CLI turns each such field into an --option."""
    return field(default=default, metadata={"help": text})

