"""A paged KV cache sized by GQA + CLA: a pool of fixed-size blocks holding only the K/V-owner layers.

Shapes: O owner layers (those that compute K/V; the others reuse their owner's), Hkv KV heads,
N token slots (`num_blocks + 1` blocks of `block_size`), d head dim; B rows of a forward, T new
tokens, S attended tokens.

Each owner layer stores K after RoPE, scaled to unit RMS (the part of QK-norm that every layer
reading that K shares), and V, in (O, Hkv, N, d) buffers allocated once. Every layer applies its
own key-norm weight at attention time (model/attention.py), so the reusing layers need nothing
stored: the cache costs 2 * Hkv * d * O * dtype bytes per token, the paper's Table 2 "GQA+CLA"
figure.

Block b holds token slots b*block_size .. (b+1)*block_size - 1; a sequence's block table lists
its blocks in order, so its position p lives in slot table[p // bs] * bs + p % bs. Which blocks a
sequence gets is blocks.py's business. A forward writes its new K/V into the rows' slots and reads
each row's K/V back as one (B, Hkv, S, d) gather, except where no copy is needed: a prefill with
nothing cached attends to its own new K/V, and a lone sequence whose blocks are consecutive (the
usual batch-1 case) is a view of the buffers. The extra last block is scratch: right-padding of a
batched prefill writes there, and rows shorter than S read (masked) keys from there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import ModelConfig
from ..errors import UserError


class KVCache:
    """The owner layers' K/V for `num_blocks` blocks of `block_size` tokens (+ one scratch block)."""

    def __init__(self, cfg: ModelConfig, num_blocks: int, block_size: int,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        if num_blocks < 1 or block_size < 1:
            raise UserError(f"KV cache needs num_blocks >= 1 and block_size >= 1, got {num_blocks} and {block_size}")
        owners = [i for i in range(cfg.num_hidden_layers) if cfg.owns_kv(i)]
        self.owner_index = {layer: j for j, layer in enumerate(owners)}  # layer -> buffer index
        self.num_blocks, self.block_size = num_blocks, block_size
        self.slots = (num_blocks + 1) * block_size  # N
        self.scratch = num_blocks * block_size  # first slot of the scratch block
        shape = (len(owners), cfg.num_key_value_heads, self.slots, cfg.head_dim)  # (O, Hkv, N, d)
        # Zeroed, not empty: masked keys are read, and a mask cannot undo NaN/Inf left in fresh memory.
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)

    def bytes_per_token(self) -> int:
        """Bytes per cached token, measured from the allocated buffers."""
        return self.nbytes // self.slots

    @property
    def nbytes(self) -> int:
        """Bytes of all K and V buffers."""
        return self.k.numel() * self.k.element_size() * 2

    def copy_block(self, src: int, dst: int) -> None:
        """Copy block `src`'s K/V into block `dst` (a sample forking from a shared partial block)."""
        bs = self.block_size
        self.k[:, :, dst * bs : (dst + 1) * bs] = self.k[:, :, src * bs : (src + 1) * bs]
        self.v[:, :, dst * bs : (dst + 1) * bs] = self.v[:, :, src * bs : (src + 1) * bs]

    def batch(self, tables: list[list[int]], past: list[int], new: list[int],
              share_prefix: bool = False) -> "CacheBatch":
        """The cache as seen by one forward: row b has `past[b]` cached tokens in blocks `tables[b]`
        and appends `new[b]` (which must fit its table). Rows share one past, or each adds one token.

        With `share_prefix` a decode step whose rows start with the same blocks (samples of one
        prompt, requests with one cached system prompt) returns their K/V as a `PrefixKV`: the
        common blocks once, not once per row (the attention must take it: decode_layout's does).
        """
        B, T, bs = len(tables), max(new), self.block_size
        if len(set(past)) > 1 and T != 1:
            raise ValueError("a forward over rows of different lengths must add exactly one token")
        S = max(p + n for p, n in zip(past, new))
        if any(len(t) * bs < p + n for t, p, n in zip(tables, past, new)):
            raise ValueError("a row's block table is too short for its tokens")
        dev = self.k.device
        if B == 1 and all(b == tables[0][0] + i for i, b in enumerate(tables[0])):  # one view, no gather
            first = tables[0][0] * bs
            return CacheBatch(self, past[0], None, None, None, slice(first, first + S), S)
        width = -(-S // bs)  # W: blocks read per row; missing ones read the scratch block
        table = torch.tensor([t[:width] + [self.num_blocks] * (width - len(t[:width])) for t in tables])  # (B, W)
        heads = torch.arange(self.k.shape[1])[None, :, None]  # (1, Hkv, 1)
        p0 = past[0] if len(set(past)) == 1 else None
        # Each new token's slot; right-padding (positions past a row's new tokens) writes to scratch.
        write = torch.tensor([[t[p // bs] * bs + p % bs if p < start + n else self.scratch
                               for p in range(start, start + T)] for t, start, n in zip(tables, past, new)])  # (B, T)
        # Reads gather whole blocks (rows of bs*d values), each head's from its own (NB+1) blocks.
        blocks_of = heads * (self.num_blocks + 1)  # (1, Hkv, 1): each head's first block in (Hkv*(NB+1))
        shared: slice | torch.Tensor | None = None
        common = _common_blocks(tables, min(past) // bs) if share_prefix and T == 1 and B > 1 else 0
        if common * bs >= MIN_SHARED_TOKENS:
            first = tables[0][0]
            if tables[0][:common] == list(range(first, first + common)):
                shared = slice(first * bs, (first + common) * bs)
            else:
                shared = (blocks_of + table[:1, None, :common]).flatten().to(dev)  # (Hkv*C,)
            table = table[:, common:]
        else:
            common = 0
        read = None if p0 == 0 else (blocks_of + table[:, None, :]).flatten().to(dev)
        positions = None if p0 is not None else torch.tensor(past, device=dev)
        return CacheBatch(self, p0, positions, (write[:, None, :] + heads * self.slots).to(dev), read, None, S,
                          shared, common * bs)


MIN_SHARED_TOKENS = 64  # a shorter common prefix is gathered per row: saving its copies costs more ops


def _common_blocks(tables: list[list[int]], limit: int) -> int:
    """How many leading blocks (at most `limit`) all block tables have in common."""
    n = 0
    while n < limit and all(t[n] == tables[0][n] for t in tables):
        n += 1
    return n


@dataclass
class PrefixKV:
    """K or V (B, Hkv, S, d) of rows that share their first P positions, stored once."""

    shared: torch.Tensor  # (1, Hkv, P, d)
    own: torch.Tensor  # (B, Hkv, S - P, d)

    def materialize(self) -> torch.Tensor:
        """The plain (B, Hkv, S, d) tensor (for attention kernels that need one)."""
        B = self.own.shape[0]
        return torch.cat([self.shared.expand(B, -1, -1, -1), self.own], dim=2)


@dataclass
class CacheBatch:
    """The `KVStore` one forward writes to, and the model inputs that go with it.

    `start` is the rows' common cached length, or None when rows differ (then `positions` (B,)
    holds each row's write position, and T = 1). Writes go to `write` (B, Hkv, T) slots of the
    (Hkv*N) flattened buffers and reads gather the (B*Hkv*W) blocks `read` of the (Hkv*(NB+1))
    blocks, or both use the slot range `view` of a lone sequence; with `read` None and `view` None
    the forward attends to its new K/V. Positions a row has not written (the rest of its last
    block, other rows' longer past) hold finite stale values that causality or the mask hides.
    """

    cache: KVCache
    start: int | None
    positions: torch.Tensor | None  # (B,) per-row write positions when rows differ
    write: torch.Tensor | None  # (B, Hkv, T) flat slot indices
    read: torch.Tensor | None  # (B*Hkv*W,) flat block indices
    view: slice | None  # slots of a lone sequence whose blocks are consecutive
    kv_len: int  # S: attended length, max over rows of (cached + new)
    shared: slice | torch.Tensor | None = None  # the rows' common blocks: slot range, or (Hkv*C,) block indices
    shared_len: int = 0  # P: positions in the common blocks

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor):
        """Write an owner layer's new k, v (B, Hkv, T, d); return its K, V (B, Hkv, S, d), or as PrefixKV."""
        j = self.cache.owner_index[layer_idx]
        K, V = self.cache.k[j], self.cache.v[j]  # (Hkv, N, d)
        if self.view is not None:
            T = k.shape[2]
            rows = slice(self.view.stop - T, self.view.stop)
            K[:, rows], V[:, rows] = k[0], v[0]
            return K[None, :, self.view], V[None, :, self.view]
        B, Hkv, _, d = k.shape
        K.view(-1, d)[self.write], V.view(-1, d)[self.write] = k, v  # (Hkv*N, d) token rows
        if self.read is None:
            return k, v
        own = self.kv_len - self.shared_len
        K_own, V_own = (_gather(buf, self.read, B, own, self.cache.block_size) for buf in (K, V))
        if self.shared is None:
            return K_own, V_own
        P = self.shared_len
        if isinstance(self.shared, slice):
            K_shared, V_shared = K[None, :, self.shared], V[None, :, self.shared]
        else:
            K_shared, V_shared = (_gather(buf, self.shared, 1, P, self.cache.block_size) for buf in (K, V))
        return PrefixKV(K_shared, K_own), PrefixKV(V_shared, V_own)

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


def _gather(buf: torch.Tensor, blocks: torch.Tensor, B: int, length: int, block_size: int) -> torch.Tensor:
    """Blocks (B*Hkv*W,) of one layer's (Hkv, N, d) buffer as (B, Hkv, length, d)."""
    Hkv, N, d = buf.shape
    rows = buf.view(Hkv * N // block_size, block_size * d).index_select(0, blocks)  # (B*Hkv*W, bs*d)
    return rows.view(B, Hkv, -1, d)[:, :, :length]
