"""A KV cache sized by GQA + CLA: preallocated sequence slots holding only the K/V-owner layers.

Shapes: O owner layers (those that compute K/V; the others reuse their owner's), N slots
(`max_batch`), Hkv KV heads, L `max_len`, d head dim; B rows of a forward, T new tokens, S
attended tokens.

Each owner layer stores K after RoPE, scaled to unit RMS (the part of QK-norm that every layer
reading that K shares), and V, in (N, Hkv, L, d) buffers allocated once. Every layer applies its
own key-norm weight at attention time (model/attention.py), so the reusing layers need nothing
stored: the cache costs 2 * Hkv * d * O * dtype bytes per token, the paper's Table 2 "GQA+CLA"
figure.

A forward runs on a contiguous range of slots, so the K/V it attends to are views of the buffers,
never copies; the engine keeps its running sequences packed in slots 0..n-1 (`move` fills the
hole a finished sequence leaves, once, with that one sequence's K/V).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import ModelConfig
from ..errors import UserError


class CacheFullError(UserError):
    """A sequence would grow past the cache's `max_len`."""


class KVCache:
    """Per-slot K/V buffers of the owner layers, with each slot's cached length."""

    def __init__(self, cfg: ModelConfig, max_batch: int, max_len: int,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        if max_batch < 1 or max_len < 1:
            raise UserError(f"KV cache needs max_batch >= 1 and max_len >= 1, got {max_batch} and {max_len}")
        owners = [i for i in range(cfg.num_hidden_layers) if cfg.owns_kv(i)]
        self.owner_index = {layer: j for j, layer in enumerate(owners)}  # layer -> buffer index
        self.max_batch, self.max_len = max_batch, max_len
        shape = (len(owners), max_batch, cfg.num_key_value_heads, max_len, cfg.head_dim)  # (O, N, Hkv, L, d)
        # Zeroed, not empty: a decode step over rows of different lengths reads (and masks) the
        # positions past a shorter row's end, and masking cannot undo NaN/Inf left in fresh memory.
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.lengths = [0] * max_batch  # tokens cached per slot

    def bytes_per_token(self) -> int:
        """Bytes per cached token, measured from the allocated buffers."""
        total = self.k.numel() * self.k.element_size() + self.v.numel() * self.v.element_size()
        return total // (self.max_batch * self.max_len)

    @property
    def nbytes(self) -> int:
        """Bytes of all K and V buffers."""
        return self.k.numel() * self.k.element_size() * 2

    def batch(self, start: int, lengths: list[int], new_tokens: int) -> "CacheBatch":
        """The cache as seen by one forward over slots start..start+B-1 appending `new_tokens` each.

        `lengths` are the slots' cached lengths; with T > 1 they must be equal (a prefill).
        """
        B, T = len(lengths), new_tokens
        if start < 0 or start + B > self.max_batch:
            raise ValueError(f"slots {start}..{start + B - 1} outside 0..{self.max_batch - 1}")
        kv_len = max(lengths) + T
        if kv_len > self.max_len:
            raise CacheFullError(f"sequence of {kv_len} tokens exceeds the KV cache's max_len {self.max_len}")
        if len(set(lengths)) == 1:
            return CacheBatch(self, slice(start, start + B), lengths[0], None, kv_len)
        if T != 1:
            raise ValueError("a forward over slots of different lengths must add exactly one token")
        return CacheBatch(self, slice(start, start + B), None, torch.tensor(lengths, device=self.k.device), kv_len)

    def advance(self, start: int, added: list[int]) -> None:
        """Record that slots start.. now hold `added[i]` more tokens."""
        for i, n in enumerate(added):
            self.lengths[start + i] += n

    def move(self, src: int, dst: int) -> None:
        """Copy slot `src`'s cached tokens into slot `dst` (which takes over its length)."""
        n = self.lengths[src]
        self.k[:, dst, :, :n] = self.k[:, src, :, :n]
        self.v[:, dst, :, :n] = self.v[:, src, :, :n]
        self.lengths[dst] = n
        self.lengths[src] = 0

    def clear(self, slot: int) -> None:
        """Forget a slot's tokens (its memory is reused by the next sequence)."""
        self.lengths[slot] = 0


@dataclass
class CacheBatch:
    """The `KVStore` one forward writes to: a contiguous slot range and where each row appends.

    `start` is the common write position of all rows, or None when rows differ (then `positions`
    (B,) holds each row's, and T = 1). Also yields the model inputs that go with it.
    """

    cache: KVCache
    rows: slice
    start: int | None
    positions: torch.Tensor | None  # (B,) per-row write positions when rows differ
    kv_len: int  # S: attended length, max over rows of (cached + new)

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write an owner layer's new k, v (B, Hkv, T, d); return its K, V (B, Hkv, S, d) views."""
        j = self.cache.owner_index[layer_idx]
        K, V = self.cache.k[j, self.rows], self.cache.v[j, self.rows]  # (B, Hkv, L, d) views
        if self.start is not None:
            T = k.shape[2]
            K[:, :, self.start : self.start + T] = k
            V[:, :, self.start : self.start + T] = v
        else:
            rows = torch.arange(k.shape[0], device=k.device)
            K[rows, :, self.positions] = k[:, :, 0]  # (B, Hkv, d), each row at its own position
            V[rows, :, self.positions] = v[:, :, 0]
        return K[:, :, : self.kv_len], V[:, :, : self.kv_len]

    @property
    def past_length(self) -> int:
        """S - T: the common past the model counts positions and the causal mask from."""
        return self.start if self.start is not None else self.kv_len - 1

    def position_ids(self) -> torch.Tensor | None:
        """(B, 1) per-row positions when rows differ; None lets the model count from past_length."""
        return None if self.start is not None else self.positions[:, None]

    def attention_mask(self) -> torch.Tensor | None:
        """(B, S) keys each row may see when rows differ (its own cached tokens + the new one)."""
        if self.start is not None:
            return None
        keys = torch.arange(self.kv_len, device=self.positions.device)
        return (keys[None, :] <= self.positions[:, None]).long()
