"""The "long" category: documents of at least `min_tokens` tokens, cut at their own start.

A packed stream cuts at fixed offsets, so a document of about one sequence usually lands in two
unrelated halves. Here every long document starts a sequence: a document of L tokens gives
ceil((L - 1) / seq_len) consecutive pieces, only as many cuts as the length forces; the last
piece is filled with the tokens that follow it, as packing does. The interface is TokenStream's,
so the mixture sampler draws from it like any category.
"""

from __future__ import annotations

import numpy as np

from .sampler import TokenStream


class LongDocuments:
    """Sequences (seq_len + 1 tokens) that start at a long document's start or continue it."""

    def __init__(self, streams: list[TokenStream], min_tokens: int, seq_len: int):
        self.seq_len = seq_len
        self.arrays: list[np.ndarray] = []
        self.documents = 0
        starts: list[np.ndarray] = []  # per array: the offsets of its pieces
        for stream in streams:
            for shard, array in enumerate(stream.arrays):
                docs = stream.document_starts(shard)
                ends = np.append(docs[1:], len(array))
                pieces = [np.arange(s, e - 1, seq_len) for s, e in zip(docs, ends) if e - s >= min_tokens]
                self.documents += len(pieces)
                flat = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
                self.arrays.append(array)
                starts.append(flat[flat + seq_len + 1 <= len(array)])  # the shard's last piece must fit
        self.starts = starts
        self.offsets = np.cumsum([0, *(len(s) for s in starts)])

    @property
    def num_chunks(self) -> int:
        return int(self.offsets[-1])

    @property
    def num_tokens(self) -> int:
        return self.num_chunks * self.seq_len

    def chunk(self, i: int) -> np.ndarray:
        """Piece i: seq_len + 1 tokens."""
        a = int(np.searchsorted(self.offsets, i, side="right")) - 1
        start = int(self.starts[a][i - int(self.offsets[a])])
        return self.arrays[a][start : start + self.seq_len + 1]
