"""`hunyuan sft`, `hunyuan dpo`, `hunyuan rm`: post-training runs from a config TOML."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the post-training subcommands to the `hunyuan` parser."""
    for name, help_text in (("sft", "supervised fine-tuning of a model folder on conversations"),
                            ("dpo", "single-stage DPO (+ NLL on chosen, EMA) on preference pairs"),
                            ("rm", "train a Bradley-Terry reward model on preference pairs")):
        p = sub.add_parser(name, help=help_text + " (resumes when possible)")
        p.add_argument("config", help="run config TOML (see configs/); any key can be overridden")
        p.set_defaults(func=_run, kind=name, takes_overrides=True)


def _run(args: argparse.Namespace) -> None:
    from .config import PostConfig

    cfg = PostConfig.from_toml(args.config, args.overrides)
    if args.kind == "sft":
        from .sft import SFTTrainer as Trainer
    elif args.kind == "dpo":
        from .dpo import DPOTrainer as Trainer
    else:
        from .rm import RMTrainer as Trainer
    print(json.dumps(Trainer(cfg).run()))
