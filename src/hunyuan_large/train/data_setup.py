"""A run's tokenizer and tokenized data, prepared once and cached in the run folder."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from rich.console import Console

from ..data import (
    DataError, LongDocuments, MixtureSampler, TokenStream, build_category, iter_documents, validation_batches,
)
from ..data.sources import SourceStats
from ..tokenizer import TOKENIZER_FILES, HunyuanTokenizer, Tokenizer, has_tokenizer, load_tokenizer
from .config import LONG, RunConfig
from .stages import Phase, plan_phases


def prepare_tokenizer(cfg: RunConfig, run_dir: Path, console: Console) -> Tokenizer:
    """The run's tokenizer: `tokenizer.path`, else one trained on the data (kept in run_dir)."""
    folder = run_dir / "tokenizer"
    if cfg.tokenizer.path:
        tok = load_tokenizer(cfg.tokenizer.path)
        tok.save(folder)
        return tok
    if has_tokenizer(folder):
        return load_tokenizer(folder)
    budget = int(cfg.tokenizer.train_max_mb * 2**20)
    texts, used = [], 0
    specs = [s for sources in cfg.data.sources.values() for s in sources]
    for doc in iter_documents(specs, cfg.data.text_field, SourceStats()):
        texts.append(doc.text)
        used += len(doc.text)
        if used >= budget:
            break
    t0 = time.perf_counter()
    tok = HunyuanTokenizer.train(texts, cfg.tokenizer.vocab_size)
    tok.save(folder)
    console.print(f"trained a {tok.vocab_size}-id BPE tokenizer on {used / 2**20:.1f} MB "
                  f"in {time.perf_counter() - t0:.1f} s -> {folder}")
    return tok


def tokenizer_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for name in TOKENIZER_FILES:
        if (folder / name).is_file():
            h.update((folder / name).read_bytes())
    return h.hexdigest()[:16]


def prepare_data(cfg: RunConfig, run_dir: Path, console: Console) -> dict[str, tuple[Path, dict]]:
    """Tokenize every category (cached); returns each category's folder and shard metadata."""
    tok_dir = run_dir / "tokenizer"
    tok_hash = tokenizer_hash(tok_dir)
    prepared = {}
    for cat, specs in cfg.data.sources.items():
        t0 = time.perf_counter()
        folder = run_dir / "data" / cat
        meta = build_category(specs, tok_dir, tok_hash, folder, cfg.data.text_field,
                              cfg.data.val_fraction, cfg.data.workers or None)
        prepared[cat] = (folder, meta)
        s = meta["stats"]
        tokens = [sum(x["tokens"] for x in meta[split]) for split in ("train", "val")]
        notes = [f"{k.replace('_', ' ')} {s[k]}" for k in ("empty_skipped", "undecodable_bytes", "bad_records") if s[k]]
        console.print(f"data {cat}: {s['documents']} documents, {s['bytes'] / 2**20:.1f} MB -> "
                      f"{tokens[0]:,} train / {tokens[1]:,} val tokens "
                      f"({time.perf_counter() - t0:.1f} s){'; ' + ', '.join(notes) if notes else ''}")
    return prepared


def make_streams(prepared: dict[str, tuple[Path, dict]], seq_len: int, split: str) -> dict[str, TokenStream]:
    """Each category's `split` stream at `seq_len`; an error names a category without one sequence."""
    streams = {cat: TokenStream(folder, meta[split], seq_len) for cat, (folder, meta) in prepared.items()}
    if split == "train":
        for cat, stream in streams.items():
            if stream.num_chunks == 0:
                raise DataError(f"category {cat!r} has fewer than {seq_len + 1} training tokens")
    return streams


def phase_streams(prepared: dict[str, tuple[Path, dict]], phase: Phase, split: str,
                  console: Console | None = None) -> dict[str, TokenStream | LongDocuments]:
    """A phase's streams: every category, plus "long" documents when its mixture names them."""
    streams: dict = make_streams(prepared, phase.seq_len, split)
    if phase.uses_long:
        sources = [streams[c] for c in (phase.long_from or streams)]
        long = LongDocuments(sources, phase.long_min_tokens, phase.seq_len)
        if console is not None:
            console.print(f"long documents (>= {phase.long_min_tokens} tokens): {long.documents} in {split}, "
                          f"{long.num_chunks} sequences of {phase.seq_len}")
        if split == "train" and long.num_chunks == 0:
            raise DataError(f"stage {phase.index} mixes in {LONG!r} documents, but no training document has "
                            f">= {phase.long_min_tokens} tokens (lower long_min_tokens or add long data)")
        streams[LONG] = long
    return streams


def make_sampler(cfg: RunConfig, train: dict, world: int = 1, phase: Phase | None = None) -> MixtureSampler:
    """The global sampler: world x batch_size rows per micro-batch (each rank takes its slice)."""
    phase = phase or plan_phases(cfg, world)[0]
    mixture = phase.mixture or {cat: 1.0 for cat in train if cat != LONG}
    return MixtureSampler(train, mixture, phase.anneal_mixture or None, phase.batch_size * world,
                          cfg.train.seed + phase.index)


def make_validation(cfg: RunConfig, val: dict, console: Console, batch_size: int | None = None) -> list:
    """Fixed validation batches; warns (no val_loss) when the split holds less than one sequence."""
    usable = {k: v for k, v in val.items() if v.num_chunks}
    seq_len = next(iter(val.values())).seq_len
    if cfg.data.val_fraction > 0 and len(usable) < len(val):
        short = ", ".join(k for k in val if k not in usable)
        console.print(f"[yellow]warning:[/] the validation split of {short} has fewer than "
                      f"{seq_len + 1} tokens: {'no val_loss' if not usable else 'left out of val_loss'}; "
                      "raise data.val_fraction or add data")
    if not usable:
        return []
    return validation_batches(usable, batch_size or cfg.train.batch_size, cfg.train.eval_tokens)
