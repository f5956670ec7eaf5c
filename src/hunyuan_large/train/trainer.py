"""`hunyuan train`: the pre-training loop with the paper's recipe, on one process or under torchrun.

One optimizer step = grad_accum micro-batches of (batch_size, seq_len) tokens on every rank; the
global batch is world x that, drawn by one sampler that every rank runs and slices, so the data
order does not depend on the world size. The loss is cross-entropy + aux_loss_coef *
load-balancing loss + z_loss_coef * router z-loss. Routed experts train at a scaled learning
rate; the schedule warms up, decays, then anneals over the last 5% of tokens while the data
mixture switches to the annealing mixture. Context stages ([[train.stages]]) follow as phases of the
same run (stages.py): each switches sequence length, data, schedule and RoPE between two steps, at a
saved checkpoint, so a run resumed in any stage continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from rich.console import Console

from ..accounting import count_params, flops_per_token
from ..config import ModelConfig, padded_vocab
from ..errors import UserError
from ..model import HunyuanForCausalLM
from ..pretrained import load_pretrained
from ..report import human
from ..runtime import tune_cpu_allocator
from .config import RunConfig
from .data_setup import make_sampler, make_validation, phase_streams, prepare_data, prepare_tokenizer
from .distributed import (
    DistContext, check_same_config, clip_grad_norm, fail_clearly, finalize_expert_grads, init_distributed,
    parallelize,
)
from .metrics import MetricsLog, TrainProgress, write_plots
from .mfu import measure_peak_flops
from .optim import build_optimizer, set_lr, surge_expert_scale
from .run_state import (
    latest_checkpoint, load_checkpoint, lock_run_dir, rng_state, save_checkpoint, set_rng_state,
)
from .stages import Phase, model_config_at, phase_at, plan_phases
from .interrupt import StopRequest
from .stats import IntervalStats, summarize


class TrainingDiverged(UserError):
    """The loss stayed non-finite for too many steps in a row."""


@dataclass
class LoopState:
    """Where the loop stands after its last completed step: what a checkpoint's state.json holds."""

    step: int = 0
    tokens: int = 0
    bad_streak: int = 0  # non-finite steps in a row, skipped


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    interrupted: bool
    summary: dict


