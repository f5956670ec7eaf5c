"""Worker functions for the 2-process gloo tests (importable by spawned processes)."""

from __future__ import annotations

import copy
import os
import traceback

import torch
import torch.distributed as dist
import torch.nn.functional as F


def setup(rank: int, world: int, out: str) -> None:
    """The environment torchrun gives a rank, and its process group joined through a file in `out`
    (no TCP port to pick, so no race with other processes for a free one)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(out, 'store')}", rank=rank,
                            world_size=world)


def run_guarded(rank: int, world: int, out: str, fn, *args) -> None:
    """Run fn, write its result (or the traceback) to out/rank{rank}.pt."""
    setup(rank, world, out)
    try:
        result = fn(rank, world, *args)
    except Exception:  # reported to the test, which fails with it
        result = {"error": traceback.format_exc()}
    torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    if dist.is_initialized():
        dist.destroy_process_group()


def _batch(world: int, rank: int, b: int = 2, t: int = 10):
    ids = torch.randint(0, 256, (world * b, t + 1), generator=torch.Generator().manual_seed(11))
    return ids, ids[rank * b : (rank + 1) * b]


def expert_parallel_matches_one_process(rank: int, world: int, ep: int) -> dict:
    """FSDP2 + EP: outputs and (full) gradients equal one process on the whole global batch."""
    from torch.distributed.tensor import DTensor

    from hunyuan_large.train.config import ParallelSection
    from hunyuan_large.train.distributed import finalize_expert_grads, init_distributed, parallelize
    from tests.conftest import make_model

    ctx = init_distributed(ParallelSection(ep=ep), "cpu")
    full = make_model(seed=3, num_experts=4).train()
    ids, mine = _batch(world, rank)
    ref_losses = []
    for r in range(world):
        part = ids[r * 2 : (r + 1) * 2]
        logits = full(part[:, :-1]).logits
        ref_losses.append(F.cross_entropy(logits.flatten(0, 1), part[:, 1:].flatten()))
    (sum(ref_losses) / world).backward()

    model = copy.deepcopy(full)
    model.zero_grad(set_to_none=True)
    parallelize(model, ctx)
    logits = model(mine[:, :-1]).logits
    F.cross_entropy(logits.flatten(0, 1), mine[:, 1:].flatten()).backward()
    finalize_expert_grads(model, ctx)
    with torch.no_grad():
        want_logits = full(mine[:, :-1]).logits
    worst = 0.0
    for (name, p), (_, q) in zip(model.named_parameters(), full.named_parameters()):
        g = p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad
        worst = max(worst, float((g - q.grad).abs().max()))
    return {"logits": float((logits - want_logits).abs().max()), "grad": worst}


def routing_per_rank_equals_one_process(rank: int, world: int) -> dict:
    """FSDP + EP with recycle routing: each rank routes exactly as one process on its micro-batch."""
    from hunyuan_large.train.config import ParallelSection
    from hunyuan_large.train.distributed import init_distributed, parallelize
    from tests.conftest import make_model

    ctx = init_distributed(ParallelSection(ep=world), "cpu")
    model = make_model(seed=4, capacity_factor=0.75)
    model.config.set_routing_policy("recycle")
    model.train()
    alone = copy.deepcopy(model)
    parallelize(model, ctx)
    _, mine = _batch(world, rank, b=3)
    model.set_routing_seed(100 + rank)
    alone.set_routing_seed(100 + rank)
    out = model(mine[:, :-1], output_routing=True)
    want = alone(mine[:, :-1], output_routing=True)
    same = all(torch.equal(a.expert, b.expert) and torch.equal(a.slot, b.slot) and torch.allclose(a.weight, b.weight)
               for a, b in zip(out.routing, want.routing))
    recycled = int(sum(r.recycled.sum() for r in out.routing))
    return {"same": same, "recycled": recycled, "logits": float((out.logits - want.logits).abs().max())}


def config_mismatch(rank: int, world: int) -> dict:
    from hunyuan_large.train.config import ParallelSection
    from hunyuan_large.train.distributed import check_same_config, init_distributed

    ctx = init_distributed(ParallelSection(), "cpu")
    try:
        check_same_config(ctx, "lr = 1" if rank == 0 else "lr = 2")
    except Exception as e:  # the error each rank raises
        return {"message": str(e)}
    return {"message": ""}
