"""`hunyuan scaling fit RESULTS`: fit a results file, save fit.json and the plots, print the tables."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from .compute import PAPER_BUDGET
from .files import write_json
from .fit import ScalingFit, fit_scaling
from .plots import write_fit_plots
from .results import load_observations
from .tables import print_fit


def fit_results(results: str | Path, out_dir: str | Path | None = None, target: float = PAPER_BUDGET,
                b_crit: float | None = None, bootstrap: int = 1000, seed: int = 0,
                console: Console | None = None) -> ScalingFit:
    """Fit every "ok" record of a results file; outputs go to `out_dir` (default: its folder)."""
    console = console or Console()
    observations, skipped = load_observations(results)
    if skipped:
        console.print(f"left out {len(skipped)} record(s) not ok: {', '.join(skipped)}", markup=False)
    fit = fit_scaling(observations, target, b_crit, bootstrap, seed)
    out = Path(out_dir) if out_dir else Path(results).parent
    record = {**fit.to_dict(), "b_crit": "kaplan" if b_crit is None else b_crit, "seed": seed}
    paths = [write_json(out / "fit.json", record), *write_fit_plots(fit, out)]
    print_fit(fit, console)
    console.print("wrote " + ", ".join(str(p) for p in paths), markup=False)
    return fit
