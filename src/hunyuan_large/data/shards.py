"""Tokenize documents in worker processes into uint32 shards on disk, with a validation split.

Layout of a category folder: `train-00000.bin`, ... and `val-00000.bin`, ... (raw uint32
tokens; each document framed as the release's `encode` frames text: `<|startoftext|>`, its tokens,
`<|endoftext|>`; special-token strings inside documents stay ordinary text), `*.idx.npy` (document start offsets
per shard) and `meta.json` (token counts, source statistics, and a fingerprint of the sources
and tokenizer, so an unchanged category is not tokenized twice).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import zlib
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .sources import GENERATED, Document, SourceStats, iter_documents, resolve_files

SHARD_TOKENS = 256 * 2**20  # 1 GiB of uint32 per shard file
FORMAT = 2  # bumped when the token layout changes, so older caches are rebuilt
_worker_tokenizer = None


def in_validation(doc_id: str, val_fraction: float) -> bool:
    """Stable document-level split: the same document is always on the same side."""
    return (zlib.crc32(doc_id.encode()) % 1_000_000) < val_fraction * 1_000_000


def fingerprint(specs: list[str], text_field: str, val_fraction: float, tokenizer_hash: str) -> str:
    """Hash of what the shards depend on: file names, sizes, mtimes, the split and tokenizer."""
    h = hashlib.sha256(json.dumps([FORMAT, text_field, val_fraction, tokenizer_hash]).encode())
    for spec in specs:
        if spec.startswith(GENERATED):  # its documents are a function of the spec text
            h.update(f"{spec}\n".encode())
        for f in resolve_files(spec):
            st = f.stat()
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _init_worker(tokenizer_dir: str) -> None:
    global _worker_tokenizer
    from ..tokenizer import load_tokenizer

    _worker_tokenizer = load_tokenizer(tokenizer_dir)


def _tokenize(doc: Document) -> tuple[str, np.ndarray]:
    tok = _worker_tokenizer
    return doc.doc_id, np.asarray(tok.document(doc.text), dtype=np.uint32)


class _ShardWriter:
    """Appends documents to numbered shard files of one split."""

    def __init__(self, folder: Path, split: str):
        self.folder, self.split = folder, split
        self.shards: list[dict] = []
        self._file = None
        self._starts: list[int] = []
        self._n = 0

    def add(self, tokens: np.ndarray) -> None:
        if self._file is None or self._n >= SHARD_TOKENS:
            self._close()
            name = f"{self.split}-{len(self.shards):05d}.bin"
            self._file = open(self.folder / name, "wb")
            self.shards.append({"file": name, "tokens": 0, "documents": 0})
            self._starts, self._n = [], 0
        self._starts.append(self._n)
        self._file.write(tokens.tobytes())
        self._n += len(tokens)

    def _close(self) -> None:
        if self._file is None:
            return
        self._file.close()
        shard = self.shards[-1]
        shard["tokens"], shard["documents"] = self._n, len(self._starts)
        np.save(self.folder / shard["file"].replace(".bin", ".idx.npy"), np.asarray(self._starts, np.uint64))
        self._file = None

    def finish(self) -> list[dict]:
        self._close()
        return self.shards


def build_category(
    specs: list[str],
    tokenizer_dir: Path,
    tokenizer_hash: str,
    out_dir: Path,
    text_field: str = "text",
    val_fraction: float = 0.02,
    workers: int | None = None,
    progress=None,
) -> dict:
    """Tokenize one category's sources into `out_dir` (reused when nothing changed); its meta."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fp = fingerprint(specs, text_field, val_fraction, tokenizer_hash)
    meta_path = out_dir / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") == fp:
            return meta
        meta_path.unlink()  # stale: rebuild below
    stats = SourceStats()
    writers = {"train": _ShardWriter(out_dir, "train"), "val": _ShardWriter(out_dir, "val")}
    workers = workers or max(1, min(os.cpu_count() or 1, 8))
    docs: Iterator[Document] = iter_documents(specs, text_field, stats)
    ctx = mp.get_context("spawn")  # the parent holds torch's thread pools; fork is unsafe
    with ctx.Pool(workers, initializer=_init_worker, initargs=(str(tokenizer_dir),)) as pool:
        for doc_id, tokens in pool.imap(_tokenize, docs, chunksize=8):
            writers["val" if in_validation(doc_id, val_fraction) else "train"].add(tokens)
            if progress is not None:
                progress(len(tokens))
    meta = {"fingerprint": fp, "sources": specs, "text_field": text_field, "val_fraction": val_fraction,
            "stats": asdict(stats), **{split: w.finish() for split, w in writers.items()}}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")  # written last: marks completion
    return meta
