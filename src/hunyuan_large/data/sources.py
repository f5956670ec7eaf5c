"""Documents from files: .txt and other text files, .jsonl (a text field), .parquet, folders, globs.

Bad input is counted, not fatal: empty files and records are skipped, undecodable bytes are
replaced (U+FFFD), malformed JSON lines are skipped. A path that matches nothing is an error.
"""

from __future__ import annotations

import glob
import json
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError

# Files a folder source reads; other extensions (binaries, images, ...) are skipped.
TEXT_SUFFIXES = {".txt", ".md", ".rst", ".py", ".c", ".h", ".cc", ".cpp", ".js", ".ts", ".java",
                 ".go", ".rs", ".json", ".html", ".css", ".tex", ".sh", ".toml", ".yaml", ".yml"}
RECORD_SUFFIXES = {".jsonl", ".parquet"}
STDLIB = "stdlib"  # the demo corpus: the Python standard library's own source
GENERATED = "retrieval:"  # synthetic retrieval documents (retrieval.py), made from the spec alone


class DataError(UserError):
    """A data source that cannot be read."""


@dataclass
class SourceStats:
    """What reading the sources skipped or repaired."""

    files: int = 0
    documents: int = 0
    bytes: int = 0
    empty_skipped: int = 0
    undecodable_bytes: int = 0
    files_with_undecodable: int = 0
    bad_records: int = 0
    skipped_files: list[str] = field(default_factory=list)


@dataclass
class Document:
    """One training document: its text and a stable id (file path, plus record number)."""

    doc_id: str
    text: str


def stdlib_files() -> list[Path]:
    """The .py files of this Python's standard library, without site-packages and test suites."""
    root = _stdlib_root()
    skip = {"site-packages", "dist-packages", "test", "tests", "idle_test"}
    return [p for p in sorted(root.rglob("*.py")) if not skip & set(p.relative_to(root).parts)]


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def source_root(spec: str) -> Path:
    """The folder document ids are relative to, so a split survives moving the data."""
    if spec == STDLIB:
        return _stdlib_root()
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.is_file():
        return path.parent
    fixed = [p for p in path.parts if not glob.has_magic(p)]
    return Path(*path.parts[: len(fixed)]) if fixed else Path(".")


def resolve_files(spec: str) -> list[Path]:
    """The files one source string names: a file, a folder (recursive), a glob, or 'stdlib' (none if generated)."""
    if spec == STDLIB:
        return stdlib_files()
    if spec.startswith(GENERATED):
        return []
    path = Path(spec).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and _readable(p)
                      and not any(part.startswith(".") for part in p.relative_to(path).parts))
    matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    if not matches:
        raise DataError(f"data source {spec!r} matches no file (a file, folder, glob or 'stdlib')")
    return matches


def _readable(path: Path) -> bool:
    return path.suffix.lower() in TEXT_SUFFIXES | RECORD_SUFFIXES


def _decode(raw: bytes, stats: SourceStats) -> str:
    text = raw.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") - raw.count("\ufffd".encode())
    if bad:
        stats.undecodable_bytes += bad
        stats.files_with_undecodable += 1
    return text


def read_file(path: Path, text_field: str, stats: SourceStats, doc_id: str | None = None) -> Iterator[Document]:
    """The documents of one file: the whole file, or one per jsonl line / parquet row."""
    doc_id = doc_id or str(path)
    stats.files += 1
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _read_parquet(path, text_field, stats, doc_id)
        return
    raw = path.read_bytes()
    stats.bytes += len(raw)
    if suffix == ".jsonl":
        for n, line in enumerate(_decode(raw, stats).splitlines()):
            if not line.strip():
                continue
            try:
                text = json.loads(line)[text_field]
            except (json.JSONDecodeError, KeyError, TypeError):
                stats.bad_records += 1
                continue
            if not isinstance(text, str) or not text.strip():
                stats.empty_skipped += 1
                continue
            stats.documents += 1
            yield Document(f"{doc_id}#{n}", text)
        return
    text = _decode(raw, stats)
    if not text.strip():
        stats.empty_skipped += 1
        stats.skipped_files.append(str(path))
        return
    stats.documents += 1
    yield Document(doc_id, text)


def _read_parquet(path: Path, text_field: str, stats: SourceStats, doc_id: str) -> Iterator[Document]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a broken file
        raise DataError(f"cannot read parquet file {path}: {e}") from None
    if text_field not in table.schema_arrow.names:
        raise DataError(f"parquet file {path} has no column {text_field!r} "
                        f"(columns: {', '.join(table.schema_arrow.names)})")
    n = 0
    for batch in table.iter_batches(columns=[text_field]):
        for text in batch.column(0).to_pylist():
            n += 1
            if not isinstance(text, str) or not text.strip():
                stats.empty_skipped += 1
                continue
            stats.bytes += len(text.encode())
            stats.documents += 1
            yield Document(f"{doc_id}#{n - 1}", text)


def iter_documents(specs: list[str], text_field: str, stats: SourceStats) -> Iterator[Document]:
    """All documents of a list of sources, in a deterministic order.

    Document ids are paths relative to each source's root (plus a record number), so they do
    not depend on where the data lives.
    """
    for spec in specs:
        if spec.startswith(GENERATED):
            from .retrieval import iter_retrieval  # it builds on this module's Document

            for doc in iter_retrieval(spec):
                stats.documents += 1
                stats.bytes += len(doc.text)
                yield doc
            continue
        root = source_root(spec)
        for path in resolve_files(spec):
            yield from read_file(path, text_field, stats, path.relative_to(root).as_posix())
