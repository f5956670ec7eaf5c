"""Tokenizing throughput per process: `encode_document` over the Python standard library's sources.

Rows: the release's vocabulary (our `encode_document`, tiktoken's bare `encode_ordinary` as the
same-run baseline for our NFC + wrapper overhead, and `encode_batch` on all cores) and a byte-level
BPE vocabulary of 8k ids trained here on ~11 MB of the same sources (training time reported).
Training files come first in sorted order; throughput is measured on the remaining (held-out) files.

Usage: python benchmarks/tokenizer.py [--vocab ../shared/reference/hunyuan-release/hy.tiktoken]
                                      [--train-mb 11] [--vocab-size 8192] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sysconfig
import time
from pathlib import Path

from common import machine, print_json, print_table, time_interleaved
from hunyuan_large.tokenizer import HunyuanTokenizer

RELEASE_VOCAB = Path(__file__).resolve().parents[2] / "shared" / "reference" / "hunyuan-release" / "hy.tiktoken"


def stdlib_sources() -> list[Path]:
    """The standard library's .py files (installed packages excluded), in a fixed order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts and p.is_file())


def split_corpus(files: list[Path], train_bytes: float) -> tuple[list[Path], list[str]]:
    """The first files up to `train_bytes` (for training) and the texts of the rest (for timing)."""
    train, size = [], 0
    while size < train_bytes and len(train) < len(files):
        train.append(files[len(train)])
        size += train[-1].stat().st_size
    held_out = [p.read_text(encoding="utf-8", errors="replace") for p in files[len(train):]]
    return train, held_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=Path, default=RELEASE_VOCAB)
    parser.add_argument("--train-mb", type=float, default=11.0)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    train_files, texts = split_corpus(stdlib_sources(), args.train_mb * 1e6)
    n_bytes = sum(len(t.encode()) for t in texts)
    train_mb = sum(p.stat().st_size for p in train_files) / 1e6
    t0 = time.perf_counter()
    trained = HunyuanTokenizer.train(train_files, args.vocab_size)
    train_s = time.perf_counter() - t0
    print(machine())
    print(f"trained {trained.vocab_size} ids on {train_mb:.1f} MB ({len(train_files)} files) in {train_s:.1f} s")
    print(f"timing on {n_bytes / 1e6:.1f} MB of held-out stdlib sources ({len(texts)} files)")

    threads = os.cpu_count() or 1
    trained_name = f"trained-{args.vocab_size // 1024}k encode_document"
    fns = {trained_name: lambda: [trained.encode_document(t) for t in texts]}
    if args.vocab.exists():
        release = HunyuanTokenizer.from_file(args.vocab)
        fns["release encode_document"] = lambda: [release.encode_document(t) for t in texts]
        # Baseline: tiktoken alone, no NFC and no Python wrapper.
        bare = release._enc
        fns["release tiktoken encode_ordinary (baseline)"] = lambda: [bare.encode_ordinary(t) for t in texts]
        fns[f"release encode_batch ({threads} threads)"] = lambda: release.encode_batch(texts, num_threads=threads)
    else:
        print(f"{args.vocab} is absent: release rows skipped")
    seconds = time_interleaved(fns, repeats=args.repeats)

    rows, mb_per_s = [], {}
    for name, fn in fns.items():
        n_tokens = sum(map(len, fn()))
        mb_per_s[name] = round(n_bytes / seconds[name] / 1e6, 2)
        tokens_per_s = n_tokens / seconds[name] / 1e6
        rows.append([name, f"{mb_per_s[name]:.2f}", f"{tokens_per_s:.2f} M", f"{n_bytes / n_tokens:.2f}"])
    print_table("Tokenizing throughput (one process)", ["vocab / method", "MB/s", "tokens/s", "bytes/token"], rows)
    print_json({"mb_per_s": mb_per_s, "train_s": round(train_s, 2)})


if __name__ == "__main__":
    main()
