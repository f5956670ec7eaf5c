"""`hunyuan ablate SUITE [--quick]`: argument parsing for matched-run ablations."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ablate subcommand to the `hunyuan` parser."""
    p = sub.add_parser("ablate", help="sets of matched training runs that differ in one factor, and their report")
    p.add_argument("suite", help="an ablation suite TOML (configs/ablate.toml)")
    p.add_argument("--quick", action="store_true", help="the suite's [quick] variant (smaller, about 15 CPU minutes)")
    p.add_argument("--out", help="the ablation folder (default: the suite's out)")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild the report from the finished runs; train nothing")
    p.set_defaults(func=_ablate)


def _ablate(args: argparse.Namespace) -> None:
    import dataclasses
    from pathlib import Path

    from .run import run_suite
    from .suite import Suite

    suite = Suite.load(args.suite, quick=args.quick)
    if args.out:
        suite = dataclasses.replace(suite, out=Path(args.out))
    run_suite(suite, train=not args.report_only)
