"""Packed training sequences from token shards, mixed by category, deterministic and resumable.

A category's token stream (documents separated by end-of-document ids) is cut into chunks of
seq_len + 1 tokens (inputs and shifted targets; consecutive chunks share one token). Each epoch
visits the chunks in a seeded random order. Each row of a batch draws its category from the
mixture weights with a generator seeded by (seed, step), so the draw needs no saved state; the
per-category cursors (epoch, position) are the sampler's whole state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .sources import DataError


class TokenStream:
    """The chunks of one category split, memory-mapped from its shard files."""

    def __init__(self, folder: Path, shards: list[dict], seq_len: int):
        self.seq_len = seq_len
        kept = [s for s in shards if s["tokens"] > seq_len]
        self.arrays = [np.memmap(folder / s["file"], dtype=np.uint32, mode="r") for s in kept]
        self.index_files = [folder / s["file"].replace(".bin", ".idx.npy") for s in kept]
        counts = [(len(a) - 1) // seq_len for a in self.arrays]
        self.offsets = np.cumsum([0, *counts])  # first chunk index of each shard

    @property
    def num_chunks(self) -> int:
        return int(self.offsets[-1])

    @property
    def num_tokens(self) -> int:
        return sum(len(a) for a in self.arrays)

    def document_starts(self, shard: int) -> np.ndarray:
        """Token offsets of the documents of shard `shard` (as written by the shard writer)."""
        return np.load(self.index_files[shard]).astype(np.int64)

    def chunk(self, i: int) -> np.ndarray:
        """Chunk i: seq_len + 1 tokens."""
        s = int(np.searchsorted(self.offsets, i, side="right")) - 1
        start = (i - int(self.offsets[s])) * self.seq_len
        return self.arrays[s][start : start + self.seq_len + 1]


@dataclass
class Cursor:
    epoch: int = 0
    position: int = 0


class MixtureSampler:
    """Batches (B, seq_len + 1) drawn by category weights; the weights switch at the anneal."""

    def __init__(self, streams: dict[str, TokenStream], mixture: dict[str, float],
                 anneal_mixture: dict[str, float] | None, batch_size: int, seed: int):
        for name, weights in (("mixture", mixture), ("anneal_mixture", anneal_mixture or {})):
            unknown = set(weights) - set(streams)
            if unknown:
                raise DataError(f"{name} names unknown categories: {', '.join(sorted(unknown))} "
                                f"(have: {', '.join(streams)})")
        for cat, stream in streams.items():
            if stream.num_chunks == 0 and (mixture.get(cat) or (anneal_mixture or {}).get(cat)):
                raise DataError(f"category {cat!r} has fewer tokens than one sequence")
        self.streams = streams
        self.names = list(streams)
        self.weights = {"main": self._normalise(mixture), "anneal": self._normalise(anneal_mixture or mixture)}
        self.batch_size, self.seed = batch_size, seed
        self.step = 0
        self.cursors = {name: Cursor() for name in self.names}
        self._orders: dict[tuple[str, int], np.ndarray] = {}

    def _normalise(self, weights: dict[str, float]) -> np.ndarray:
        w = np.array([float(weights.get(n, 0.0)) for n in self.names])
        if (w < 0).any() or w.sum() <= 0:
            raise DataError(f"mixture weights must be >= 0 and not all 0, got {weights}")
        return w / w.sum()

    def _order(self, name: str, epoch: int) -> np.ndarray:
        key = (name, epoch)
        if key not in self._orders:
            self._orders = {k: v for k, v in self._orders.items() if k[0] != name}
            rng = np.random.default_rng([self.seed, self.names.index(name), epoch])
            self._orders[key] = rng.permutation(self.streams[name].num_chunks)
        return self._orders[key]

    def _next_chunk(self, name: str) -> np.ndarray:
        cur = self.cursors[name]
        order = self._order(name, cur.epoch)
        chunk = self.streams[name].chunk(int(order[cur.position]))
        cur.position += 1
        if cur.position == len(order):
            cur.epoch, cur.position = cur.epoch + 1, 0
        return chunk

    def categories_for_step(self, step: int, anneal: bool) -> list[str]:
        """The category of each row at `step` (a pure function of seed and step)."""
        rng = np.random.default_rng([self.seed, 1_000_003, step])
        picks = rng.choice(len(self.names), size=self.batch_size, p=self.weights["anneal" if anneal else "main"])
        return [self.names[i] for i in picks]

    def next_batch(self, anneal: bool = False) -> torch.Tensor:
        """The next (B, seq_len + 1) int64 batch; `anneal` selects the annealing mixture."""
        rows = [self._next_chunk(c) for c in self.categories_for_step(self.step, anneal)]
        self.step += 1
        return torch.from_numpy(np.stack(rows).astype(np.int64))

    def state_dict(self) -> dict:
        return {"step": self.step, "cursors": {n: [c.epoch, c.position] for n, c in self.cursors.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]
        self.cursors = {n: Cursor(*state["cursors"][n]) for n in self.names}


def validation_batches(streams: dict[str, TokenStream], batch_size: int, max_tokens: int) -> list[torch.Tensor]:
    """A fixed validation set: the first chunks of each category's val stream, round-robin."""
    per_cat = [[s.chunk(i) for i in range(s.num_chunks)] for s in streams.values() if s.num_chunks]
    rows, i = [], 0
    seq_len = next(iter(streams.values())).seq_len
    while per_cat and len(rows) * seq_len < max_tokens and any(i < len(c) for c in per_cat):
        rows += [c[i] for c in per_cat if i < len(c)]
        i += 1
    rows = rows[: max(1, max_tokens // seq_len)]
    return [torch.from_numpy(np.stack(rows[j : j + batch_size]).astype(np.int64))
            for j in range(0, len(rows), batch_size)]
