"""`make demo`: train a small Hunyuan-architecture MoE on the Python standard library, then sample.

Everything comes from this machine: the corpus is the standard library's own source, the
tokenizer is trained on it, and the model (shared + routed experts, recycle routing, GQA + CLA,
QK-norm) trains for a few minutes on the CPU.
"""

from __future__ import annotations

import torch
from rich.console import Console
from rich.table import Table

from .train import RunConfig, Trainer


@torch.no_grad()
def sample(model, tokenizer, prompt: str, max_new_tokens: int = 60, temperature: float = 0.6,
           top_k: int = 20, seed: int = 0) -> str:
    """A plain sampling loop (no KV cache): enough for a demo-sized model and short prompts."""
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    ids = tokenizer.encode_document(prompt)
    out: list[int] = []
    for _ in range(max_new_tokens):
        logits = model(torch.tensor([ids + out], device=device), logits_to_keep=1).logits[0, -1].cpu()
        top = logits.topk(top_k)
        probs = torch.softmax(top.values / temperature, dim=-1)
        token = int(top.indices[torch.multinomial(probs, 1, generator=gen)])
        if token == tokenizer.eod_id:
            break
        out.append(token)
    return tokenizer.decode(out)


def run_demo(config: str | None = None, overrides: list[str] | None = None) -> None:
    """Train the demo run (resuming if interrupted), then print samples and a summary."""
    console = Console()
    cfg = RunConfig.from_toml(config, overrides)
    trainer = Trainer(cfg, console)
    result = trainer.run()
    if result.interrupted:
        return
    model = trainer.model.eval()
    for i, prompt in enumerate(cfg.train.sample_prompts):
        text = sample(model, trainer.tokenizer, prompt, seed=i)
        console.rule(f"sample {i + 1}")
        console.print(prompt + text, markup=False, highlight=False)
    s = result.summary
    table = Table(title="demo summary", show_header=False)
    table.add_row("model", s["model"])
    table.add_row("validation loss", f"{s['val_loss_start']:.3f} -> {s['val_loss_end']:.3f} nats/token")
    table.add_row("tokens trained", f"{s['tokens']:,}")
    table.add_row("throughput", f"{s['tokens_per_s']:,.0f} tokens/s")
    table.add_row("MFU (vs measured fp32 GEMM peak)", f"{s['mfu']:.0%}")
    table.add_row("expert load, max / mean", f"{s['expert_load_max_over_mean']:.2f}")
    table.add_row("token-choices recycled / dropped", f"{s['recycled_frac']:.1%} / {s['dropped_frac']:.1%}")
    table.add_row("plots", ", ".join(s["plots"]))
    console.print(table)
