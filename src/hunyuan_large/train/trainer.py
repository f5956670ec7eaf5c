"""`hunyuan train`: the pre-training loop with the paper's recipe.

One optimizer step = grad_accum micro-batches of (batch_size, seq_len) tokens. The loss is
cross-entropy + aux_loss_coef * load-balancing loss + z_loss_coef * router z-loss. Routed experts
train at a scaled learning rate; the schedule warms up, decays, then anneals over the last 5% of
tokens while the data mixture switches to the annealing mixture.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console

from ..accounting import flops_per_token
from ..errors import UserError
from ..model import HunyuanForCausalLM
from ..runtime import resolve_device, tune_cpu_allocator
from .config import RunConfig
from .data_setup import make_sampler, make_validation, prepare_data, prepare_tokenizer
from .metrics import MetricsLog, TrainProgress, write_plots
from .mfu import measure_peak_flops
from .optim import build_optimizer, set_lr, surge_expert_scale
from .run_state import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .schedule import Schedule


class TrainingDiverged(UserError):
    """The loss stayed non-finite for too many steps in a row."""


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
        self.console = console or Console()
        self.run_dir = Path(cfg.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tune_cpu_allocator()
        self.device = resolve_device(t.device)
        self.tokenizer = prepare_tokenizer(cfg, self.run_dir, self.console)
        train_streams, val_streams, self.data_meta = prepare_data(cfg, self.run_dir, self.console)
        self.sampler = make_sampler(cfg, train_streams)
        self.val_batches = make_validation(cfg, val_streams)

        torch.manual_seed(t.seed)
        # Embedding rows padded to a multiple of 64 (as the release pads 128166 to 129024): faster GEMMs.
        vocab = -(-self.tokenizer.vocab_size // 64) * 64
        self.model_cfg = cfg.model_config(vocab, self.tokenizer.pad_id)
        if cfg.model.init_from:
            model = HunyuanForCausalLM.from_pretrained(cfg.model.init_from, device="cpu")
            model.config.set_routing_policy(t.routing)
            model.config.capacity_factor = t.capacity_factor
        else:
            model = HunyuanForCausalLM(self.model_cfg)
        self.model = model.to(self.device).train()
        self.routing_gen = self.model.set_routing_seed(t.seed + 1)

        self.tokens_per_step = t.batch_size * t.grad_accum * cfg.data.seq_len
        self.expert_scale = self._expert_lr_scale()
        self.optimizer = build_optimizer(self.model, t.lr, t.weight_decay, self.expert_scale,
                                         (t.beta1, t.beta2), t.eps)
        self.schedule = Schedule(t.lr, t.steps, t.warmup_steps, t.decay, t.decay_floor,
                                 t.anneal_fraction, t.anneal_floor)
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda"
                         else contextlib.nullcontext())
        self.log = MetricsLog(self.run_dir / "metrics.jsonl")
        self.flops_per_token = flops_per_token(self.model.config, cfg.data.seq_len)

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
    def _resume(self) -> tuple[int, int, int]:
        """Restore the newest checkpoint if resuming; returns (step, tokens, bad_streak)."""
        ckpt = latest_checkpoint(self.run_dir) if self.cfg.train.resume else None
        if ckpt is None:
            self.log.path.unlink(missing_ok=True)
            return 0, 0, 0
        state = load_checkpoint(ckpt, self.model, self.optimizer)
        self.sampler.load_state_dict(state["sampler"])
        set_rng_state(state["rng"], self.routing_gen)
        self.log.truncate_after(state["step"])
        self.console.print(f"resuming from {ckpt.name} (step {state['step']})")
        return state["step"], state["tokens"], state["bad_streak"]

    def _save(self, step: int, tokens: int, bad_streak: int) -> Path:
        state = {"step": step, "tokens": tokens, "bad_streak": bad_streak,
                 "sampler": self.sampler.state_dict(), "rng": rng_state(self.routing_gen)}
        return save_checkpoint(self.run_dir, step, self.model, self.optimizer, state, self.cfg.train.keep_last)

    # ----- evaluation ----------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Mean validation cross-entropy per token (dropless routing, as at inference)."""
        if not self.val_batches:
            return None
        self.model.eval()
        total, count = 0.0, 0
        for batch in self.val_batches:
            batch = batch.to(self.device)
            with self.autocast:
                logits = self.model(batch[:, :-1]).logits
            total += F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="sum").item()
            count += batch[:, 1:].numel()
        self.model.train()
        return total / count

    # ----- one optimizer step -------------------------------------------------------------
    def _step(self, step: int, acc: dict) -> tuple[bool, float]:
        """Accumulate grad_accum micro-batches and step; returns (applied, loss)."""
        t = self.cfg.train
        anneal = self.schedule.phase(step) == "anneal"
        lrs = set_lr(self.optimizer, self.schedule.lr(step))
        losses, finite = [], True
        for _ in range(t.grad_accum):
            batch = self.sampler.next_batch(anneal).to(self.device)
            with self.autocast:
                out = self.model(batch[:, :-1])
            ce = F.cross_entropy(out.logits.flatten(0, 1), batch[:, 1:].flatten())
            loss = ce
            if out.aux_loss is not None:
                loss = loss + t.aux_loss_coef * out.aux_loss + t.z_loss_coef * out.z_loss
            if not torch.isfinite(loss):
                finite = False
                break
            (loss / t.grad_accum).backward()
            losses.append(ce.item())
            acc["tokens"] += batch[:, :-1].numel()
            _accumulate_stats(acc, out, ce.item())
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip) if finite else None
        if finite and not torch.isfinite(grad_norm):
            finite = False
        if finite:
            self.optimizer.step()
            acc["grad_norm"] = float(grad_norm)
        self.optimizer.zero_grad(set_to_none=True)
        acc["lr"] = lrs
        acc["phase"] = "anneal" if anneal else self.schedule.phase(step)
        return finite, (sum(losses) / len(losses)) if losses else float("nan")

    # ----- the loop ------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train to `train.steps` (resuming when possible); Ctrl-C saves and stops cleanly."""
        t, cfg = self.cfg.train, self.cfg
        (self.run_dir / "config.toml").write_text(cfg.to_toml())
        step, tokens, bad_streak = self._resume()
        self.console.print(f"run folder {self.run_dir} | model {_describe(self.model)} | "
                           f"{self.tokens_per_step:,} tokens/step x {t.steps} steps | device {self.device}")
        peak = measure_peak_flops(self.device)
        if step == 0:
            self.log.write({"step": 0, "tokens": 0, "val_loss": self.evaluate()})
        progress = TrainProgress(t.steps, step)
        acc, interval_start, interrupted = _new_acc(), time.perf_counter(), False
        try:
            while step < t.steps:
                applied, loss = self._step(step, acc)
                step += 1
                tokens += self.tokens_per_step
                if not applied:
                    bad_streak += 1
                    self.log.write({"step": step, "tokens": tokens, "skipped": True, "loss": loss})
                    progress.print(f"step {step}: non-finite loss or gradient, step skipped ({bad_streak} in a row)")
                    if bad_streak >= t.max_bad_steps:
                        last = latest_checkpoint(self.run_dir)
                        raise TrainingDiverged(
                            f"loss was non-finite for {bad_streak} steps in a row (last at step {step}); "
                            f"the last good checkpoint is {last or 'none'}; lower train.lr or check the data")
                    continue
                bad_streak = 0
                if step % t.log_every == 0 or step == t.steps:
                    elapsed = time.perf_counter() - interval_start
                    record = _record(step, tokens, acc, elapsed, self.flops_per_token, peak)
                    self.log.write(record)
                    progress.update(step, record["loss"], record["tokens_per_s"])
                    acc, interval_start = _new_acc(), time.perf_counter()
                if step % t.eval_every == 0 or step == t.steps:
                    self.log.write({"step": step, "tokens": tokens, "val_loss": self.evaluate()})
                    write_plots(self.log.read(), self.run_dir)
                if step % t.save_every == 0 or step == t.steps:
                    self._save(step, tokens, bad_streak)
                if step % t.eval_every == 0 or step % t.save_every == 0:
                    interval_start = time.perf_counter()  # keep eval/save time out of tokens/s
        except KeyboardInterrupt:
            interrupted = True
            progress.close()
            if bad_streak == 0 and step > 0:
                path = self._save(step, tokens, bad_streak)
                self.console.print(f"interrupted at step {step}: saved {path}; rerun the same command to resume")
            else:
                self.console.print(f"interrupted at step {step}; the last checkpoint is kept")
        finally:
            progress.close()
        summary = self._summary(step, interrupted)
        return TrainResult(self.run_dir, step, interrupted, summary)

    def _summary(self, step: int, interrupted: bool) -> dict:
        records = self.log.read()
        plots = write_plots(records, self.run_dir)
        summary = summarize(records, self.cfg.train.steps)
        summary.update(steps=step, interrupted=interrupted, plots=[str(p) for p in plots],
                       model=_describe(self.model))
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary


