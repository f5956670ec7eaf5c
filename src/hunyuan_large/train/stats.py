"""Step statistics: accumulate losses and routing counts between log lines; summarize a run."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class IntervalStats:
    """Losses, routing counts and speed inputs accumulated between two metrics lines."""

    ce: list[float] = field(default_factory=list)  # per micro-batch, mean over ranks
    aux: list[float] = field(default_factory=list)
    z: list[float] = field(default_factory=list)
    load: torch.Tensor | None = None  # (layers, E) tokens per expert after capacity
    chosen: torch.Tensor | None = None  # (layers, E) the router's own choices
    dropped: int = 0
    recycled: int = 0
    choices: int = 0
    tokens: int = 0  # trained tokens, all ranks
    lr: dict[str, float] = field(default_factory=dict)  # per parameter group, at the last step
    grad_norm: float | None = None  # of the last applied step
    phase: str = ""

    def add(self, out, ce: float, tokens: int) -> None:
        """Add one micro-batch: its loss, tokens and the model output's routing statistics."""
        self.ce.append(ce)
        self.tokens += tokens
        stats = out.router_stats
        if not stats:
            return
        self.aux.append(out.aux_loss.item())
        self.z.append(out.z_loss.item())
        load = torch.stack([s.tokens_per_expert for s in stats]).float().cpu()
        chosen = torch.stack([s.chosen_per_expert for s in stats]).float().cpu()
        self.load = load if self.load is None else self.load + load
        self.chosen = chosen if self.chosen is None else self.chosen + chosen
        self.dropped += int(sum(s.dropped for s in stats))
        self.recycled += int(sum(s.recycled for s in stats))
        self.choices += int(sum(s.chosen_per_expert.sum() for s in stats))

    def record(self, step: int, tokens: int, elapsed: float, flops_tok: float, peak: float) -> dict:
        """One metrics.jsonl line for the steps of this interval."""
        tps = self.tokens / elapsed
        rec = {"step": step, "tokens": tokens, "loss": sum(self.ce) / len(self.ce), "lr": self.lr,
               "grad_norm": self.grad_norm, "phase": self.phase, "tokens_per_s": tps,
               "mfu": tps * flops_tok / peak}
        if self.aux:
            rec["aux_loss"] = sum(self.aux) / len(self.aux)
            rec["z_loss"] = sum(self.z) / len(self.z)
            rec["expert_load"] = (self.load / self.load.sum(1, keepdim=True)).tolist()
            rec["router_load"] = (self.chosen / self.chosen.sum(1, keepdim=True)).tolist()
            rec["dropped_frac"] = self.dropped / self.choices
            rec["recycled_frac"] = self.recycled / self.choices
        return rec


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
            out["expert_load_max_over_mean"] = load_max_over_mean(loads)
            out["dropped_frac"] = sum(r["dropped_frac"] for r in train if "dropped_frac" in r) / len(loads)
            out["recycled_frac"] = sum(r["recycled_frac"] for r in train if "recycled_frac" in r) / len(loads)
    return out


def load_max_over_mean(loads: list) -> float:
    """The busiest expert's share x E (1.0 = balanced), mean over layers, over the last 10% of
    logged (layers, E) load shares."""
    last = torch.tensor(loads[-max(1, len(loads) // 10):]).mean(0)  # (layers, E)
    return float((last.max(1).values * last.shape[1]).mean())
