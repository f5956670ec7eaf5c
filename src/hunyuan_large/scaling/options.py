"""Option dataclasses (the shape rule, the grid): fields with help lines, validation."""

from __future__ import annotations

from dataclasses import field
from typing import Any


def option(default: Any, text: str) -> Any:
    """A dataclass field with a help line; the CLI turns each such field into an --option."""
    return field(default=default, metadata={"help": text})


def require(checks: list[tuple[bool, str]], error: type[Exception], prefix: str = "") -> None:
    """Raise `error` with the message of the first failed check."""
    for ok, message in checks:
        if not ok:
            raise error(prefix + message)
