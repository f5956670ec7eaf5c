"""Plots of the post-training metrics (TRL names) beside pre-training's loss and lr plots."""

from __future__ import annotations

from pathlib import Path


def write_metric_plots(records: list[dict], names: tuple[str, ...], out_dir: Path) -> list[Path]:
    """metrics.png: one panel per metric name over steps (nothing when no names or records)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in records if not r.get("skipped")]
    names = tuple(n for n in names if any(n in r for r in rows))
    if not names:
        return []
    cols = min(len(names), 3)
    nrows = -(-len(names) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 2.8 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(names):
            ax.axis("off")
            continue
        have = [r for r in rows if names[i] in r]
        ax.plot([r["step"] for r in have], [r[names[i]] for r in have], lw=1)
        ax.set_title(names[i], fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out_dir / "metrics.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
