"""Expert parallelism: each rank of an EP group holds E/ep experts; tokens travel to them.

Routing is decided before this point, on each rank over its own micro-batch, exactly as one
process would; expert parallelism only moves rows. Shapes: R local rows sorted by global
expert, E experts, El = E/ep local experts, S rows received from the group.

Exchange (all_to_all_single, the single-tensor form gloo supports):
1. counts first: (ep, El) rows this rank sends to each peer for each of that peer's experts;
2. the rows themselves, peer-major;
3. a local reorder to expert-major (each local expert's rows contiguous for the grouped GEMM);
4. the expert outputs travel back the same way, reversed. The autograd versions of the
   collectives carry gradients back along the same routes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol


@dataclass
class ExpertParallel:
    """Where this rank sits in its expert-parallel group."""

    group: dist.ProcessGroup
    rank: int
    size: int


def exchange_counts(counts: torch.Tensor, ep: ExpertParallel) -> torch.Tensor:
    """counts (E,) rows per global expert -> (ep, El) rows each peer sends to my experts."""
    send = counts.view(ep.size, -1).contiguous()
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=ep.group)
    return recv


def expert_major_order(recv_counts: torch.Tensor) -> torch.Tensor:
    """Permutation taking peer-major received rows to expert-major order (stable per peer)."""
    peers, local = recv_counts.shape
    segment = torch.repeat_interleave(torch.arange(peers * local, device=recv_counts.device),
                                      recv_counts.reshape(-1))  # peer * El + expert of each row
    return torch.argsort((segment % local) * peers + segment // local, stable=True)


def dispatch_to_experts(x: torch.Tensor, counts: torch.Tensor, experts_forward, ep: ExpertParallel) -> torch.Tensor:
    """Run rows x (R, D) (sorted by global expert, `counts` (E,) each) on their owners' experts.

    `experts_forward(rows, local_counts)` computes this rank's El experts on expert-major rows.
    Returns (R, D) outputs in x's order.
    """
    recv_counts = exchange_counts(counts, ep)  # (ep, El)
    send_splits = counts.view(ep.size, -1).sum(1).tolist()
    recv_splits = recv_counts.sum(1).tolist()
    received = funcol.all_to_all_single_autograd(x, recv_splits, send_splits, ep.group)
    order = expert_major_order(recv_counts)
    y = experts_forward(received[order], recv_counts.sum(0).tolist())
    y = torch.empty_like(y).index_copy(0, order, y)  # back to peer-major
    return funcol.all_to_all_single_autograd(y, send_splits, recv_splits, ep.group)
