"""A run's tokenizer and tokenized data, prepared once and cached in the run folder."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from rich.console import Console

from ..data import DataError, MixtureSampler, TokenStream, build_category, iter_documents, validation_batches
from ..data.sources import SourceStats
from ..tokenizer import TOKENIZER_FILES, HunyuanTokenizer, Tokenizer, has_tokenizer, load_tokenizer
from .config import RunConfig


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


def prepare_data(cfg: RunConfig, run_dir: Path, console: Console) -> tuple[dict, dict]:
    """Tokenize every category (cached); returns the train and validation streams."""
    tok_dir = run_dir / "tokenizer"
    tok_hash = tokenizer_hash(tok_dir)
    train, val = {}, {}
    for cat, specs in cfg.data.sources.items():
        t0 = time.perf_counter()
        meta = build_category(specs, tok_dir, tok_hash, run_dir / "data" / cat, cfg.data.text_field,
                              cfg.data.val_fraction, cfg.data.workers or None)
        folder = run_dir / "data" / cat
        train[cat] = TokenStream(folder, meta["train"], cfg.data.seq_len)
        val[cat] = TokenStream(folder, meta["val"], cfg.data.seq_len)
        s = meta["stats"]
        notes = [f"{k.replace('_', ' ')} {s[k]}" for k in ("empty_skipped", "undecodable_bytes", "bad_records") if s[k]]
        console.print(f"data {cat}: {s['documents']} documents, {s['bytes'] / 2**20:.1f} MB -> "
                      f"{train[cat].num_tokens:,} train / {val[cat].num_tokens:,} val tokens "
                      f"({time.perf_counter() - t0:.1f} s){'; ' + ', '.join(notes) if notes else ''}")
        if train[cat].num_chunks == 0:
            raise DataError(f"category {cat!r} has fewer than {cfg.data.seq_len + 1} training tokens")
    return train, val


def make_sampler(cfg: RunConfig, train: dict[str, TokenStream], world: int = 1) -> MixtureSampler:
    """The global sampler: world x batch_size rows per micro-batch (each rank takes its slice)."""
    mixture = cfg.data.mixture or {cat: 1.0 for cat in train}
    return MixtureSampler(train, mixture, cfg.data.anneal_mixture or None, cfg.train.batch_size * world,
                          cfg.train.seed)


def make_validation(cfg: RunConfig, val: dict[str, TokenStream], console: Console) -> list:
    """Fixed validation batches; warns (no val_loss) when the split holds less than one sequence."""
    usable = {k: v for k, v in val.items() if v.num_chunks}
    if cfg.data.val_fraction > 0 and len(usable) < len(val):
        short = ", ".join(k for k in val if k not in usable)
        console.print(f"[yellow]warning:[/] the validation split of {short} has fewer than "
                      f"{cfg.data.seq_len + 1} tokens: {'no val_loss' if not usable else 'left out of val_loss'}; "
                      "raise data.val_fraction or add data")
    if not usable:
        return []
    return validation_batches(usable, cfg.train.batch_size, cfg.train.eval_tokens)
