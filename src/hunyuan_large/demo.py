"""`make demo`: train a small Hunyuan-architecture MoE on the Python standard library, then sample.

Everything comes from this machine: the corpus is the standard library's own source, the
tokenizer is trained on it, and the model (shared + routed experts, recycle routing, GQA + CLA,
QK-norm) trains for a few minutes on the CPU.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from .infer import Engine, EngineConfig, SamplingParams
from .train import RunConfig, Trainer
from .train.export import export_run

SAMPLE_PROMPTS = ["def fibonacci(n):\n", "import os\n\n\ndef ", "class Stack:\n    def __init__(self):\n"]


def run_demo(config: str | None = None, overrides: list[str] | None = None) -> None:
    """Train the demo run (resuming if interrupted), then print samples and a summary."""
    console = Console()
    cfg = RunConfig.from_toml(config, overrides)
    trainer = Trainer(cfg, console)
    result = trainer.run()
    if result.interrupted:
        return
    model_dir = export_run(result.run_dir, Path(result.run_dir) / "model")
    engine = Engine(trainer.model, trainer.tokenizer, config=EngineConfig(max_batch=4, max_len=512))
    prompts = [engine.encode_prompt(p) for p in SAMPLE_PROMPTS]  # <|startoftext|> + text
    stop = (trainer.tokenizer.eod_id,)
    params = SamplingParams(temperature=0.6, top_k=20, max_new_tokens=60, seed=0, stop_token_ids=stop)
    for i, (prompt, out) in enumerate(zip(SAMPLE_PROMPTS, engine.generate(prompts, params))):
        console.rule(f"sample {i + 1}")
        console.print(prompt + trainer.tokenizer.decode(out.token_ids), markup=False, highlight=False)
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
    table.add_row("model folder (HF layout + tokenizer)", f"{model_dir}  (try: hunyuan generate --model {model_dir} ...)")
    console.print(table)
