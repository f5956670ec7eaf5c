"""Terminal tables for plans, sweep results and fits."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..accounting import paper_compute
from ..report import human
from .compute import PAPER_D_OPT, PAPER_N_OPT
from .fit import ScalingFit
from .plan import Plan
from .results import PointResult


def _table(title: str, *columns: str) -> Table:
    t = Table(title=title)
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    return t


def print_plan(plan: Plan, console: Console) -> None:
    t = _table(f"isoFLOP plan: {len(plan.budgets)} budgets, {len(plan.points)} runs "
               f"(compute: {plan.grid.compute}, vocab {plan.vocab_size})",
               "budget C", "N active", "hidden x layers", "experts x width", "tokens D", "steps", "D/N",
               "C / budget")
    for p in plan.points:
        m = p.run["model"]
        t.add_row(f"{p.budget:.3g}", human(p.n_active), f"{m['hidden_size']} x {m['num_hidden_layers']}",
                  f"{m['num_experts']} x {m['intermediate_size']}", human(p.tokens), str(p.steps),
                  f"{p.tokens / p.n_active:.1f}", f"{p.flops / p.budget:.3f}")
    console.print(t)
    for budget in plan.budgets:
        sizes = sum(p.budget == budget for p in plan.points)
        if sizes < plan.grid.points:
            console.print(f"budget {budget:.3g}: {plan.grid.points} targets snapped to {sizes} distinct models "
                          "(the shape rule's sizes are coarse here: lower head_dim or raise spread)")


def print_results(results: list[PointResult], console: Console) -> None:
    t = _table("sweep results", "budget C", "N active", "tokens D", "FLOPs (exact)", "val loss", "time")
    for r in results:
        if r.ok:
            t.add_row(f"{r.budget:.3g}", human(r.n_active), human(r.tokens), f"{r.flops:.3g}", f"{r.loss:.4f}",
                      f"{r.seconds:.0f} s")
        else:
            t.add_row(f"{r.budget:.3g}", f"{r.name} failed: {r.error}", *[""] * 4)
    console.print(t)


def print_fit(fit: ScalingFit, console: Console) -> None:
    t = _table("isoFLOP curves: quadratic minima", "budget C", "C_min", "points", "N_opt", "D_opt", "loss at N_opt")
    for c in fit.curves:
        t.add_row(f"{c.budget:.3g}", f"{c.c_min:.3g}", str(len(c.points)), human(c.n_opt), human(c.d_opt),
                  f"{c.loss_opt:.4f}")
    console.print(t)
    pct = f"{fit.confidence:.0%}"
    t = _table(f"power laws in C_min ({pct} bootstrap intervals, {fit.resamples} resamples"
               f"{f', {fit.discarded} discarded: a curve without minimum' if fit.discarded else ''})",
               "quantity", "estimate", f"{pct} interval", "paper")
    paper = {"n_coef": PAPER_N_OPT.coef, "n_exponent": PAPER_N_OPT.exponent, "d_coef": PAPER_D_OPT.coef,
             "d_exponent": PAPER_D_OPT.exponent, "n_at_target": PAPER_N_OPT(fit.target),
             "d_at_target": PAPER_D_OPT(fit.target)}
    labels = {"n_coef": "N_c", "n_exponent": "alpha (N_opt)", "d_coef": "D_c", "d_exponent": "beta (D_opt)",
              "n_at_target": f"N_opt at C_min {fit.target:.3g}", "d_at_target": f"D_opt at C_min {fit.target:.3g}"}
    for key, value in fit.estimates().items():
        interval = fit.intervals.get(key)
        t.add_row(labels[key], _num(key, value), "" if interval is None else
                  f"{_num(key, interval[0])} .. {_num(key, interval[1])}", _num(key, paper[key]))
    console.print(t)


def _num(key: str, value: float) -> str:
    return f"{value:.4f}" if key.endswith("exponent") else (human(value) if key.endswith("target") else f"{value:.3g}")


def print_paper(target: float, console: Console) -> None:
    """The paper's own law at a C_min (SPEC §5.4)."""
    n, d = PAPER_N_OPT(target), PAPER_D_OPT(target)
    console.print(f"paper law at C_min = {target:.3g} FLOPs:\n"
                  f"  N_opt = {PAPER_N_OPT.coef:g} * C_min^{PAPER_N_OPT.exponent:g} = {human(n)} activated "
                  f"parameters ({n:.4g})\n"
                  f"  D_opt = {PAPER_D_OPT.coef:g} * C_min^{PAPER_D_OPT.exponent:g} = {human(d)} tokens ({d:.4g})\n"
                  f"  C = 9.59 N D + 2.3e8 D = {paper_compute(n, d):.3g} FLOPs", highlight=False)
