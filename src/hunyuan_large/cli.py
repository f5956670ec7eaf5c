"""`hunyuan <command>`: thin wrappers, each calling one library function."""

from __future__ import annotations

import argparse
import json
import sys

from .errors import UserError
from .infer.commands import register as register_inference_commands
from .scaling.commands import register as register_scaling_commands


def _model_config(args: argparse.Namespace):
    from .config import ModelConfig

    if args.model:
        return ModelConfig.load(args.model)
    return ModelConfig.from_preset(args.preset)


def cmd_info(args: argparse.Namespace) -> None:
    from .accounting import summary
    from .report import print_info

    cfg = _model_config(args)
    info = summary(cfg, seq_len=args.seq_len)
    if args.json:
        print(json.dumps(info))
    else:
        print_info(args.model or args.preset, cfg, info)


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(args.config, args.overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from .train import RunConfig, Trainer

    cfg = RunConfig.from_toml(args.config, args.overrides)
    result = Trainer(cfg).run()
    return 130 if result.interrupted else 0


def cmd_export(args: argparse.Namespace) -> None:
    from .train.export import export_run

    path = export_run(args.run, args.out, checkpoint=args.checkpoint, dtype=args.dtype)
    print(f"exported {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hunyuan", description="Hunyuan-Large: train, study and serve.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="parameters, FLOPs per token and KV-cache size of a model")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", default="tiny", help="tiny, small, hunyuan-large, hunyuan-large-pretrain")
    src.add_argument("--model", help="a model folder (config.json) instead of a preset")
    p.add_argument("--seq-len", type=int, default=4096, help="sequence length for attention FLOPs")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="the embedded default job (what `make demo` runs)")
    p.add_argument("--config", help="a run config TOML (default: the embedded demo)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="pre-train a model from a run config (resumes when possible)")
    p.add_argument("config", help="run config TOML (see configs/); any key can be overridden")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="a run's checkpoint -> an HF model folder with its tokenizer")
    p.add_argument("run", help="the run folder")
    p.add_argument("out", help="the model folder to write")
    p.add_argument("--checkpoint", help="a checkpoint folder name (default: the newest)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None, help="weights dtype")
    p.set_defaults(func=cmd_export)

    register_inference_commands(sub)  # generate, chat, serve
    register_scaling_commands(sub)  # scaling plan, run, fit
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hunyuan` console script."""
    # `--section.key value` overrides are free-form: take them before argparse sees them.
    argv = sys.argv[1:] if argv is None else argv
    args, rest = build_parser().parse_known_args(argv)
    args.overrides = rest
    if rest and args.command not in ("train", "demo"):
        build_parser().error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        code = args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code or 0


if __name__ == "__main__":
    raise SystemExit(main())
