"""`hunyuan <command>`: each package registers its own subcommands from its `commands.py`."""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

from .errors import UserError

# Packages whose commands.py has `register(subparsers)`; the order is the order of `--help`.
COMMAND_MODULES = ("commands", "train.commands", "posttrain.commands", "infer.commands", "convert.commands",
                   "eval.commands", "synth.commands", "scaling.commands", "ablate.commands")

# Failures of the machine, not of the program: one line naming the cause, no traceback.
_ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
}


def build_parser() -> argparse.ArgumentParser:
    """The `hunyuan` parser with every package's subcommands."""
    parser = argparse.ArgumentParser(prog="hunyuan", description="Hunyuan-Large: train, study and serve.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hunyuan` console script."""
    # `--section.key value` overrides are free-form: take them before argparse sees them.
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    args.overrides = rest
    if rest and not getattr(args, "takes_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        code = args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno not in _ENVIRONMENT_ERRNOS:
            raise
        print(f"error: {_ENVIRONMENT_ERRNOS[e.errno]}: {e.filename or e.strerror} ({e.strerror})", file=sys.stderr)
        return 1
    return code or 0


if __name__ == "__main__":
    raise SystemExit(main())
