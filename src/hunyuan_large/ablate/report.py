"""The ablation report, built from the run folders: a table and a validation-curve plot per set.

Final validation loss is given as mean ± sample std over seeds with the min–max range. An arm's
difference from the reference is called real only when the two arms' seed ranges do not overlap;
otherwise it is "within seed spread" (with one seed there is no spread, and it says so). Arms of one
seed share initial weights and data order, so the per-seed differences are listed too.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from ..errors import UserError
from ..report import human
from ..scaling.files import write_json
from ..tomlio import format_value
from ..train.metrics import MetricsLog, save_line_plot
from ..train.stats import load_max_over_mean
from .suite import AblationSet, PlannedRun, Suite

DONE_FILE = "ablate.json"
AVERAGED = ("tokens_per_s", "router_load_max_over_mean", "load_max_over_mean", "dropped_frac", "recycled_frac")


def read_result(run_dir: Path, r: PlannedRun) -> dict | None:
    """The recorded result of a finished run, else None; an error if the folder ran another config."""
    done = run_dir / DONE_FILE
    if not done.exists():
        return None
    record = json.loads(done.read_text())
    if record["run"] != r.run:
        raise UserError(f"{run_dir} holds a run of a different config (the suite file changed since): "
                        "use another `out` folder or delete that run's folder")
    routed = [x["router_load"] for x in MetricsLog(run_dir / "metrics.jsonl").read() if x.get("router_load")]
    return {**record["result"], "router_load_max_over_mean": load_max_over_mean(routed) if routed else None}


@dataclass
class ArmSummary:
    """One arm of a set over its finished seeds."""

    name: str
    factor: str
    runs: list[PlannedRun]
    results: dict[int, dict]  # seed -> result, finished runs only

    @property
    def losses(self) -> list[float]:
        return [x["val_loss"] for x in self.results.values()]

    def mean(self, key: str = "val_loss") -> float | None:
        vals = [x[key] for x in self.results.values() if x.get(key) is not None]
        return sum(vals) / len(vals) if vals else None

    def loss_cell(self) -> str:
        n, ls = len(self.losses), self.losses
        if n == 0:
            return "not run"
        if n == 1:
            return f"{ls[0]:.4f} (1 seed)"
        return f"{self.mean():.4f} ± {statistics.stdev(ls):.4f} (n={n})"

    def range_cell(self) -> str:
        return f"{min(self.losses):.4f}–{max(self.losses):.4f}" if len(self.losses) > 1 else "–"


def verdict(arm: ArmSummary, ref: ArmSummary) -> str:
    """How the arm's final loss compares with the reference's, given the seed spread."""
    if arm is ref:
        return "reference"
    if not arm.losses or not ref.losses:
        return "–"
    delta = arm.mean() - ref.mean()
    seeds = sorted(set(arm.results) & set(ref.results))
    paired = "/".join(f"{arm.results[k]['val_loss'] - ref.results[k]['val_loss']:+.3f}" for k in seeds)
    text = f"{delta:+.4f}" + (f" (per seed {paired})" if len(seeds) > 1 else "")
    if len(arm.losses) < 2 or len(ref.losses) < 2:
        return f"{text}: 1 seed, no spread"
    overlap = min(arm.losses) <= max(ref.losses) and min(ref.losses) <= max(arm.losses)
    if overlap:
        return f"{text}: within seed spread"
    return f"{text} ({'worse' if delta > 0 else 'better'}: outside seed spread)"


def summarize_set(s: AblationSet, planned: list[PlannedRun], out: Path) -> list[ArmSummary]:
    """The arms of a set with the results of their finished runs."""
    arms = []
    for arm in s.arms:
        runs = [r for r in planned if r.set == s.name and r.arm == arm.name]
        results = {r.seed: res for r in runs if (res := read_result(out / r.folder, r)) is not None}
        factor = ", ".join(f"{k} = {format_value(v)}" for k, v in arm.factor.items()) or "the base recipe"
        if s.match_active and arm is not s.arms[0]:
            factor += f"; intermediate_size = {runs[0].run['model']['intermediate_size']} (matched)"
        arms.append(ArmSummary(arm.name, factor, runs, results))
    return arms


def set_table(s: AblationSet, arms: list[ArmSummary]) -> str:
    """The markdown table of one set."""
    head = ["arm", "factor", "activated / total params", "final val loss", "seed range", "vs reference",
            "router load max/mean", "expert load max/mean", "dropped", "recycled", "tokens/s", "KV bytes/token"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ref = arms[0]
    for a in arms:
        r = a.runs[0]
        kv = next(iter(a.results.values()))["kv_bytes_per_token"] if a.results else None
        cells = [a.name, a.factor, f"{human(r.active)} / {human(r.total)}", a.loss_cell(), a.range_cell(),
                 verdict(a, ref), _cell(a.mean("router_load_max_over_mean"), "{:.2f}"),
                 _cell(a.mean("load_max_over_mean"), "{:.2f}"), _cell(a.mean("dropped_frac"), "{:.2%}"),
                 _cell(a.mean("recycled_frac"), "{:.2%}"), _cell(a.mean("tokens_per_s"), "{:,.0f}"),
                 _cell(kv, "{:,}")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: float | None, spec: str) -> str:
    return "–" if value is None else spec.format(value)


def plot_set(s: AblationSet, arms: list[ArmSummary], out: Path) -> Path | None:
    """<set>.png: validation loss vs tokens, the mean over seeds with the min–max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = False
    for a in arms:
        curves = []
        for r in (r for r in a.runs if r.seed in a.results):
            val = [x for x in MetricsLog(out / r.folder / "metrics.jsonl").read()
                   if x.get("val_loss") is not None]
            curves.append(([x["tokens"] for x in val], [x["val_loss"] for x in val]))
        if not curves:
            continue
        n = min(len(c[0]) for c in curves)  # seeds of one arm log at the same steps
        tokens, losses = np.array(curves[0][0][:n]), np.array([c[1][:n] for c in curves])
        line, = ax.plot(tokens, losses.mean(0), "o-", ms=3, label=f"{a.name} ({len(curves)} seed(s))")
        if len(curves) > 1:
            ax.fill_between(tokens, losses.min(0), losses.max(0), color=line.get_color(), alpha=0.2)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_ylim(top=min(ax.get_ylim()[1], _zoom_top(arms)))
    return save_line_plot(fig, ax, "tokens", "validation cross-entropy (nats)",
                          f"{s.name}: validation loss (mean over seeds, band = min–max)", out / f"{s.name}.png")


