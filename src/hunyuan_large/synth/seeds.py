"""Seed sources -> seed records: paragraphs of text files, a field of jsonl lines, whole code files."""

from __future__ import annotations

import glob
import json
from pathlib import Path

from ..errors import UserError
from .config import SeedSource


def read_seeds(sources: list[SeedSource]) -> list[dict]:
    """Seed records {"id", "domain", "seed": {"source", "text"[, "verbatim"][, "answer"]}} in source order."""
    out = []
    for src in sources:
        texts = [(where, text.strip()[: src.max_chars], answer) for where, text, answer in _texts(src) if text.strip()]
        for where, text, answer in texts[: src.limit]:
            seed = {"source": where, "text": text}
            if src.verbatim:
                seed["verbatim"] = True
            if answer is not None:
                seed["answer"] = answer
            out.append({"id": f"s{len(out):06d}", "domain": src.domain, "seed": seed})
    return out


def _texts(src: SeedSource):
    """(where, text, reference answer or None) of one source."""
    paths = sorted(glob.glob(src.path, recursive=True)) if src.kind == "code" else [src.path]
    if not paths or not all(Path(p).is_file() for p in paths):
        raise UserError(f"seeds: no file at {src.path!r}")
    for path in paths:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        if src.kind == "code":
            yield path, text, None
        elif src.kind == "text":
            for i, para in enumerate(text.split("\n\n")):
                yield f"{path}#p{i}", para, None
        else:
            for i, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                fields = [src.field] + ([src.answer_field] if src.answer_field else [])
                try:
                    obj = json.loads(line)
                    values = [str(obj[f]) for f in fields]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise UserError(f"{path}:{i}: not a JSON object with the fields {fields}") from None
                yield f"{path}:{i}", values[0], values[1] if src.answer_field else None


def shard(records: list[dict], size: int) -> dict[str, list[dict]]:
    """{shard name: records}, `size` records per shard."""
    return {f"shard-{i // size:05d}": records[i:i + size] for i in range(0, len(records), size)}
