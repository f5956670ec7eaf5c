"""MinHash near-duplicate detection with banded LSH, in numpy.

Shapes: P permutations = bands x rows, S shingles of a text.

A text's signature is, for each of P random hashes h(x) = ((a x + b) mod 2^64 mod p) mod 2^32
(datasketch's family) of its word shingles' 32-bit hashes x, the minimum; two texts agree in a
slot with probability close to their Jaccard similarity. Banded LSH makes candidates of texts that agree on a whole band; a candidate is a
duplicate if its estimated Jaccard (the share of equal slots) reaches the threshold.
"""

from __future__ import annotations

import zlib

import numpy as np

from .parsing import normalize

_PRIME = (1 << 61) - 1


class MinHashIndex:
    """Texts seen so far; `add` says whether a new one is a near-duplicate of any of them."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, shingle: int = 3, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, _PRIME, num_perm, dtype=np.uint64)
        self.b = rng.integers(0, _PRIME, num_perm, dtype=np.uint64)
        self.threshold, self.shingle = threshold, shingle
        self.bands = _bands(num_perm, threshold)
        self.rows = num_perm // self.bands
        self.buckets: list[dict[bytes, list[int]]] = [{} for _ in range(self.bands)]
        self.signatures: list[np.ndarray] = []

    def signature(self, text: str) -> np.ndarray:
        """The [P] MinHash signature of the text's word shingles."""
        words = normalize(text).split()
        grams = {" ".join(words[i:i + self.shingle]) for i in range(max(1, len(words) - self.shingle + 1))}
        x = np.array([zlib.crc32(g.encode()) for g in grams], dtype=np.uint64)  # [S] 32-bit hashes
        with np.errstate(over="ignore"):  # uint64 arithmetic wraps mod 2^64, as intended
            h = (self.a[None, :] * x[:, None] + self.b[None, :]) % np.uint64(_PRIME) & np.uint64(0xFFFFFFFF)  # [S, P]
        return h.min(axis=0)

    def add(self, text: str) -> float | None:
        """Index the text unless it duplicates an indexed one; returns that match's similarity, else None."""
        sig = self.signature(text)
        keys = [sig[i * self.rows:(i + 1) * self.rows].tobytes() for i in range(self.bands)]
        for band, key in enumerate(keys):
            for j in self.buckets[band].get(key, ()):
                similarity = float(np.mean(self.signatures[j] == sig))
                if similarity >= self.threshold:
                    return similarity
        n = len(self.signatures)
        self.signatures.append(sig)
        for band, key in enumerate(keys):
            self.buckets[band].setdefault(key, []).append(n)
        return None


def _bands(num_perm: int, threshold: float) -> int:
    """Bands b (rows r = P / b) whose LSH threshold (1/b)^(1/r) lies closest below `threshold`."""
    best = 1
    for b in range(1, num_perm + 1):
        if num_perm % b == 0 and (1 / b) ** (b / num_perm) <= threshold:
            best = b
            break
    return best
