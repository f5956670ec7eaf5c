"""KV-cache blocks: allocation with reference counts, and the automatic prefix cache.

A block holds `block_size` consecutive tokens of K/V (kv_cache.py); a sequence owns a list of
them, its block table. A block that fills up is registered in the prefix cache under the key
(id of the block before it, its tokens): the predecessor's id stands for every token before the
block, so the key names all tokens up to the block's end, and a dict lookup hashes the key and then
compares the tokens themselves: a hash collision can never return another prefix's K/V. Ids are
fresh for each registration, so a block reused for other tokens never matches its old children.

A request that starts with a cached prefix takes those blocks (their count goes up) instead of
computing them. A block nobody references stays cached, evictable least-recently-used: new
blocks come from the never-used blocks first, then from the LRU end of the cached ones.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Sequence

ROOT = -1  # the "block before" the first block of every sequence


class BlockManager:
    """Free, referenced and cached-unreferenced blocks, and the prefix cache's index."""

    def __init__(self, num_blocks: int, block_size: int, prefix_caching: bool = True):
        self.num_blocks, self.block_size, self.prefix_caching = num_blocks, block_size, prefix_caching
        # Lowest id first: a lone sequence gets consecutive blocks, which the cache reads as one view.
        self.free = list(range(num_blocks))
        self.refs = [0] * num_blocks
        self.cached: dict[tuple[int, tuple[int, ...]], int] = {}  # key -> block
        self.key_of: dict[int, tuple[int, tuple[int, ...]]] = {}  # cached block -> key
        self.uid: dict[int, int] = {}  # cached block -> the id its successors' keys name
        self.evictable: OrderedDict[int, None] = OrderedDict()  # cached, unreferenced; oldest first
        self._uids = itertools.count()
        self.queried_tokens = 0  # prompt tokens looked up at admission
        self.hit_tokens = 0  # of those, found cached

    def available(self) -> int:
        """Blocks that `allocate` can hand out (never used + cached but unreferenced)."""
        return len(self.free) + len(self.evictable)

    def used(self) -> int:
        """Blocks referenced by at least one sequence."""
        return self.num_blocks - self.available()

    def hit_rate(self) -> float:
        """Share of looked-up prompt tokens whose K/V came from the prefix cache."""
        return self.hit_tokens / self.queried_tokens if self.queried_tokens else 0.0

    def allocate(self) -> int | None:
        """A block for new tokens (reference count 1), or None when every block is referenced."""
        if self.free:
            block = heapq.heappop(self.free)
        elif self.evictable:
            block, _ = self.evictable.popitem(last=False)
            del self.cached[self.key_of.pop(block)]
            del self.uid[block]
        else:
            return None
        self.refs[block] = 1
        return block

    def lookup(self, tokens: Sequence[int]) -> list[int]:
        """The cached blocks holding the longest run of full blocks that starts `tokens` (no side effects)."""
        if not self.prefix_caching:
            return []
        blocks, parent, bs = [], ROOT, self.block_size
        for start in range(0, len(tokens) - bs + 1, bs):
            block = self.cached.get((parent, tuple(tokens[start : start + bs])))
            if block is None:
                break
            blocks.append(block)
            parent = self.uid[block]
        return blocks

    def acquire(self, blocks: Sequence[int]) -> None:
        """Reference blocks another sequence already holds or the cache keeps (shared prefixes)."""
        for block in blocks:
            if self.refs[block] == 0:
                del self.evictable[block]
            self.refs[block] += 1

    def release(self, blocks: Sequence[int]) -> None:
        """Drop one reference to each block; unreferenced cached blocks become evictable, last block first."""
        for block in reversed(blocks):  # a sequence's tail is evicted before the prefix others may share
            self.refs[block] -= 1
            if self.refs[block] == 0:
                if block in self.key_of:
                    self.evictable[block] = None
                else:
                    heapq.heappush(self.free, block)

    def register(self, block: int, parent: int, tokens: Sequence[int]) -> int:
        """Cache a full block whose predecessor has id `parent` (ROOT for the first); returns the id
        its successor's key uses (an identical block cached earlier keeps its place and id)."""
        if not self.prefix_caching:
            return ROOT
        key = (parent, tuple(tokens))
        existing = self.cached.get(key)
        if existing is not None:
            return self.uid[existing]
        self.cached[key], self.key_of[block] = block, key
        self.uid[block] = next(self._uids)
        return self.uid[block]
