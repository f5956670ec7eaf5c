"""`hunyuan sft`, `hunyuan dpo`, `hunyuan rm`: post-training runs from a config TOML;
`hunyuan rm score --model DIR FILE.jsonl`: a reward model's scores of preference pairs."""

from __future__ import annotations

import argparse
import json

from ..errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the post-training subcommands to the `hunyuan` parser."""
    for name, help_text in (("sft", "supervised fine-tuning of a model folder on conversations"),
                            ("dpo", "single-stage DPO (+ NLL on chosen, EMA) on preference pairs")):
        p = sub.add_parser(name, help=help_text + " (resumes when possible)")
        p.add_argument("config", help="run config TOML (see configs/); any key can be overridden")
        p.set_defaults(func=_run, kind=name, takes_overrides=True)
    p = sub.add_parser("rm", help="train a Bradley-Terry reward model (rm CONFIG.toml), or "
                                  "rm score --model DIR FILE.jsonl")
    p.add_argument("config", help="run config TOML, or 'score'")
    p.add_argument("file", nargs="?", help="with score: a jsonl of preference pairs")
    p.add_argument("--model", help="with score: the reward-model folder")
    p.set_defaults(func=_rm, kind="rm", takes_overrides=True)


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


def _rm(args: argparse.Namespace) -> None:
    if args.config != "score":
        if args.file or args.model:
            raise UserError("hunyuan rm CONFIG.toml takes no file or --model (did you mean rm score?)")
        return _run(args)
    # argparse leaves FILE among the overrides when it follows --model DIR.
    files = [f for f in (args.file, *args.overrides) if f]
    if len(files) != 1 or files[0].startswith("--") or not args.model:
        raise UserError("usage: hunyuan rm score --model DIR FILE.jsonl")
    args.file = files[0]
    from .rm import score_pairs

    result = score_pairs(args.model, args.file)
    print(json.dumps({k: v for k, v in result.items() if k != "scores"}))