class Trainer:
    """Builds everything a run needs from a RunConfig, then runs (or resumes) it."""

    def __init__(self, cfg: RunConfig, console: Console | None = None):
        self.cfg, t = cfg, cfg.train
        self.ctx: DistContext = init_distributed(cfg.parallel, t.device)
        self.console = console or Console(quiet=not self.ctx.is_main)
        check_same_config(self.ctx, cfg.to_toml())
        self.run_dir = Path(cfg.run_dir)
        self.lock = lock_run_dir(self.run_dir) if self.ctx.is_main else None
        self.run_dir.mkdir(parents=True, exist_ok=True)  # ranks > 0 may get here first
        tune_cpu_allocator()
        self.device = self.ctx.device
        # Rank 0 trains the tokenizer and tokenizes first; the others then find both cached.
        if not self.ctx.is_main:
            self.ctx.barrier()
        self.tokenizer = prepare_tokenizer(cfg, self.run_dir, self.console)
        self.data = prepare_data(cfg, self.run_dir, self.console)
        if self.ctx.is_main:
            self.ctx.barrier()
        self.phases = plan_phases(cfg, self.ctx.world)
        self.total_steps = self.phases[-1].end

        torch.manual_seed(t.seed)
        self.model_cfg = cfg.model_config(padded_vocab(self.tokenizer.vocab_size), self.tokenizer.pad_id)
        model = self._initial_model()
        p = count_params(self.model_cfg)
        self.model_description = f"{human(p.total)} params ({human(p.active)} active)"
        self.model = model.to(self.device).train()
        parallelize(self.model, self.ctx)
        torch.manual_seed(t.seed + self.ctx.rank)  # dropout differs per rank, as data does
        self.routing_gen = self.model.set_routing_seed(t.seed + 1 + self.ctx.rank)

        self.phase: Phase | None = None
        self._enter(phase_at(self.phases, 0), quiet=True)
        self.expert_scale = self._expert_lr_scale()
        self.optimizer = build_optimizer(self.model, t, self.expert_scale)
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda"
                         else contextlib.nullcontext())
        self.log = MetricsLog(self.run_dir / "metrics.jsonl")

    def _initial_model(self) -> HunyuanForCausalLM:
        """A fresh model, or init_from's weights (a model folder or a run checkpoint) under this run's config."""
        init = self.cfg.model.init_from
        if not init:
            return HunyuanForCausalLM(self.model_cfg)
        # Every layer is built from the run's config (routing, capacity), not the folder's.
        base = ModelConfig.load(init)
        self.model_cfg = self.cfg.model_config(base.vocab_size, base.pad_token_id)
        if not (Path(init) / "dcp").is_dir():
            return load_pretrained(init, device="cpu", dtype=torch.float32, config=self.model_cfg).train()
        with torch.device("meta"):
            model = HunyuanForCausalLM(self.model_cfg)
        model.to_empty(device="cpu")
        model.tie_weights()
        load_checkpoint(Path(init), model, None, DistContext(device=torch.device("cpu")))
        return model

    def _enter(self, phase: Phase, quiet: bool = False) -> None:
        """Switch to `phase`: its RoPE on the model, its data (a fresh sampler), schedule and sizes."""
        cfg, t = self.cfg, self.cfg.train
        self.phase = phase
        rope = model_config_at(self.phases, phase.index, self.model_cfg)
        self.model.set_rope(rope.rope_theta, rope.rope_scaling, rope.max_position_embeddings)
        console = None if quiet else self.console
        self.sampler = make_sampler(cfg, phase_streams(self.data, phase, "train", console), self.ctx.world, phase)
        val = phase_streams(self.data, phase, "val")
        self.val_batches = make_validation(cfg, val, self.console, phase.batch_size)
        self.schedule = phase.schedule
        self.tokens_per_step = phase.batch_size * t.grad_accum * phase.seq_len * self.ctx.world
        self.flops_per_token = flops_per_token(self.model.config, phase.seq_len)
        if phase.index and not quiet:
            self.console.print(
                f"stage {phase.index}: steps {phase.start}-{phase.end} at {phase.seq_len} tokens, "
                f"{self.tokens_per_step:,} tokens/step, rope_theta {rope.rope_theta:g}, "
                f"rope_scaling {rope.rope_scaling}, mixture {phase.mixture or 'equal'}")

    def _expert_lr_scale(self) -> float:
        t, mc = self.cfg.train, self.model_cfg
        if t.expert_lr_rule == "fixed" or not mc.is_moe:
            return t.expert_lr_scale
        scale = surge_expert_scale(self.tokens_per_step, t.b_noise, mc.moe_topk, mc.num_experts)
        note = "" if scale < 1 else (" (>= 1: the batch is not small against b_noise, so the surge "
                                     "rule gives the experts no smaller rate)")
        self.console.print(f"expert learning-rate scale from the surge rule: {scale:.3f}{note}")
        return scale

    # ----- state ---------------------------------------------------------------------------
    def _resume(self) -> LoopState:
        """Restore the newest checkpoint if resuming."""
        ckpt = latest_checkpoint(self.run_dir) if self.cfg.train.resume else None
        if ckpt is None:
            if self.ctx.is_main:
                self.log.path.unlink(missing_ok=True)
            return LoopState()
        state, rng = load_checkpoint(ckpt, self.model, self.optimizer, self.ctx)
        phase = phase_at(self.phases, state["step"])
        if phase is not self.phase:
            self._enter(phase)
        if state.get("phase", 0) == phase.index:  # else saved at the end of the previous phase: fresh data
            self.sampler.load_state_dict(state["sampler"])
        if rng is not None:  # absent when this rank did not exist in the saving job
            set_rng_state(rng, self.routing_gen)
        if self.ctx.is_main:
            self.log.truncate_after(state["step"])
        self.console.print(f"resuming from {ckpt.name} (step {state['step']})")
        return LoopState(state["step"], state["tokens"], state["bad_streak"])

    def _save(self, loop: LoopState) -> Path:
        state = {**dataclasses.asdict(loop), "phase": self.phase.index, "sampler": self.sampler.state_dict()}
        return save_checkpoint(self.run_dir, loop.step, self.model, self.optimizer, state,
                               rng_state(self.routing_gen), self.cfg.train.keep_last, self.ctx)

    # ----- evaluation ----------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Mean validation cross-entropy per token (dropless routing, as at inference).

        Ranks take batches round-robin; every rank runs the same number of forwards (FSDP's
        collectives need it), padding with a zero-weight repeat.
        """
        if not self.val_batches:
            return None
        self.model.eval()
        total, count = 0.0, 0
        per_rank = -(-len(self.val_batches) // self.ctx.world)
        for i in range(per_rank):
            index = i * self.ctx.world + self.ctx.rank
            batch = self.val_batches[min(index, len(self.val_batches) - 1)].to(self.device)
            with self.autocast:
                logits = self.model(input_ids=batch[:, :-1]).logits
            if index < len(self.val_batches):
                total += F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="sum").item()
                count += batch[:, 1:].numel()
        self.model.train()
        return self.ctx.all_reduce(total) / self.ctx.all_reduce(count)

    # ----- one optimizer step -------------------------------------------------------------
    def _micro_batch(self, anneal: bool) -> torch.Tensor:
        """This rank's rows of the next global micro-batch."""
        rows = self.sampler.next_batch(anneal)
        b = self.phase.batch_size
        return rows[self.ctx.rank * b : (self.ctx.rank + 1) * b].to(self.device)

    def _step(self, step: int, acc: IntervalStats) -> tuple[bool, float]:
        """Accumulate grad_accum micro-batches and step; returns (applied, mean loss of all ranks)."""
        t, ctx = self.cfg.train, self.ctx
        local = step - self.phase.start  # the schedule runs within the phase
        anneal = self.schedule.phase(local) == "anneal"
        lrs = set_lr(self.optimizer, self.schedule.lr(local))
        losses, finite = [], True
        for _ in range(t.grad_accum):
            batch = self._micro_batch(anneal)
            with self.autocast:
                out = self.model(input_ids=batch[:, :-1])
            ce = F.cross_entropy(out.logits.flatten(0, 1), batch[:, 1:].flatten())
            loss = ce
            if out.aux_loss is not None:
                loss = loss + t.aux_loss_coef * out.aux_loss + t.z_loss_coef * out.z_loss
            finite = finite and bool(torch.isfinite(loss))
            (loss / t.grad_accum).backward()
            losses.append(ctx.all_reduce(ce.item()) / ctx.world)
            acc.add(out, losses[-1], batch[:, :-1].numel() * ctx.world)
        finalize_expert_grads(self.model, ctx)
        grad_norm = clip_grad_norm(self.model, t.grad_clip, ctx)
        # Every rank must agree to step or skip: all see the same global norm and loss flags.
        finite = ctx.all_reduce(float(finite and bool(torch.isfinite(grad_norm))), op=dist.ReduceOp.MIN) > 0
        if finite:
            self.optimizer.step()
            acc.grad_norm = float(grad_norm)
        self.optimizer.zero_grad(set_to_none=True)
        acc.lr, acc.phase = lrs, self.schedule.phase(local) if self.phase.index == 0 else f"stage{self.phase.index}"
        return finite, sum(losses) / len(losses)

    # ----- the loop ------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train to `train.steps` (resuming when possible); Ctrl-C saves and stops cleanly."""
        try:
            with fail_clearly(self.ctx, lambda: latest_checkpoint(self.run_dir)):
                return self._run()
        finally:
            if self.lock:
                self.lock.close()

    def _run(self) -> TrainResult:
        t, cfg, main = self.cfg.train, self.cfg, self.ctx.is_main
        if main:
            (self.run_dir / "config.toml").write_text(cfg.to_toml())
        loop = self._resume()
        self.console.print(
            f"run folder {self.run_dir} | model {self.model_description} | "
            f"{self.tokens_per_step:,} tokens/step x {t.steps} steps"
            + "".join(f" + stage {p.index}: {p.steps} x {p.batch_size * p.seq_len * t.grad_accum * self.ctx.world:,}"
                      for p in self.phases[1:])
            + f" | {self.ctx.world} x {self.device}"
            + (f", expert parallel {self.ctx.ep_size}" if self.ctx.ep_size > 1 else ""))
        self.peak = measure_peak_flops(self.device) * self.ctx.world
        if loop.step == 0:
            val = self.evaluate()
            if main:
                self.log.write({"step": 0, "tokens": 0, "val_loss": val})
        self.progress = TrainProgress(self.total_steps, loop.step) if main else None
        self.interval = IntervalStats()
        self.interval_start = time.perf_counter()
        saved_at = loop.step
        # Under torchrun the launcher's SIGTERM means a peer died (fail_clearly): rely on save_every.
        stop = StopRequest(self.progress.print if main else print) if not self.ctx.distributed else None
        try:
            with stop or contextlib.nullcontext():
                while loop.step < self.total_steps and not (stop and stop.requested):
                    if loop.step >= self.phase.end:  # the next stage starts after the checkpoint of this one
                        self._enter(phase_at(self.phases, loop.step))
                    self._train_step(loop)
                    due = loop.bad_streak == 0 and (loop.step % t.save_every == 0 or loop.step == self.phase.end)
                    if due or (stop and stop.requested):  # a skipped step's weights are the last good ones
                        with stop.saving() if stop else contextlib.nullcontext():
                            path = self._save(loop)
                        saved_at = loop.step
                        self.interval_start = time.perf_counter()  # keep save time out of tokens/s
            if loop.step < self.total_steps:
                self.console.print(f"stopped at step {loop.step}: saved {path}; rerun the same command to resume")
        except KeyboardInterrupt:
            self.console.print(f"stopped during step {loop.step + 1}; the last checkpoint (step {saved_at}) "
                               "is kept; rerun the same command to resume from it")
        finally:
            if self.progress:
                self.progress.close()
        interrupted = loop.step < self.total_steps
        summary = self._summary(loop.step, interrupted) if main else {}
        return TrainResult(self.run_dir, loop.step, interrupted, summary)

    def _train_step(self, loop: LoopState) -> None:
        """One optimizer step with its logging and evaluation; advances `loop`."""
        t, main = self.cfg.train, self.ctx.is_main
        applied, loss = self._step(loop.step, self.interval)
        loop.step += 1
        loop.tokens += self.tokens_per_step
        if not applied:
            loop.bad_streak += 1
            self._note_skip(loop, loss)
            return
        loop.bad_streak = 0
        step = loop.step
        if step % t.log_every == 0 or step == self.phase.end:
            if main:
                rec = self.interval.record(step, loop.tokens, time.perf_counter() - self.interval_start,
                                           self.flops_per_token, self.peak)
                self.log.write(rec)
                self.progress.update(step, rec["loss"], rec["tokens_per_s"])
            self.interval, self.interval_start = IntervalStats(), time.perf_counter()
        if step % t.eval_every == 0 or step == self.phase.end:
            val = self.evaluate()
            if main:
                self.log.write({"step": step, "tokens": loop.tokens, "val_loss": val})
                write_plots(self.log.read(), self.run_dir)
            self.interval_start = time.perf_counter()  # keep eval time out of tokens/s

    def _note_skip(self, loop: LoopState, loss: float) -> None:
        if self.ctx.is_main:
            self.log.write({"step": loop.step, "tokens": loop.tokens, "skipped": True, "loss": loss})
            self.progress.print(f"step {loop.step}: non-finite loss or gradient, step skipped "
                                f"({loop.bad_streak} in a row)")
        if loop.bad_streak >= self.cfg.train.max_bad_steps:
            last = latest_checkpoint(self.run_dir)
            raise TrainingDiverged(
                f"loss was non-finite for {loop.bad_streak} steps in a row (last at step {loop.step}); "
                f"the last good checkpoint is {last or 'none'}; lower train.lr or check the data")

    def _summary(self, step: int, interrupted: bool) -> dict:
        records = self.log.read()
        plots = write_plots(records, self.run_dir)
        summary = summarize(records, self.total_steps)
        summary.update(steps=step, interrupted=interrupted, plots=[str(x) for x in plots],
                       model=self.model_description)
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary
