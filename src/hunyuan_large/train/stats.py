"""Step statistics: accumulate losses and routing counts between log lines; summarize a run."""

from __future__ import annotations

import torch


def new_acc() -> dict:
    """An empty accumulator for the steps between two log lines."""
    return {"ce": [], "aux": [], "z": [], "load": None, "chosen": None, "dropped": 0, "recycled": 0,
            "choices": 0, "tokens": 0}


def accumulate(acc: dict, out, ce: float) -> None:
    """Add one micro-batch's loss and routing statistics to the interval accumulator."""
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


def record(step: int, tokens: int, acc: dict, elapsed: float, flops_tok: float, peak: float) -> dict:
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
