"""`hunyuan scaling plan|run|fit`: argument parsing for the scaling-law toolkit."""

from __future__ import annotations

import argparse
import dataclasses

from ..errors import UserError
from .compute import COMPUTE_MODES, PAPER_BUDGET
from .grid import GridSpec
from .shape import ShapeRule


def register(sub: argparse._SubParsersAction) -> None:
    """Add `scaling` with its plan, run and fit subcommands to the `hunyuan` parser."""
    scaling = sub.add_parser("scaling", help="isoFLOP sweeps: plan, run and fit them (the paper's method)")
    steps = scaling.add_subparsers(dest="scaling_command", required=True, metavar="STEP")

    p = steps.add_parser("plan", help="the isoFLOP grid: runs per budget, each a complete run config")
    p.add_argument("--budgets", type=float, nargs="+", required=True, metavar="FLOPS",
                   help="compute budgets, e.g. 1e13 3e13 1e14")
    p.add_argument("--base", help="base run config TOML (data, tokenizer, batch, optimizer; default: the demo)")
    p.add_argument("--out", default="runs/scaling/plan.json", help="plan file to write (JSON)")
    _dataclass_args(p, GridSpec, "grid (where the runs go on each curve)", choices={"compute": COMPUTE_MODES})
    _dataclass_args(p, ShapeRule, "shape rule (how the model grows with size)")
    p.set_defaults(func=_plan)

    p = steps.add_parser("run", help="train every point of a plan (finished points are skipped)")
    p.add_argument("plan", help="a plan file from `hunyuan scaling plan`")
    p.add_argument("--out", help="the sweep folder (default: the plan's folder)")
    p.set_defaults(func=_run)

    p = steps.add_parser("fit", help="quadratic minima per budget, power laws, bootstrap intervals, plots")
    p.add_argument("results", nargs="?", help="results.json of a sweep (or your own, same form)")
    p.add_argument("--paper", action="store_true", help="evaluate the paper's own law instead (no results)")
    p.add_argument("--target", type=float, default=PAPER_BUDGET, help="C_min to extrapolate to (default %(default)g)")
    p.add_argument("--b-crit", type=float, help="critical batch in tokens (default: Kaplan's B_crit(L); inf: none)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (0: none)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--out", help="folder for fit.json and the plots (default: the results' folder)")
    p.set_defaults(func=_fit)


def _dataclass_args(p: argparse.ArgumentParser, kind: type, title: str, choices: dict | None = None) -> None:
    """One --option per field of a config dataclass, its default taken from the dataclass."""
    group = p.add_argument_group(title)
    for f in dataclasses.fields(kind):
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=type(f.default), default=f.default,
                           choices=(choices or {}).get(f.name), help=f"{f.metadata['help']} (default %(default)s)")


def _pick(args: argparse.Namespace, kind: type):
    return kind(**{f.name: getattr(args, f.name) for f in dataclasses.fields(kind)})


def _plan(args: argparse.Namespace) -> None:
    from rich.console import Console

    from ..train import RunConfig
    from .plan import make_plan
    from .tables import print_plan

    console = Console()
    plan = make_plan(args.budgets, RunConfig.from_toml(args.base), _pick(args, ShapeRule), _pick(args, GridSpec))
    print_plan(plan, console)
    console.print(f"wrote {plan.save(args.out)}; run it with: hunyuan scaling run {args.out}", markup=False)


def _run(args: argparse.Namespace) -> int:
    from .run import run_sweep

    results = run_sweep(args.plan, args.out)
    return 0 if all(r.ok for r in results) else 1


def _fit(args: argparse.Namespace) -> None:
    from rich.console import Console

    if args.paper:
        from .tables import print_paper

        print_paper(args.target, Console())
        return
    if not args.results:
        raise UserError("scaling fit needs a RESULTS file (or --paper for the paper's own law)")
    from .analyze import fit_results

    fit_results(args.results, args.out, args.target, args.b_crit, args.bootstrap, args.seed)
