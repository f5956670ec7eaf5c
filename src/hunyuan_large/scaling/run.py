"""`hunyuan scaling run PLAN`: train every planned point and record its final validation loss.

The sweep folder (the plan's folder unless given) holds `shared/` (one tokenizer and one copy of
the tokenized data for all points), a folder per point (an ordinary run folder, so an
interrupted point resumes from its checkpoint) and `results.json`, rewritten after each point.
A point whose folder holds `scaling.json` (its result and run config) is finished and skipped;
a failed point is recorded and the sweep goes on (it is retried on the next run).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path

from rich.console import Console

from ..accounting import count_params, flops_per_token, paper_compute
from ..config import padded_vocab
from ..errors import UserError
from ..train import RunConfig, Trainer, TrainResult
from ..train.data_setup import prepare_tokenizer
from .files import write_json
from .plan import Plan, PlanPoint
from .results import PointResult, write_results
from .tables import print_results

DONE_FILE = "scaling.json"


class SweepError(UserError):
    """A sweep that cannot start."""


def run_sweep(plan_path: str | Path, out_dir: str | Path | None = None,
              console: Console | None = None) -> list[PointResult]:
    """Run (or finish) every point of a plan; returns one record per point, in plan order."""
    console = console or Console()
    plan = Plan.load(plan_path)
    sweep = Path(out_dir) if out_dir else Path(plan_path).parent
    tokenizer = _shared_tokenizer(plan, sweep / "shared", console)
    results: list[PointResult] = []
    for i, point in enumerate(plan.points, 1):
        run_dir = sweep / point.name
        done = _finished(point, run_dir)
        if done:
            result = done
            console.print(f"[{i}/{len(plan.points)}] {point.name}: finished earlier, skipped")
        else:
            console.rule(f"[{i}/{len(plan.points)}] {point.name}")
            try:
                result = _run_point(point, run_dir, tokenizer, console)
            except KeyboardInterrupt:
                console.print("sweep interrupted: rerun the same command to resume")
                raise
            if not result.ok:
                console.print(f"point {point.name} failed: {result.error}", style="red", markup=False)
        results.append(result)
        write_results(sweep / "results.json", results)
    print_results(results, console)
    return results


def _shared_tokenizer(plan: Plan, shared: Path, console: Console) -> Path:
    """Prepare the tokenizer every point uses; it must have the vocabulary the plan assumed."""
    cfg = RunConfig.from_dict(plan.points[0].run)
    tokenizer = prepare_tokenizer(cfg, shared, console)
    padded = padded_vocab(tokenizer.vocab_size)
    if padded != plan.vocab_size:
        raise SweepError(
            f"the sweep's tokenizer has {tokenizer.vocab_size} ids ({padded} padded) but the plan assumed "
            f"{plan.vocab_size}: the corpus ran out of merges; re-plan with tokenizer.path = "
            f"\"{shared / 'tokenizer'}\" in the base config")
    return shared / "tokenizer"


def _finished(point: PlanPoint, run_dir: Path) -> PointResult | None:
    """The recorded result of a point trained earlier to this same plan, else None."""
    done = run_dir / DONE_FILE
    if not done.exists():
        return None
    record = json.loads(done.read_text())
    if record["run"] != point.run:
        raise SweepError(f"{run_dir} holds a run of a different plan; use a new sweep folder (--out) "
                         "or delete that point's folder")
    return PointResult(**record["result"])


def _run_point(point: PlanPoint, run_dir: Path, tokenizer: Path, console: Console) -> PointResult:
    """Train one point (resuming its checkpoint); any error becomes a failed record."""
    start = time.perf_counter()
    try:
        trainer, trained = train_in_sweep(point.run, run_dir, tokenizer, console)
    except Exception as e:  # noqa: BLE001 - one bad point must not stop the sweep; the error is recorded
        return PointResult(point.name, point.budget, "failed", error=f"{type(e).__name__}: {e}")
    if trained.interrupted:
        raise KeyboardInterrupt
    loss = trained.summary.get("val_loss_end")
    if loss is None or not math.isfinite(loss):
        return PointResult(point.name, point.budget, "failed",
                           error=f"no finite validation loss ({loss}); is data.val_fraction 0?")
    model_cfg, seq_len = trainer.model.config, trainer.cfg.data.seq_len
    n_active = count_params(model_cfg).active
    tokens = trained.summary["tokens"]
    result = PointResult(point.name, point.budget, "ok", n_active, tokens,
                         flops_per_token(model_cfg, seq_len) * tokens, paper_compute(n_active, tokens),
                         loss, trainer.tokens_per_step, time.perf_counter() - start)
    write_json(run_dir / DONE_FILE, {"run": point.run, "result": dataclasses.asdict(result)})
    return result


def train_in_sweep(run: dict, run_dir: Path, tokenizer: Path, console: Console) -> tuple[Trainer, TrainResult]:
    """Train (or resume) one run of a sweep in run_dir, with the sweep's tokenizer and data cache."""
    raw = {**run, "run_dir": str(run_dir)}
    raw["tokenizer"] = {**raw.get("tokenizer", {}), "path": str(tokenizer)}
    cfg = RunConfig.from_dict(raw)
    share_data(cfg, run_dir)
    trainer = Trainer(cfg, console)
    return trainer, trainer.run()


def share_data(cfg: RunConfig, run_dir: Path) -> None:
    """Link the run's data cache to the sweep's, so the corpus is tokenized once for all points.

    The trainer caches tokenized shards in run_dir/data and rebuilds them when the sources or
    tokenizer change; points share one cache per data section (all of them, unless a plan was
    edited by hand), so none rebuilds another's.
    """
    d = cfg.data
    key = hashlib.sha256(json.dumps([d.sources, d.text_field, d.val_fraction]).encode()).hexdigest()[:12]
    shared = Path("..") / "shared" / f"data-{key}"  # relative: the sweep folder can move
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / shared).mkdir(parents=True, exist_ok=True)
    link = run_dir / "data"
    if not link.exists() and not link.is_symlink():
        link.symlink_to(shared, target_is_directory=True)
