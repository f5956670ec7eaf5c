"""Scale-out on PyTorch's own stack: process group from torchrun, FSDP2, expert parallelism.

Layout for W ranks and expert-parallel degree ep (dividing W and E):
- a 2D mesh (edp = W/ep, ep): the ranks of one `ep` row hold different experts (E/ep each) and
  exchange tokens; ranks of one `edp` column hold the same experts;
- non-expert parameters are sharded with FSDP2 (`fully_shard`) over all W ranks;
- expert parameters are DTensors sharded on dim 0 over `ep` (so checkpoints know their global
  shape), and FSDP2 shards them further over `edp` (the FSDP + TP composition). FSDP averages
  their gradients over `edp`; each expert's gradient also sums the ep ranks' micro-batch losses,
  so dividing by ep gives the mean over all W ranks, as for every other parameter.
Each rank routes its own micro-batch (capacity, drop, recycle) before dispatch, as one process
would for that micro-batch; expert parallelism only moves tokens.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import warnings
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Shard

from ..errors import UserError
from ..model.expert_parallel import ExpertParallel
from ..model.moe import MoE, RoutedExperts
from ..runtime import resolve_device
from .config import ParallelSection


class DistributedError(UserError):
    """A launch or configuration mismatch across ranks."""


@dataclass
class DistContext:
    """This process's place in the job (world 1 = a plain single-process run)."""

    device: torch.device
    rank: int = 0
    world: int = 1
    ep_size: int = 1
    dp_mesh: DeviceMesh | None = None  # 1D over all ranks, for FSDP
    ep_mesh: DeviceMesh | None = None  # 2D (edp, ep)

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce(self, value: float, op=dist.ReduceOp.SUM) -> float:
        """A float summed (or reduced by `op`) over all ranks."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=op)
        return float(t.item())


def init_distributed(parallel: ParallelSection, device: str) -> DistContext:
    """Join the torchrun job (WORLD_SIZE > 1) or return a single-process context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistContext(device=resolve_device(device))
    if world % parallel.ep:
        raise DistributedError(f"parallel.ep={parallel.ep} does not divide the world size {world}")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timedelta(seconds=parallel.timeout_s))
    ctx = DistContext(device=dev, rank=dist.get_rank(), world=world, ep_size=parallel.ep)
    ctx.dp_mesh = init_device_mesh(dev.type, (world,), mesh_dim_names=("dp",))
    ctx.ep_mesh = init_device_mesh(dev.type, (world // parallel.ep, parallel.ep), mesh_dim_names=("edp", "ep"))
    return ctx


def check_same_config(ctx: DistContext, text: str) -> None:
    """Every rank must run the same resolved config; rank 0 names the first one that differs."""
    if not ctx.distributed:
        return
    digest = hashlib.sha256(text.encode()).hexdigest()
    digests: list[str] = [""] * ctx.world
    dist.all_gather_object(digests, digest)
    bad = [r for r, d in enumerate(digests) if d != digests[0]]
    if bad:
        raise DistributedError(f"rank {bad[0]}'s resolved config differs from rank 0's; "
                               "launch every rank with the same config file and overrides")


def expert_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for m in model.modules() if isinstance(m, RoutedExperts) for p in m.parameters(recurse=False)]


def shard_experts(model: nn.Module, ctx: DistContext) -> None:
    """Keep this rank's E/ep experts of every MoE layer, as DTensors sharded over `ep`."""
    ep_mesh = ctx.ep_mesh["ep"]
    ep_rank = ep_mesh.get_local_rank()
    info = ExpertParallel(ep_mesh.get_group(), ep_rank, ctx.ep_size)
    for m in model.modules():
        if not isinstance(m, MoE):
            continue
        if m.num_experts % ctx.ep_size:
            raise DistributedError(f"parallel.ep={ctx.ep_size} does not divide num_experts={m.num_experts}")
        m.ep = info
        local = m.num_experts // ctx.ep_size
        for name in ("gate_up_proj", "down_proj"):
            full = getattr(m.experts, name)
            mine = full.detach()[ep_rank * local : (ep_rank + 1) * local].clone()
            setattr(m.experts, name, nn.Parameter(DTensor.from_local(mine, ep_mesh, [Shard(0)], run_check=False)))


def parallelize(model: nn.Module, ctx: DistContext) -> None:
    """Expert parallelism (ep > 1), then FSDP2: experts over edp, layers and root over all ranks."""
    if not ctx.distributed:
        return
    # Decoder layers hand their K/V views to the next layer; nothing writes into them in place.
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    if ctx.ep_size > 1:
        shard_experts(model, ctx)
        for m in model.modules():
            if isinstance(m, RoutedExperts):
                fully_shard(m, mesh=ctx.ep_mesh["edp"])
    for layer in model.model.layers:
        fully_shard(layer, mesh=ctx.dp_mesh)
    fully_shard(model, mesh=ctx.dp_mesh)


def finalize_expert_grads(model: nn.Module, ctx: DistContext) -> None:
    """Expert-parallel gradients: from a sum over the ep ranks' losses to the mean over all ranks."""
    if not ctx.distributed or ctx.ep_size == 1:
        return
    for p in expert_parameters(model):
        if p.grad is not None:
            p.grad.to_local().div_(ctx.ep_size)


def clip_grad_norm(model: nn.Module, max_norm: float, ctx: DistContext) -> torch.Tensor:
    """Global gradient norm (every rank holds disjoint shards), then clip to max_norm (0: no clipping)."""
    grads = [p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad
             for p in model.parameters() if p.grad is not None]
    sq = torch.zeros((), dtype=torch.float32, device=ctx.device)
    for g in grads:
        sq = sq + g.detach().float().pow(2).sum()
    if ctx.distributed:
        dist.all_reduce(sq)
    norm = sq.sqrt()
    if max_norm > 0:
        torch._foreach_mul_(grads, torch.clamp(max_norm / (norm + 1e-6), max=1.0))
    return norm


class JobStopped(UserError):
    """Another rank died or the launcher stopped the job."""


@contextlib.contextmanager
def fail_clearly(ctx: DistContext, last_checkpoint):
    """Under torchrun, turn a dead peer (a failed collective or the launcher's SIGTERM) into one line.

    `last_checkpoint()` names the newest complete checkpoint, which stays loadable.
    """
    if not ctx.distributed:
        yield
        return

    def stop(reason: str) -> JobStopped:
        return JobStopped(f"another rank failed or the job was stopped ({reason}); "
                          f"the last complete checkpoint is {last_checkpoint() or 'none'}")

    def on_term(signum, frame):
        raise stop(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except dist.DistError as e:
        raise stop(f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    except RuntimeError as e:  # gloo reports a vanished peer as a plain RuntimeError
        if "gloo" not in str(e).lower() and "connection" not in str(e).lower():
            raise
        raise stop(str(e).splitlines()[0][:200]) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