def _describe(model: HunyuanForCausalLM) -> str:
    from ..accounting import count_params
    from ..report import human

    p = count_params(model.config)
    return f"{human(p.total)} params ({human(p.active)} active)"


def _new_acc() -> dict:
    return {"ce": [], "aux": [], "z": [], "load": None, "chosen": None, "dropped": 0, "recycled": 0, "choices": 0, "tokens": 0}


def _accumulate_stats(acc: dict, out, ce: float) -> None:
    acc["ce"].append(ce)
    stats = out.router_stats
    if not stats:
        return
    acc["aux"].append(out.aux_loss.item())
    acc["z"].append(out.z_loss.item())
    load = torch.stack([s.tokens_per_expert for s in stats]).float().cpu()  # (layers, E)
    chosen = torch.stack([s.chosen_per_expert for s in stats]).float().cpu()
    acc["load"] = load if acc["load"] is None else acc["load"] + load
    acc["chosen"] = chosen if acc["chosen"] is None else acc["chosen"] + chosen
    acc["dropped"] += int(sum(s.dropped for s in stats))
    acc["recycled"] += int(sum(s.recycled for s in stats))
    acc["choices"] += int(sum(s.chosen_per_expert.sum() for s in stats))


def _record(step: int, tokens: int, acc: dict, elapsed: float, flops_tok: float, peak: float) -> dict:
    """One metrics.jsonl line for the steps since the last one."""
    tps = acc["tokens"] / elapsed
    record = {"step": step, "tokens": tokens, "loss": sum(acc["ce"]) / len(acc["ce"]), "lr": acc["lr"],
              "grad_norm": acc.get("grad_norm"), "phase": acc["phase"], "tokens_per_s": tps,
              "mfu": tps * flops_tok / peak}
    if acc["aux"]:
        record["aux_loss"] = sum(acc["aux"]) / len(acc["aux"])
        record["z_loss"] = sum(acc["z"]) / len(acc["z"])
        load = acc["load"]
        record["expert_load"] = (load / load.sum(1, keepdim=True)).tolist()  # (layers, E) after capacity
        chosen = acc["chosen"]
        record["router_load"] = (chosen / chosen.sum(1, keepdim=True)).tolist()  # the router's own choices
        record["dropped_frac"] = acc["dropped"] / acc["choices"]
        record["recycled_frac"] = acc["recycled"] / acc["choices"]
    return record


def summarize(records: list[dict], total_steps: int) -> dict:
    """Start/end validation loss, speed, MFU, expert balance and routing fractions of a run."""
    val = [r for r in records if r.get("val_loss") is not None]
    train = [r for r in records if "tokens_per_s" in r]
    out: dict = {"total_steps": total_steps}
    if val:
        out.update(val_loss_start=val[0]["val_loss"], val_loss_end=val[-1]["val_loss"])
    if train:
        mid = sorted(r["tokens_per_s"] for r in train)[len(train) // 2]
        out.update(tokens=train[-1]["tokens"], tokens_per_s=mid,
                   mfu=sorted(r["mfu"] for r in train)[len(train) // 2], final_loss=train[-1]["loss"])
        loads = [r["expert_load"] for r in train if "expert_load" in r]
        if loads:
            last = torch.tensor(loads[-max(1, len(loads) // 10):]).mean(0)  # (layers, E), last 10%
            out["expert_load_max_over_mean"] = float((last.max(1).values * last.shape[1]).mean())
            out["dropped_frac"] = sum(r["dropped_frac"] for r in train if "dropped_frac" in r) / len(loads)
            out["recycled_frac"] = sum(r["recycled_frac"] for r in train if "recycled_frac" in r) / len(loads)
    return out
