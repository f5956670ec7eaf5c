"""`hunyuan synth CONFIG.toml`: the synthetic instruction data pipeline."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the synth subcommand to the `hunyuan` parser."""
    p = sub.add_parser("synth", help="synthetic instructions: generate, evolve, respond, filter (resumable)")
    p.add_argument("config", help="a synth config TOML (see configs/synth.toml)")
    p.add_argument("--out", help="the output folder (default: the config's out)")
    p.set_defaults(func=_synth)


def _synth(args: argparse.Namespace) -> None:
    from .config import SynthConfig
    from .pipeline import run_pipeline

    cfg = SynthConfig.from_toml(args.config)
    if args.out:
        cfg.out = args.out
    run_pipeline(cfg)
