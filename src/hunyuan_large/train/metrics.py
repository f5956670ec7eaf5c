"""The run's record: metrics.jsonl, a live progress line, and PNG plots."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..errors import UserError


class MetricsLog:
    """Appends one JSON object per line; reads them back for plots and summaries."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        """The records; a torn last line (the process died mid-write) is dropped."""
        if not self.path.exists():
            return []
        lines = [line for line in self.path.read_text(errors="replace").splitlines() if line.strip()]
        records = []
        for i, line in enumerate(lines):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if i < len(lines) - 1:
                    raise UserError(f"{self.path} line {i + 1} is not JSON; fix or remove that line") from None
        return records

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (a resumed run rewrites what the crashed one logged later)."""
        kept = [r for r in self.read() if r.get("step", -1) <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))


class TrainProgress:
    """A live bar (step, loss, tokens/s, ETA) on a terminal; periodic plain lines otherwise."""

    def __init__(self, total: int, start: int):
        self.live = sys.stdout.isatty()
        self.total = total
        self._last_print = 0.0
        if self.live:
            self.bar = Progress(
                TextColumn("step {task.completed}/{task.total}"), BarColumn(),
                TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            )
            self.task = self.bar.add_task("train", total=total, completed=start, loss="-", tps="-")
            self.bar.start()

    def update(self, step: int, loss: float, tokens_per_s: float) -> None:
        if self.live:
            self.bar.update(self.task, completed=step, loss=f"{loss:.3f}", tps=f"{tokens_per_s:,.0f}")
        elif time.monotonic() - self._last_print > 10 or step == self.total:
            self._last_print = time.monotonic()
            print(f"step {step}/{self.total}  loss {loss:.3f}  {tokens_per_s:,.0f} tok/s", flush=True)

    def print(self, text: str) -> None:
        (self.bar.console.print if self.live else print)(text)

    def close(self) -> None:
        if self.live:
            self.bar.stop()


def write_plots(records: list[dict], out_dir: Path) -> list[Path]:
    """loss.png (train/val vs tokens), lr.png (rate of each group), expert_load.png (heatmaps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    train = [r for r in records if "loss" in r and not r.get("skipped")]
    val = [r for r in records if "val_loss" in r]
    if not train:
        return []
    paths = []
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["tokens"] for r in train], [r["loss"] for r in train], label="train", lw=1)
    if val:
        ax.plot([r["tokens"] for r in val], [r["val_loss"] for r in val], "o-", label="validation")
    paths.append(save_line_plot(fig, ax, "tokens", "cross-entropy (nats)", "loss", out_dir / "loss.png"))

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for group, style in zip(train[0]["lr"], ("-", "-", "--", ":")):
        ax.plot([r["step"] for r in train], [r["lr"][group] for r in train], style, label=group)
    paths.append(save_line_plot(fig, ax, "step", "learning rate", "learning-rate schedule by parameter group",
                                 out_dir / "lr.png"))

    loads = [r for r in train if r.get("router_load")]
    if loads:
        layers = len(loads[0]["router_load"])
        cols = min(layers, 4)
        rows = -(-layers // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
        steps = [r["step"] for r in loads]
        for i in range(rows * cols):
            ax = axes[i // cols][i % cols]
            if i >= layers:
                ax.axis("off")
                continue
            grid = np.array([r["router_load"][i] for r in loads]).T  # (E, logged steps)
            im = ax.imshow(grid, aspect="auto", cmap="viridis", origin="lower",
                           # a single logged step gets a unit-wide column (equal x limits are singular)
                           extent=(steps[0], max(steps[-1], steps[0] + 1), -0.5, grid.shape[0] - 0.5))
            ax.set_title(f"layer {i}", fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            if i % cols == 0:
                ax.set_ylabel("expert", fontsize=8)
        fig.subplots_adjust(top=0.8, hspace=0.6)
        fig.colorbar(im, ax=axes, shrink=0.8, label="share of token choices")
        fig.suptitle("router load per expert over training (before capacity)")
        paths.append(_save(fig, out_dir / "expert_load.png", tight=False))
    return paths


def save_line_plot(fig, ax, xlabel: str, ylabel: str, title: str, path: Path) -> Path:
    """Label, title, legend and grid an axis, then write its figure as a PNG."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _save(fig, path: Path, tight: bool = True) -> Path:
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
