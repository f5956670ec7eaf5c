"""Plan and results files: JSON written atomically; JSON or TOML (by suffix) read."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .. import tomlio
from ..errors import UserError


def read_table_file(path: str | Path, what: str) -> dict[str, Any]:
    """A JSON or TOML file holding one table; `what` names it in errors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file {path} does not exist")
    is_toml = path.suffix == ".toml"
    try:
        raw = tomlio.loads(path.read_text()) if is_toml else json.loads(path.read_text())
    except (json.JSONDecodeError, tomlio.tomllib.TOMLDecodeError) as e:
        raise UserError(f"{path} is not valid {'TOML' if is_toml else 'JSON'}: {e}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{what} file {path} must hold a table (a JSON object)")
    return raw


def write_json(path: Path, data: Any) -> Path:
    """Write through a temporary file, so an interrupted sweep never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
    return path
