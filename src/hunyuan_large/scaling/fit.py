"""The paper's fitting method: per budget, a quadratic of loss in log size and its minimum;
across budgets, power laws N_opt = N_c · C_min^α and D_opt = D_c · C_min^β; bootstrap intervals.

A curve is a set of runs at one compute budget. Its parabola in x = ln(size) is fitted by least
squares; the vertex is the compute-optimal size at that budget. Anything that would make the
vertex meaningless (fewer than three sizes, a curve that bends the wrong way, a minimum outside
the sampled sizes) is an error, not a fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from ..errors import UserError, require
from ..report import human
from .compute import PAPER_BUDGET, PowerLaw, c_min



class FitError(UserError):
    """Results that cannot be fitted as asked."""


@dataclass(frozen=True)
class Observation:
    """One finished run: its budget (the curve it belongs to), size, tokens and final loss."""

    budget: float
    n_active: float
    tokens: float
    loss: float
    batch_tokens: float = 0.0  # tokens per optimizer step; 0 = no batch-size correction
    name: str = ""


@dataclass(frozen=True)
class Parabola:
    """loss = a·x² + b·x + c in x = ln(size)."""

    a: float
    b: float
    c: float

    @property
    def argmin(self) -> float:
        """The size at the vertex."""
        return float(np.exp(-self.b / (2 * self.a)))

    @property
    def min_loss(self) -> float:
        return self.c - self.b**2 / (4 * self.a)

    def __call__(self, size: np.ndarray | float) -> np.ndarray | float:
        x = np.log(size)
        return self.a * x**2 + self.b * x + self.c


def fit_parabola(sizes: ArrayLike, losses: ArrayLike, label: str, inside: bool = True) -> Parabola:
    """Least-squares quadratic of loss in ln(size); `label` names the curve in errors.

    With `inside`, a vertex outside the sampled sizes is an error: the parabola is then an
    extrapolation and its minimum says little about where the true one is.
    """
    sizes, losses = np.asarray(sizes, float), np.asarray(losses, float)
    distinct = len(np.unique(sizes))
    if distinct < 3:
        raise FitError(f"{label}: {distinct} distinct size(s); a quadratic fit needs at least 3")
    a, b, c = np.polyfit(np.log(sizes), losses, 2)
    p = Parabola(float(a), float(b), float(c))
    if a <= 0:
        raise FitError(f"{label}: the curve is not convex (curvature {a:.3g} <= 0), so it has no "
                       "minimum; the sizes may all lie on one side of the optimum, or noise dominates")
    if inside and not sizes.min() <= p.argmin <= sizes.max():
        raise FitError(f"{label}: the fitted minimum {human(p.argmin)} lies outside the sampled sizes "
                       f"{human(sizes.min())}..{human(sizes.max())}; add sizes on that side")
    return p


@dataclass(frozen=True)
class Curve:
    """One isoFLOP curve: its runs, the parabolas in ln N and ln D, and its C_min."""

    budget: float
    points: tuple[Observation, ...]
    n_fit: Parabola
    d_fit: Parabola
    c_min: float

    @property
    def n_opt(self) -> float:
        return self.n_fit.argmin

    @property
    def d_opt(self) -> float:
        return self.d_fit.argmin

    @property
    def loss_opt(self) -> float:
        return self.n_fit.min_loss


def fit_curve(budget: float, points: list[Observation], b_crit: float | None = None,
              inside: bool = True) -> Curve:
    """Fit one budget's curve; C_min corrects the budget at the curve's optimal loss."""
    label = f"budget {budget:.3g}"
    n = fit_parabola([p.n_active for p in points], [p.loss for p in points], f"{label}, loss vs N", inside)
    d = fit_parabola([p.tokens for p in points], [p.loss for p in points], f"{label}, loss vs D", inside)
    batch = float(np.median([p.batch_tokens for p in points]))
    return Curve(budget, tuple(points), n, d, c_min(budget, batch, n.min_loss, b_crit))


def fit_power_law(compute: ArrayLike, values: ArrayLike) -> PowerLaw:
    """Least squares of ln(value) = ln(coef) + exponent · ln(C)."""
    exponent, log_coef = np.polyfit(np.log(compute), np.log(values), 1)
    return PowerLaw(float(np.exp(log_coef)), float(exponent))


@dataclass
class ScalingFit:
    """Curves, the two power laws, the extrapolation to `target` and bootstrap intervals."""

    curves: list[Curve]
    n_law: PowerLaw
    d_law: PowerLaw
    target: float
    confidence: float = 0.95
    resamples: int = 0  # bootstrap replicates that fitted
    discarded: int = 0  # replicates with a resampled curve that has no minimum
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def n_at_target(self) -> float:
        return self.n_law(self.target)

    @property
    def d_at_target(self) -> float:
        return self.d_law(self.target)

    def estimates(self) -> dict[str, float]:
        """The point estimates, under the same names as `intervals`."""
        return {"n_coef": self.n_law.coef, "n_exponent": self.n_law.exponent,
                "d_coef": self.d_law.coef, "d_exponent": self.d_law.exponent,
                "n_at_target": self.n_at_target, "d_at_target": self.d_at_target}

    def to_dict(self) -> dict:
        """A JSON-able record of the fit."""
        return {
            "target_c_min": self.target, "confidence": self.confidence,
            "bootstrap": {"resamples": self.resamples, "discarded": self.discarded},
            "estimates": self.estimates(),
            "intervals": {k: list(v) for k, v in self.intervals.items()},
            "curves": [{"budget": c.budget, "c_min": c.c_min, "n_opt": c.n_opt, "d_opt": c.d_opt,
                        "loss_opt": c.loss_opt, "points": len(c.points),
                        "n_parabola": [c.n_fit.a, c.n_fit.b, c.n_fit.c],
                        "d_parabola": [c.d_fit.a, c.d_fit.b, c.d_fit.c]} for c in self.curves],
        }


def group_by_budget(observations: list[Observation]) -> dict[float, list[Observation]]:
    """The runs of each budget (each isoFLOP curve), budgets ascending."""
    groups: dict[float, list[Observation]] = {}
    for o in observations:
        groups.setdefault(o.budget, []).append(o)
    return dict(sorted(groups.items()))


def _laws(curves: list[Curve]) -> tuple[PowerLaw, PowerLaw]:
    c = np.array([k.c_min for k in curves])
    return (fit_power_law(c, np.array([k.n_opt for k in curves])),
            fit_power_law(c, np.array([k.d_opt for k in curves])))


def fit_scaling(observations: list[Observation], target: float = PAPER_BUDGET, b_crit: float | None = None,
                bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95) -> ScalingFit:
    """The full method on a set of runs; `target` is the C_min to extrapolate to."""
    require([
        (target > 0, f"the target C_min must be > 0, got {target}"),
        (b_crit is None or b_crit > 0, f"b_crit must be > 0 tokens, got {b_crit}"),
        (bootstrap >= 0, f"bootstrap must be >= 0 resamples, got {bootstrap}"),
        (0 < confidence < 1, f"confidence must be in (0, 1), got {confidence}"),
    ], FitError)
    groups = group_by_budget(observations)
    if len(groups) < 2:
        raise FitError(f"{len(groups)} budget(s) in the results; power laws in compute need at least 2 "
                       "(3 or more for useful intervals)")
    curves = [fit_curve(b, pts, b_crit) for b, pts in groups.items()]
    n_law, d_law = _laws(curves)
    fit = ScalingFit(curves, n_law, d_law, target, confidence)
    if bootstrap:
        _bootstrap(fit, groups, b_crit, bootstrap, np.random.default_rng(seed))
    return fit


def _bootstrap(fit: ScalingFit, groups: dict[float, list[Observation]], b_crit: float | None,
               replicates: int, rng: np.random.Generator) -> None:
    """Resample each curve's runs with replacement, refit everything, take percentile intervals.

    A resample is redrawn until it has three distinct sizes (else no parabola exists); a
    replicate whose resampled curve is not convex is discarded and counted. Minima may leave
    the sampled range here: that spread is what the intervals measure.
    """
    draws: dict[str, list[float]] = {k: [] for k in fit.estimates()}
    for _ in range(replicates):
        curves = []
        try:
            for budget, pts in groups.items():
                curves.append(fit_curve(budget, _resample(pts, rng), b_crit, inside=False))
        except FitError:
            fit.discarded += 1
            continue
        n_law, d_law = _laws(curves)
        rep = ScalingFit(curves, n_law, d_law, fit.target)
        for k, v in rep.estimates().items():
            draws[k].append(v)
    fit.resamples = replicates - fit.discarded
    if fit.resamples:
        tail = 50 * (1 - fit.confidence)
        fit.intervals = {k: tuple(float(q) for q in np.percentile(v, [tail, 100 - tail]))
                         for k, v in draws.items()}


def _resample(points: list[Observation], rng: np.random.Generator) -> list[Observation]:
    while True:  # terminates: the full curve has >= 3 distinct sizes (it was fitted)
        pick = [points[i] for i in rng.integers(0, len(points), len(points))]
        if len({p.n_active for p in pick}) >= 3:
            return pick
