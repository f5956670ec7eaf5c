"""`hunyuan train`, `hunyuan export` and `hunyuan demo`: argument parsing for training runs."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the train, export and demo subcommands to the `hunyuan` parser."""
    p = sub.add_parser("demo", help="the embedded default job (what `make demo` runs)")
    p.add_argument("--config", help="a run config TOML (default: the embedded demo)")
    p.set_defaults(func=_demo, takes_overrides=True)

    p = sub.add_parser("train", help="pre-train a model from a run config (resumes when possible)")
    p.add_argument("config", help="run config TOML (see configs/); any key can be overridden")
    p.set_defaults(func=_train, takes_overrides=True)

    p = sub.add_parser("export", help="a run's checkpoint -> an HF model folder with its tokenizer")
    p.add_argument("run", help="the run folder")
    p.add_argument("out", help="the model folder to write")
    p.add_argument("--checkpoint", help="a checkpoint folder name (default: the newest)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None, help="weights dtype")
    p.set_defaults(func=_export)


def _demo(args: argparse.Namespace) -> None:
    from ..demo import run_demo

    run_demo(args.config, args.overrides)


def _train(args: argparse.Namespace) -> int:
    from .config import RunConfig
    from .trainer import Trainer

    result = Trainer(RunConfig.from_toml(args.config, args.overrides)).run()
    return 130 if result.interrupted else 0


def _export(args: argparse.Namespace) -> None:
    from .export import export_run

    path = export_run(args.run, args.out, checkpoint=args.checkpoint, dtype=args.dtype)
    print(f"exported {path}")
