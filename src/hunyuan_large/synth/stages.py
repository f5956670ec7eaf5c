"""A stage runner over sharded jsonl: manifests, signatures, skip/resume/invalidate.

A stage maps input shard i to output shard i (or, if `merge`, all input shards to one). Each
finished shard is written to a temporary file and renamed, then recorded in the stage's
manifest; a rerun skips recorded shards and redoes an interrupted one from scratch, so a kill
loses and duplicates nothing. The signature hashes the stage's config and its input's
signature: when it changes the stage's folder is cleared, and so, in turn, is every later one's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

Record = dict
# A shard's records -> (kept records, dropped records each with a "dropped" reason, counted events
# that drop nothing, e.g. an unparsable rating).
ShardFn = Callable[[list[Record]], tuple[list[Record], list[Record], Counter]]


def signature(config: object, upstream: str = "") -> str:
    """A short hash of a JSON-able config and the upstream stage's signature."""
    text = json.dumps(config, sort_keys=True, default=str) + upstream
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_jsonl(path: Path) -> list[Record]:
    """The records of a jsonl file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: Path, records: list[Record]) -> None:
    """Write records atomically: a temporary file renamed into place."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


@dataclass
class Stage:
    """One step of the pipeline: a name, the config its signature covers, and its per-shard work."""

    name: str
    config: object
    fn: ShardFn
    merge: bool = False  # all input shards -> one output shard (global steps such as dedup)


@dataclass
class StageResult:
    """A finished stage: its folder, signature and counts."""

    folder: Path
    signature: str
    shards: list[str]
    kept: int
    dropped: Counter
    events: Counter
    records_in: int
    seconds: float
    skipped: int  # shards reused from an earlier run

    def records(self) -> list[Record]:
        """The kept records of every shard, in shard order."""
        return [r for s in self.shards for r in read_jsonl(self.folder / f"{s}.jsonl")]


def _load_manifest(folder: Path, sig: str) -> dict:
    """The stage's manifest if it matches `sig`; otherwise clear the folder and start a new one."""
    path = folder / "manifest.json"
    if path.exists():
        manifest = json.loads(path.read_text())
        if manifest.get("signature") == sig:
            return manifest
        shutil.rmtree(folder)  # the config or the input changed: nothing here is valid
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dropped").mkdir(exist_ok=True)
    return {"signature": sig, "shards": {}, "complete": False}


def _save_manifest(folder: Path, manifest: dict) -> None:
    tmp = folder / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, folder / "manifest.json")


def run_stage(stage: Stage, root: Path, inputs: dict[str, list[Record]] | StageResult,
              upstream: str = "", progress: Progress | None = None) -> StageResult:
    """Run `stage` over input shards (a StageResult, or {shard name: records} for the first stage)."""
    folder = root / stage.name
    sig = signature(stage.config, upstream if isinstance(inputs, dict) else inputs.signature)
    manifest = _load_manifest(folder, sig)
    if isinstance(inputs, StageResult):
        names = ["merged"] if stage.merge else inputs.shards
        load = (lambda _: inputs.records()) if stage.merge else (lambda n: read_jsonl(inputs.folder / f"{n}.jsonl"))
    else:
        names = sorted(inputs)
        load = inputs.__getitem__
    done = manifest["shards"]
    todo = [n for n in names if n not in done]
    total_in = sum(d["in"] for d in done.values())
    task = None
    if progress:
        task = progress.add_task(stage.name, total=len(names), completed=len(names) - len(todo), rate="")
    start, fresh = time.perf_counter(), 0
    for name in todo:
        records = load(name)
        kept, dropped, events = stage.fn(records)
        write_jsonl(folder / "dropped" / f"{name}.jsonl", dropped)
        write_jsonl(folder / f"{name}.jsonl", kept)
        done[name] = {"in": len(records), "kept": len(kept),
                      "dropped": dict(Counter(r["dropped"] for r in dropped)), "events": dict(events)}
        _save_manifest(folder, manifest)
        total_in += len(records)
        fresh += len(records)
        if progress:
            rate = fresh / max(time.perf_counter() - start, 1e-9)
            progress.update(task, advance=1, rate=f"{rate:.1f} rec/s")
    manifest["complete"] = True
    manifest["seconds"] = manifest.get("seconds", 0.0) + time.perf_counter() - start
    _save_manifest(folder, manifest)
    dropped, events = Counter(), Counter()
    for d in done.values():
        dropped.update(d["dropped"])
        events.update(d["events"])
    return StageResult(folder, sig, names, sum(d["kept"] for d in done.values()), dropped, events, total_in,
                       manifest["seconds"], len(names) - len(todo))


def progress_bar() -> Progress:
    """A rich progress display: one bar per stage with shards done and records/s."""
    return Progress(TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("shards"), TextColumn("{task.fields[rate]}"), TimeElapsedColumn())
