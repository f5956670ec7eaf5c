"""`hunyuan ablate SUITE`: train every run of an ablation suite, then write its report.

The ablation folder holds `plan.json` (every set, arm and seed with its resolved config),
`shared/` (one tokenizer and one tokenized corpus for all runs, as in a scaling sweep),
a folder per run (`<set>-<arm>-s<seed>`, an ordinary run folder: a killed run resumes from its
last checkpoint; runs of identical configs in several sets share one) and
the report. A run whose folder holds `ablate.json` is finished and skipped; a failed run is
reported and the suite goes on (it is retried on the next call).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from rich.console import Console

from ..accounting import kv_cache_bytes_per_token
from ..scaling.files import write_json
from ..scaling.run import train_in_sweep
from ..train import RunConfig
from ..train.data_setup import prepare_tokenizer
from .report import DONE_FILE, read_result, write_report
from .suite import PlannedRun, Suite


def run_suite(suite: Suite, console: Console | None = None, train: bool = True) -> Path:
    """Train the suite's unfinished runs (unless `train` is False), then write the report; returns it."""
    console = console or Console()
    planned = suite.plan()
    write_json(suite.out / "plan.json", {"sets": [s.name for s in suite.sets],
                                         "runs": [dataclasses.asdict(r) for r in planned]})
    firsts: dict[str, PlannedRun] = {}
    for r in planned:
        firsts.setdefault(r.folder, r)
    unique = list(firsts.values())
    console.print(f"ablation {suite.out}: {len(suite.sets)} sets, {len(planned)} (set, arm, seed) runs, "
                  f"{len(unique)} distinct trainings")
    if train:
        tokenizer = _shared_tokenizer(suite, unique[0], console)
        _train_all(unique, suite.out, tokenizer, console)
    return write_report(suite, planned, console)


def _shared_tokenizer(suite: Suite, first: PlannedRun, console: Console) -> Path:
    """Every run uses one tokenizer (trained on the base's data once, or the base's tokenizer.path)."""
    shared = suite.out / "shared"
    prepare_tokenizer(RunConfig.from_dict(first.run), shared, console)
    return shared / "tokenizer"


def _train_all(runs: list[PlannedRun], out: Path, tokenizer: Path, console: Console) -> None:
    """Train each run not finished yet, with the suite's progress and an ETA between runs."""
    todo = [r for r in runs if not finished(out / r.folder, r)]
    console.print(f"{len(runs) - len(todo)} finished earlier (skipped), {len(todo)} to train")
    spent: list[float] = []
    for i, r in enumerate(todo, 1):
        eta = f", ETA {(len(todo) - i + 1) * sum(spent) / len(spent) / 60:.0f} min" if spent else ""
        console.rule(f"[{i}/{len(todo)}] {r.folder}: {r.set} / {r.arm}, seed {r.seed}{eta}")
        start = time.perf_counter()
        error = _train_one(r, out / r.folder, tokenizer, console)
        spent.append(time.perf_counter() - start)
        if error:
            console.print(f"run {r.folder} failed: {error}", style="red", markup=False)


def _train_one(r: PlannedRun, run_dir: Path, tokenizer: Path, console: Console) -> str:
    """Train (or resume) one run and record its result; returns an error line, or '' on success."""
    start = time.perf_counter()
    try:
        trainer, trained = train_in_sweep(r.run, run_dir, tokenizer, console)
    except Exception as e:  # noqa: BLE001 - one bad run must not stop the suite; it is reported and retried
        return f"{type(e).__name__}: {e}"
    if trained.interrupted:
        console.print("ablation interrupted: rerun the same command to resume")
        raise KeyboardInterrupt
    s = trained.summary
    if s.get("val_loss_end") is None:
        return "no validation loss (is data.val_fraction 0?)"
    result = {"val_loss": s["val_loss_end"], "tokens": s["tokens"], "tokens_per_s": s["tokens_per_s"],
              "load_max_over_mean": s.get("expert_load_max_over_mean"), "dropped_frac": s.get("dropped_frac"),
              "recycled_frac": s.get("recycled_frac"), "active_params": r.active, "total_params": r.total,
              "kv_bytes_per_token": kv_cache_bytes_per_token(trainer.model_cfg)["as_built"],
              "seconds": time.perf_counter() - start}
    write_json(run_dir / DONE_FILE, {"run": r.run, "result": result})
    return ""


def finished(run_dir: Path, r: PlannedRun) -> bool:
    """Whether run_dir holds this run's result (an error if it holds another config's)."""
    return read_result(run_dir, r) is not None
