"""Run checkpoints: atomic, pruned to the last N, and complete enough to resume exactly.

A checkpoint folder `ckpt-0000123/` holds `model/` (the HF layout, float32), `optimizer.pt` and
`state.pt` (step, tokens, data-sampler position, skipped-step streak, and every RNG state). It is
written as `ckpt-0000123.tmp/` and renamed when complete, so a crash never leaves a torn one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from ..checkpoint import load_weights, save_pretrained
from ..model import HunyuanForCausalLM

PREFIX = "ckpt-"


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    found = [p for p in run_dir.glob(f"{PREFIX}*") if p.is_dir() and not p.name.endswith(".tmp")]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def rng_state(routing: torch.Generator | None) -> dict:
    """Every random stream the step depends on."""
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


def save_checkpoint(run_dir: Path, step: int, model: HunyuanForCausalLM, optimizer: torch.optim.Optimizer,
                    state: dict, keep_last: int) -> Path:
    """Write checkpoint `step` atomically, then delete all but the newest `keep_last`."""
    final = run_dir / f"{PREFIX}{step:07d}"
    tmp = run_dir / f"{final.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_pretrained(model, tmp / "model", max_shard_size="10GB", dtype=torch.float32)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(state, tmp / "state.pt")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old)
    return final


def load_checkpoint(path: Path, model: HunyuanForCausalLM, optimizer: torch.optim.Optimizer | None) -> dict:
    """Restore model (and optimizer) in place; returns the saved trainer state."""
    load_weights(model, path / "model")
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    return torch.load(path / "state.pt", weights_only=True)
