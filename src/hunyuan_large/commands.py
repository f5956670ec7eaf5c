"""`hunyuan info`: parameters, FLOPs per token and KV-cache size of a preset or model folder."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the info subcommand to the `hunyuan` parser."""
    p = sub.add_parser("info", help="parameters, FLOPs per token and KV-cache size of a model")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", default="tiny", help="tiny, small, hunyuan-large, hunyuan-large-pretrain")
    src.add_argument("--model", help="a model folder (config.json) instead of a preset")
    p.add_argument("--seq-len", type=int, default=4096, help="sequence length for attention FLOPs")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_info)


def _info(args: argparse.Namespace) -> None:
    from .accounting import summary
    from .config import ModelConfig
    from .report import print_info

    cfg = ModelConfig.load(args.model) if args.model else ModelConfig.from_preset(args.preset)
    info = summary(cfg, seq_len=args.seq_len)
    if args.json:
        print(json.dumps(info))
    else:
        print_info(args.model or args.preset, cfg, info)
