"""`hunyuan synth`: seeds -> generate -> evolve -> respond -> filter -> dedup -> SFT and DPO jsonl.

Layout of the output folder: one subfolder per stage (shards, dropped/, manifest.json), then
sft.jsonl ({"messages"}), dpo.jsonl ({"prompt", "chosen", "rejected"}) and summary.json.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .backends import Backend, make_backend
from .config import SynthConfig
from .prompts import CRITIQUE, EVOLVE, EVOLVE_FORMAT
from .seeds import read_seeds, shard
from .stages import Stage, StageResult, progress_bar, run_stage, signature, write_jsonl
from .steps import Steps
from .verify import reference_precision


def _stages(cfg: SynthConfig, steps: Steps) -> list[Stage]:
    """The stages; each signature covers its step's table, the backends it calls and the prompts."""
    def used(*names):
        return {n: dataclasses.asdict(cfg.backends[n]) for n in names if n}

    responders = {cfg.domain(d).responder or cfg.respond.backend for d in {*cfg.domains, "general"}}
    domains = {k: dataclasses.asdict(v) for k, v in cfg.domains.items()}
    common = {"seed": cfg.seed, "shard_size": cfg.shard_size}
    return [
        Stage("generate", {**common, "step": dataclasses.asdict(cfg.generate), "backends": used(cfg.generate.backend),
                           "templates": {d: cfg.template(d) for d in {*cfg.domains, "general", "math", "code"}}},
              steps.generate),
        Stage("evolve", {**common, "step": dataclasses.asdict(cfg.evolve), "backends": used(cfg.evolve.backend),
                         "prompts": [EVOLVE, EVOLVE_FORMAT]}, steps.evolve),
        Stage("respond", {**common, "step": dataclasses.asdict(cfg.respond), "domains": domains,
                          "backends": used(*responders)}, steps.respond),
        Stage("filter", {**common, "step": dataclasses.asdict(cfg.filter), "domains": domains,
                         "backends": used(cfg.filter.critic), "prompt": CRITIQUE}, steps.filter),
        Stage("dedup", {**common, "threshold": cfg.filter.dedup_threshold, "num_perm": cfg.filter.num_perm},
              steps.dedup, merge=True),
    ]


class _LazyBackends(dict):
    """Backends built on first use, so a rerun that skips every stage loads no model."""

    def __init__(self, cfg: SynthConfig):
        super().__init__()
        self.cfg = cfg

    def __missing__(self, name: str):
        self[name] = make_backend(name, self.cfg.backends[name])
        return self[name]


def run_pipeline(cfg: SynthConfig, console: Console | None = None,
                 backends: dict[str, Backend] | None = None) -> list[StageResult]:
    """Run (or resume) every stage, then write the SFT and DPO files and the summary.

    `backends` replaces the configured ones by name (tests pass scripted fakes)."""
    console = console or Console(stderr=True)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = read_seeds(cfg.seeds)
    shards = shard(seeds, cfg.shard_size)
    lazy = _LazyBackends(cfg)
    lazy.update(backends or {})
    steps = Steps(cfg, lazy)
    results: list[StageResult] = []
    with progress_bar() if console.is_terminal else _Quiet() as progress:
        inputs = shards
        upstream = signature(seeds)
        for stage in _stages(cfg, steps):
            result = run_stage(stage, out, inputs, upstream, progress)
            results.append(result)
            inputs = result
    final = results[-1].records()
    write_jsonl(out / "sft.jsonl", [{"messages": [{"role": "user", "content": r["instruction"]},
                                                  {"role": "assistant", "content": r["chosen"]}]} for r in final])
    write_jsonl(out / "dpo.jsonl", [{"prompt": [{"role": "user", "content": r["instruction"]}], "chosen": r["chosen"],
                                     "rejected": r["rejected"]} for r in final if "rejected" in r])
    summary = [{"stage": r.folder.name, "in": r.records_in, "kept": r.kept, "dropped": dict(r.dropped),
                "events": dict(r.events), "seconds": round(r.seconds, 2), "reused_shards": r.skipped} for r in results]
    responded = next(r for r in results if r.folder.name == "respond").records()
    verified = reference_precision(cfg, responded, final)
    (out / "summary.json").write_text(json.dumps({"seeds": len(seeds), "stages": summary, "sft": len(final),
                                                  "reference_precision": verified}, indent=1))
    console.print(summary_table(summary, len(seeds)))
    if verified:
        console.print(precision_table(verified))
    return results


def summary_table(summary: list[dict], seeds: int) -> Table:
    """Counts per stage and drop reason, with time and records/s."""
    table = Table(title=f"hunyuan synth: {seeds} seeds")
    for col in ("stage", "in", "kept", "dropped (reason: n)", "events", "s", "rec/s"):
        table.add_column(col, justify="left" if col in ("stage", "dropped (reason: n)", "events") else "right")
    for s in summary:
        rate = f"{s['in'] / s['seconds']:.1f}" if s["seconds"] > 0 else "-"
        table.add_row(s["stage"], str(s["in"]), str(s["kept"]),
                      ", ".join(f"{k}: {v}" for k, v in sorted(s["dropped"].items())) or "-",
                      ", ".join(f"{k}: {v}" for k, v in sorted(s["events"].items())) or "-",
                      f"{s['seconds']:.1f}", rate)
    return table


def precision_table(rows: list[dict]) -> Table:
    """Kept answers that match the seeds' reference answers, per selection, with 95% intervals."""
    table = Table(title="answers checked against seed references")
    for col in ("selection", "kept", "correct", "precision", "95% interval"):
        table.add_column(col, justify="left" if col == "selection" else "right")
    for r in rows:
        precision = "-" if r["precision"] is None else f"{r['precision']:.3f}"
        table.add_row(r["selection"], f"{r['kept']}/{r['of']}", str(r["correct"]), precision,
                      f"{r['ci95'][0]:.3f}-{r['ci95'][1]:.3f}")
    return table


class _Quiet:
    """No progress display (output is not a terminal)."""

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
