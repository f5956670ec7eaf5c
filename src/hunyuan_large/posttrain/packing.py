"""Best-fit-decreasing packing of examples into rows with per-document positions and segments.

A row holds whole examples; each restarts its position ids at 0 and gets its own segment id, so
with the model's block-diagonal causal mask (`segment_ids`) a packed row computes exactly what
the examples would alone.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import torch


@dataclass
class Example:
    """One training document, already shifted: inputs[t] predicts targets[t] (-100: no loss)."""

    inputs: list[int]
    targets: list[int]


@dataclass
class Rows:
    """Packed rows, each (N, L): inputs, targets (-100 = no loss), position ids, segment ids."""

    input_ids: torch.Tensor
    targets: torch.Tensor
    position_ids: torch.Tensor
    segment_ids: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, index: torch.Tensor | list[int], device: torch.device | str = "cpu") -> "Rows":
        return Rows(*(t[index].to(device) for t in (self.input_ids, self.targets, self.position_ids, self.segment_ids)))

    def to(self, device: torch.device | str) -> "Rows":
        return Rows(*(t.to(device) for t in (self.input_ids, self.targets, self.position_ids, self.segment_ids)))


def best_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Bins of item indices, longest item first, each into the fullest bin that still fits it."""
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (space left, bin), sorted
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        at = bisect.bisect_left(free, (lengths[i], -1))
        if at == len(free):
            bins.append([i])
            space, b = capacity - lengths[i], len(bins) - 1
        else:
            space, b = free.pop(at)
            bins[b].append(i)
            space -= lengths[i]
        bisect.insort(free, (space, b))
    return bins


def pack(examples: list[Example], seq_len: int, pad_id: int) -> Rows:
    """Examples (each at most seq_len long) packed into rows of seq_len; padding gets segment -1."""
    bins = best_fit_decreasing([len(e.inputs) for e in examples], seq_len)
    shape = (len(bins), seq_len)
    rows = Rows(torch.full(shape, pad_id), torch.full(shape, -100), torch.zeros(shape, dtype=torch.long),
                torch.full(shape, -1))
    for r, members in enumerate(bins):
        at = 0
        for s, i in enumerate(members):
            e, n = examples[i], len(examples[i].inputs)
            rows.input_ids[r, at:at + n] = torch.tensor(e.inputs)
            rows.targets[r, at:at + n] = torch.tensor(e.targets)
            rows.position_ids[r, at:at + n] = torch.arange(n)
            rows.segment_ids[r, at:at + n] = s
            at += n
    return rows


def pad_rows(examples: list[Example], pad_id: int) -> Rows:
    """One example per row, right-padded to the longest (padding: segment -1, no loss)."""
    width = max(len(e.inputs) for e in examples)
    shape = (len(examples), width)
    rows = Rows(torch.full(shape, pad_id), torch.full(shape, -100), torch.zeros(shape, dtype=torch.long),
                torch.full(shape, -1))
    for r, e in enumerate(examples):
        n = len(e.inputs)
        rows.input_ids[r, :n] = torch.tensor(e.inputs)
        rows.targets[r, :n] = torch.tensor(e.targets)
        rows.position_ids[r, :n] = torch.arange(n)
        rows.segment_ids[r, :n] = 0
    return rows
