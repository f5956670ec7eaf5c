"""Run checkpoints through PyTorch Distributed Checkpoint: sharded, reshardable, atomic, exact.

A checkpoint folder `ckpt-0000123/` holds `dcp/` (model and optimizer state, each rank writing
its own shards; parameters are saved under their global shapes, so any world size or
expert-parallel layout can load them), `config.json` (the model), `state.json` (step, tokens,
data-sampler position, skipped-step streak) and `rng-<rank>.pt` (every random stream of that
rank). It is written as `ckpt-0000123.tmp/` and renamed by rank 0 once every rank has finished,
so an interrupted save never leaves a torn checkpoint behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict, get_optimizer_state_dict, set_model_state_dict, set_optimizer_state_dict,
)

from ..errors import UserError
from ..model import HunyuanForCausalLM
from .distributed import DistContext

PREFIX = "ckpt-"
LOCK_FILE = "train.lock"


class RunFolderBusy(UserError):
    """Another trainer holds the run folder."""


def lock_run_dir(run_dir: Path):
    """Create the run folder if needed and hold its lock (released when the returned file closes).

    An flock, not a PID file: the kernel drops it when its holder dies, even by kill -9, so a crash
    never leaves the folder locked.
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        f = open(run_dir / LOCK_FILE, "a+")
    except OSError as e:
        raise UserError(f"cannot write in the run folder {run_dir}: {e.strerror}") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise RunFolderBusy(f"run folder {run_dir} is in use by another trainer (PID {holder}); "
                            "stop it or choose another run_dir") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    found = [p for p in run_dir.glob(f"{PREFIX}*") if p.is_dir() and not p.name.endswith(".tmp")]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def rng_state(routing: torch.Generator | None) -> dict:
    """Every random stream a step depends on, for this rank."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if routing is not None:
        state["routing"] = routing.get_state()
    return state


def set_rng_state(state: dict, routing: torch.Generator | None) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if routing is not None and "routing" in state:
        routing.set_state(state["routing"])


@contextlib.contextmanager
def _quiet_single_process(ctx: DistContext):
    """DCP warns on every single-process save/load that it assumes one process; that is the intent."""
    with warnings.catch_warnings():
        if not ctx.distributed:
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _state_dicts(model: HunyuanForCausalLM, optimizer: torch.optim.Optimizer | None) -> dict:
    sd = {"model": get_model_state_dict(model)}
    if optimizer is not None:
        sd["optim"] = get_optimizer_state_dict(model, optimizer)
    return sd


def save_checkpoint(run_dir: Path, step: int, model: HunyuanForCausalLM, optimizer: torch.optim.Optimizer,
                    state: dict, rng: dict, keep_last: int, ctx: DistContext) -> Path:
    """Collective: write checkpoint `step`, publish it atomically, keep the newest `keep_last`."""
    final = run_dir / f"{PREFIX}{step:07d}"
    tmp = run_dir / f"{final.name}.tmp"
    if ctx.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    ctx.barrier()
    with _quiet_single_process(ctx):
        dcp.save(_state_dicts(model, optimizer), checkpoint_id=tmp / "dcp", no_dist=not ctx.distributed)
    torch.save(rng, tmp / f"rng-{ctx.rank}.pt")
    if ctx.is_main:
        model.config.save(tmp / "config.json")
        (tmp / "state.json").write_text(json.dumps(state, indent=1) + "\n")
    ctx.barrier()
    if ctx.is_main:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old)
    ctx.barrier()
    return final


def _check_shapes(path: Path, model_sd: dict) -> None:
    """One line, not a size-mismatch traceback, when the run's model changed since the save."""
    saved = dcp.FileSystemReader(str(path / "dcp")).read_metadata().state_dict_metadata
    for name, t in model_sd.items():  # DTensor shapes are global, as DCP stores them
        meta = saved.get(f"model.{name}")
        have = tuple(meta.size) if meta is not None and hasattr(meta, "size") else None
        if have != tuple(t.shape):
            what = f"has {name} of shape {list(have)}" if have else f"has no {name}"
            raise UserError(f"checkpoint {path} {what}, this run's model needs {list(t.shape)}: "
                            "the model config changed since it was saved (restore it, or use another run_dir)")


def load_checkpoint(path: Path, model: HunyuanForCausalLM, optimizer: torch.optim.Optimizer | None,
                    ctx: DistContext) -> tuple[dict, dict | None]:
    """Collective: restore model (and optimizer) in place; returns (state, this rank's RNG or None)."""
    sd = _state_dicts(model, optimizer)
    _check_shapes(path, sd["model"])
    with _quiet_single_process(ctx):
        dcp.load(sd, checkpoint_id=path / "dcp", no_dist=not ctx.distributed)
    set_model_state_dict(model, sd["model"])
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer, sd["optim"])
    state = json.loads((path / "state.json").read_text())
    rng_file = path / f"rng-{ctx.rank}.pt"
    rng = torch.load(rng_file, weights_only=True) if rng_file.exists() else None
    return state, rng


def load_model(path: Path) -> HunyuanForCausalLM:
    """The model of a checkpoint folder, in one process (whatever layout saved it)."""
    from ..config import ModelConfig

    if not (path / "dcp").is_dir():
        raise UserError(f"{path} is not a run checkpoint (no dcp/ folder)")
    with torch.device("meta"):
        model = HunyuanForCausalLM(ModelConfig.load(path / "config.json"))
    model.to_empty(device="cpu")
    model.tie_weights()
    load_checkpoint(path, model, None, DistContext(device=torch.device("cpu")))
    return model.eval()
