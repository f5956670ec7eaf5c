"""PNG plots of a fit: isoFLOP curves with their parabolas and minima; N_opt and D_opt vs C_min."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .fit import ScalingFit


def write_fit_plots(fit: ScalingFit, out_dir: Path) -> list[Path]:
    """isoflop.png (loss vs N and vs D per budget) and laws.png (the power laws, log axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    out_dir.mkdir(parents=True, exist_ok=True)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(fit.curves)))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, (size_of, fit_of, opt_of, label) in zip(axes, (
        (lambda p: p.n_active, lambda c: c.n_fit, lambda c: c.n_opt, "activated parameters N"),
        (lambda p: p.tokens, lambda c: c.d_fit, lambda c: c.d_opt, "training tokens D"),
    )):
        for color, curve in zip(colors, fit.curves):
            sizes = np.array([size_of(p) for p in curve.points])
            ax.scatter(sizes, [p.loss for p in curve.points], color=color, s=18, label=f"C = {curve.budget:.2g}")
            grid = np.geomspace(sizes.min() / 1.3, sizes.max() * 1.3, 100)
            ax.plot(grid, fit_of(curve)(grid), color=color, lw=1)
            best = opt_of(curve)
            ax.scatter([best], [fit_of(curve)(best)], color=color, marker="*", s=140, edgecolor="black", zorder=3)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks collide on short ranges
        ax.set_xlabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("final validation loss (nats/token)")
    axes[0].legend(fontsize=8)
    fig.suptitle("isoFLOP curves: quadratic fits in log size, minima starred")
    paths = [_save(fig, out_dir / "isoflop.png")]

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    c = np.array([k.c_min for k in fit.curves])
    span = np.geomspace(c.min() / 1.5, max(c.max() * 1.5, fit.target), 100)
    for values, law, name, color in ((np.array([k.n_opt for k in fit.curves]), fit.n_law, "N_opt", "C0"),
                                     (np.array([k.d_opt for k in fit.curves]), fit.d_law, "D_opt", "C1")):
        ax.scatter(c, values, color=color)
        ax.plot(span, law(span), color=color,
                label=f"{name} = {law.coef:.3g} · C_min^{law.exponent:.3f}")
        ax.scatter([fit.target], [law(fit.target)], color=color, marker="x", s=60)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("C_min (FLOPs)")
    ax.set_ylabel("compute-optimal N (parameters) and D (tokens)")
    ax.set_title(f"power laws; x: extrapolation to C_min = {fit.target:.3g}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    paths.append(_save(fig, out_dir / "laws.png"))
    return paths


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