def _zoom_top(arms: list[ArmSummary]) -> float:
    """A y limit that leaves out the first evaluation (the untrained model) so the ends are readable."""
    ends = [x for a in arms for x in a.losses]
    return max(ends) + 4 * (max(ends) - min(ends) + 0.05) if ends else float("inf")


def write_report(suite: Suite, planned: list[PlannedRun], console: Console) -> Path:
    """report.md, one PNG per set and results.json in the ablation folder."""
    out = suite.out
    parts = [f"# Ablation report: {out}\n",
             "Final validation loss is mean ± sample std over seeds (n), with the min–max range. "
             "A difference from the reference (the first arm) is called real only when the seed ranges "
             "do not overlap; otherwise it is within the seed spread. The per-seed differences (arms of one seed "
             "share initial weights and data order) follow the mean difference. Tokens/s is the median of the "
             "run's log intervals; router load is the busiest expert's share of the router's choices × E "
             "(1.0 = balanced), expert load the same after capacity (what the experts computed), both mean "
             "over layers, last 10% of training; dropped and recycled are shares of all token choices over "
             "the run; KV bytes per token in bf16.\n"]
    results = {}
    for s in suite.sets:
        arms = summarize_set(s, planned, out)
        plot = plot_set(s, arms, out)
        parts.append(f"## {s.name}\n")
        if s.claim:
            parts.append(f"Claim: {s.claim}\n")
        parts.append(set_table(s, arms) + "\n")
        if plot:
            parts.append(f"![{s.name}]({plot.name})\n")
        results[s.name] = {a.name: {"factor": a.factor, "val_losses": a.losses,
                                    **{k: a.mean(k) for k in AVERAGED},
                                    "active_params": a.runs[0].active, "total_params": a.runs[0].total}
                           for a in arms}
        missing = sum(len(a.runs) - len(a.results) for a in arms)
        console.print(f"{s.name}: " + "; ".join(f"{a.name} {a.loss_cell()}" for a in arms)
                      + (f" ({missing} runs not finished)" if missing else ""), markup=False)
    write_json(out / "results.json", results)
    path = out / "report.md"
    path.write_text("\n".join(parts))
    console.print(f"wrote {path}")
    return path
