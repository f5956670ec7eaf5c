"""The post-training loop shared by sft, rm and dpo, on the pre-training trainer's pieces.

A run starts from a model folder (`[model] init`), passes over its items (packed rows or
pairs) in a per-epoch seeded order, and keeps the pre-training run folder: config.toml,
metrics.jsonl, plots, atomic checkpoints (model, optimizer, every RNG stream) and exact resume.
The step's items depend only on (seed, step), so a resumed run sees the same batches.
At the end the weights are written as a model folder, `RUN/model`.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from abc import ABC, abstractmethod
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from ..accounting import flops_per_token
from ..config import ModelConfig
from ..errors import UserError
from ..model import HunyuanForCausalLM
from ..pretrained import load_weights, save_pretrained
from ..tokenizer import load_tokenizer
from ..train.distributed import check_same_config, clip_grad_norm, init_distributed, parallelize
from ..train.metrics import MetricsLog, TrainProgress, write_plots
from ..train.mfu import measure_peak_flops
from ..train.optim import build_optimizer, set_lr
from ..train.run_state import (
    latest_checkpoint, load_checkpoint, load_model, rng_state, save_checkpoint, set_rng_state,
)
from ..train.schedule import Schedule
from .config import PostConfig
from .data import Report
from .plots import write_metric_plots


def load_policy(folder: str, cfg: PostConfig) -> HunyuanForCausalLM:
    """A model folder's weights in float32 with this run's dropout and routing."""
    mcfg = ModelConfig.load(folder).replace(attention_dropout=cfg.model.attention_dropout,
                                            hidden_dropout=cfg.model.hidden_dropout, torch_dtype="float32")
    mcfg.set_routing_policy(cfg.train.routing)
    with torch.device("meta"):
        model = HunyuanForCausalLM(mcfg)
    model.to_empty(device="cpu")
    model.tie_weights()
    load_weights(model, folder)
    model.keep_router_fp32()
    return model


class PostTrainer(ABC):
    """Builds the run from a PostConfig; subclasses give the items and the step's losses."""

    name = "post"
    metric_names: tuple[str, ...] = ()  # plotted besides the loss
    distributed_ok = False  # whether the task runs under torchrun (FSDP2 data parallel)

    def __init__(self, cfg: PostConfig, console: Console | None = None):
        self.cfg, t = cfg, cfg.train
        self.ctx = init_distributed(cfg.parallel, t.device)
        if self.ctx.distributed and not (self.distributed_ok and cfg.parallel.ep == 1):
            raise UserError(f"hunyuan {self.name} runs in one process for now"
                            + (" (sft runs under torchrun without expert parallelism)" if self.distributed_ok else ""))
        check_same_config(self.ctx, cfg.to_toml())
        self.console = console or Console(quiet=not self.ctx.is_main)
        self.device = self.ctx.device
        self.run_dir = Path(cfg.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.tokenizer = load_tokenizer(cfg.model.init)
        torch.manual_seed(t.seed)
        self.model = load_policy(cfg.model.init, cfg).to(self.device).train()
        self.report = Report()
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda"
                         else contextlib.nullcontext())
        self.num_items = self.prepare()
        if self.report.bad:
            self.console.print(f"[yellow]{self.report.summary()}[/yellow]")
        parallelize(self.model, self.ctx)
        torch.manual_seed(t.seed + self.ctx.rank)  # dropout differs per rank, as the data does
        per_step = t.batch_size * t.grad_accum * self.ctx.world
        self.steps_per_epoch = math.ceil(self.num_items / per_step)
        self.total_steps = t.steps or t.epochs * self.steps_per_epoch
        self.optimizer = build_optimizer(self.trainable, t, t.expert_lr_scale)
        self.schedule = Schedule(t.lr, self.total_steps, t.warmup_steps, t.decay, t.lr_floor, 0.0, t.lr_floor)
        self.log = MetricsLog(self.run_dir / "metrics.jsonl")

    # ----- what a task defines ---------------------------------------------------------------
    @abstractmethod
    def prepare(self) -> int:
        """Read and tokenize the data; returns the number of items an epoch passes over."""

    @abstractmethod
    def step_losses(self, micro: list[torch.Tensor]) -> dict[str, float]:
        """Forward and backward over the step's micro-batches of item indices; returns metrics,
        at least "loss" and "tokens" (tokens processed)."""

    def before_step(self, step: int) -> dict | None:
        """Called before each step; a returned dict is logged as its own record (DPO's online rounds)."""
        return None

    def extra_state(self) -> dict:
        """JSON-able state a task adds to checkpoints."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what `extra_state` saved."""

    def after_step(self) -> None:
        """Called after each applied optimizer step (DPO updates its EMA here)."""

    @property
    def trainable(self) -> nn.Module:
        """What the optimizer updates (the reward model adds its head)."""
        return self.model

    @property
    def state_module(self) -> nn.Module:
        """What checkpoints hold besides the optimizer (DPO adds its EMA)."""
        return self.trainable

    def save_model(self, folder: Path) -> None:
        """The trained weights as a model folder."""
        save_pretrained(self.model, folder)

    # ----- the loop --------------------------------------------------------------------------
    def micro_batches(self, step: int) -> list[torch.Tensor]:
        """This rank's item indices of each micro-batch of `step`, from a seeded permutation per
        epoch; every rank draws the same global micro-batch and takes its slice."""
        t, ctx = self.cfg.train, self.ctx
        epoch, within = divmod(step, self.steps_per_epoch)
        gen = torch.Generator().manual_seed(t.seed * 100003 + epoch)
        order = torch.randperm(self.num_items, generator=gen)
        size = t.batch_size * ctx.world
        start = within * size * t.grad_accum
        picks = order[(start + torch.arange(size * t.grad_accum)) % self.num_items]
        return [m[ctx.rank * t.batch_size:(ctx.rank + 1) * t.batch_size] for m in picks.split(size)]

    def _resume(self) -> tuple[int, int]:
        """(step, tokens) of the newest checkpoint, restored in place; (0, 0) when starting."""
        ckpt = latest_checkpoint(self.run_dir) if self.cfg.train.resume else None
        if ckpt is None:
            if self.ctx.is_main:
                self.log.path.unlink(missing_ok=True)
            return 0, 0
        state, rng = load_checkpoint(ckpt, self.state_module, self.optimizer, self.ctx)
        if rng is not None:
            set_rng_state(rng, None)
        self.load_extra_state(state)
        if self.ctx.is_main:
            self.log.truncate_after(state["step"])
        self.console.print(f"resuming from {ckpt.name} (step {state['step']})")
        return state["step"], state["tokens"]

    def _save(self, step: int, tokens: int) -> Path:
        state = {"step": step, "tokens": tokens, **self.extra_state()}
        return save_checkpoint(self.run_dir, step, self.state_module, self.optimizer, state, rng_state(None),
                               self.cfg.train.keep_last, self.ctx)

    def run(self) -> dict:
        """Train to the last step (resuming when possible), then write RUN/model; returns a summary."""
        t, main = self.cfg.train, self.ctx.is_main
        if main:
            (self.run_dir / "config.toml").write_text(self.cfg.to_toml())
        step, tokens = self._resume()
        self.console.print(f"{self.name}: {self.num_items} items, {self.steps_per_epoch} steps/epoch, "
                           f"{self.total_steps} steps on {self.device} -> {self.run_dir}")
        # MFU of the trained forward + backward (not the reference's or the sampler's tokens); the
        # peak's random matrices must not move the dropout stream that exact resume restores.
        flops = 0.0
        if t.mfu:
            with torch.random.fork_rng(devices=[]):
                flops = flops_per_token(self.model.config, self.cfg.data.seq_len) / measure_peak_flops(self.device, 0.2)
        progress = TrainProgress(self.total_steps, step) if main else None
        sums: dict[str, float] = {}
        count, start = 0, time.perf_counter()
        try:
            while step < self.total_steps:
                lrs = set_lr(self.optimizer, self.schedule.lr(step))
                note = self.before_step(step)
                if note:
                    self.log.write({"step": step, **note})
                metrics = self.step_losses(self.micro_batches(step))
                grad_norm = clip_grad_norm(self.trainable, t.grad_clip, self.ctx)
                finite = bool(torch.isfinite(grad_norm))
                if finite:
                    self.optimizer.step()
                    self.after_step()
                self.optimizer.zero_grad(set_to_none=True)
                step += 1
                if not finite and main:  # a non-finite loss or gradient: the step is skipped and recorded
                    self.log.write({"step": step, "skipped": True})
                    progress.print(f"step {step}: non-finite gradient, step skipped")
                if not finite:
                    continue
                tokens += int(metrics["tokens"])
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
                sums["grad_norm"] = sums.get("grad_norm", 0.0) + float(grad_norm)
                count += 1
                if main and (step % t.log_every == 0 or step == self.total_steps):
                    elapsed = time.perf_counter() - start
                    rec = {k: v / count for k, v in sums.items() if k != "tokens"}
                    rec.update(step=step, tokens=tokens, lr=lrs, tokens_per_s=sums["tokens"] / elapsed)
                    if flops:
                        rec["mfu"] = rec["tokens_per_s"] * flops
                    self.log.write(rec)
                    progress.update(step, rec["loss"], rec["tokens_per_s"])
                if step % t.log_every == 0 or step == self.total_steps:
                    sums, count, start = {}, 0, time.perf_counter()
                if step % t.save_every == 0 or step == self.total_steps:
                    self._save(step, tokens)
        except KeyboardInterrupt:
            if progress:
                progress.close()
            if step and not self.ctx.distributed:  # a collective save needs every rank in step
                self.console.print(f"interrupted at step {step}: saved {self._save(step, tokens)}; "
                                   "rerun the same command to resume")
            raise
        finally:
            if progress:
                progress.close()
        return self._finish(step) if main else {}

    def _finish(self, step: int) -> dict:
        out = self.run_dir / "model"
        if self.ctx.distributed:  # the sharded weights, gathered from the final checkpoint
            save_pretrained(load_model(latest_checkpoint(self.run_dir)), out)
        else:
            self.save_model(out)
        self.tokenizer.save(out)
        generation = Path(self.cfg.model.init) / "generation_config.json"
        if generation.is_file():
            shutil.copy(generation, out / "generation_config.json")
        records = self.log.read()
        plots = (write_plots(records, self.run_dir) + write_metric_plots(records, self.metric_names, self.run_dir)
                 if self.cfg.train.plots else [])
        last = next((r for r in reversed(records) if "loss" in r), {})
        summary = {"steps": step, "model": str(out), "plots": [str(p) for p in plots],
                   "bad_lines": self.report.bad, **{k: v for k, v in last.items() if k not in ("lr", "step")}}
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary
