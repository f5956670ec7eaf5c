"""`hunyuan scaling plan`: the isoFLOP grid — for each budget, several (N_active, D) runs.

Each budget's curve is centred on the model whose tokens-per-parameter ratio D/N is closest to
`tokens_per_param` (Chinchilla's ~20 by default) and spans `spread` x in activated parameters,
with `points` sizes spaced evenly in log N. Sizes snap to the models the shape rule can build;
D is what the budget leaves for that model, rounded up to whole optimizer steps. Every point
carries a complete run config, so running it needs nothing but the plan.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..accounting import closed_form_params
from ..config import ModelConfig, padded_vocab
from ..errors import UserError
from ..report import human
from ..tokenizer import load_tokenizer
from ..train import RunConfig
from .compute import training_flops
from .files import read_table_file, write_json
from .grid import GridSpec
from .shape import ShapeRule

PLAN_VERSION = 1


class PlanError(UserError):
    """A grid that cannot be planned, or a bad plan file."""


@dataclass(frozen=True)
class PlanPoint:
    """One run of the sweep."""

    name: str  # also its folder under the sweep folder
    budget: float  # the curve it belongs to, in FLOPs
    n_active: int
    tokens: int
    steps: int
    flops: float  # of `tokens`, counted in the plan's compute mode
    run: dict[str, Any]  # a complete RunConfig dict (RunConfig.from_dict)


@dataclass(frozen=True)
class Plan:
    """The sweep: its budgets, the rules that placed the points, and the points."""

    budgets: list[float]
    shape: ShapeRule
    grid: GridSpec
    vocab_size: int  # the padded vocabulary every point is planned with
    points: list[PlanPoint]

    def to_dict(self) -> dict[str, Any]:
        return {"version": PLAN_VERSION,
                "sweep": {"budgets": self.budgets, "vocab_size": self.vocab_size,
                          "shape": dataclasses.asdict(self.shape), "grid": dataclasses.asdict(self.grid)},
                "points": [dataclasses.asdict(p) for p in self.points]}

    def save(self, path: str | Path) -> Path:
        """Write the plan as JSON."""
        return write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        """Read a plan written by `save` (JSON), or the same structure as TOML."""
        raw = read_table_file(path, "plan")
        try:
            sweep = raw["sweep"]
            plan = cls([float(b) for b in sweep["budgets"]], ShapeRule(**sweep["shape"]),
                       GridSpec(**sweep["grid"]), int(sweep["vocab_size"]),
                       [PlanPoint(**p) for p in raw["points"]])
        except (KeyError, TypeError) as e:
            raise PlanError(f"{path} is not a scaling plan ({type(e).__name__}: {e})") from None
        if not plan.points:
            raise PlanError(f"{path} has no points")
        return plan


def planned_vocab_size(base: RunConfig) -> int:
    """The vocabulary the trainer will build: the tokenizer's size padded to a multiple of 64.

    A tokenizer still to be trained is assumed to reach its requested size; `scaling run`
    checks that it did before training anything.
    """
    if base.tokenizer.path:
        size = load_tokenizer(base.tokenizer.path).vocab_size
    else:
        size = base.tokenizer.vocab_size
    return padded_vocab(size)


def make_plan(budgets: list[float], base: RunConfig, shape: ShapeRule = ShapeRule(),
              grid: GridSpec = GridSpec()) -> Plan:
    """The isoFLOP grid for `budgets` (FLOPs), every point a complete run of `base`."""
    if not budgets or any(not (b > 0 and math.isfinite(b)) for b in budgets):
        raise PlanError(f"budgets must be positive FLOP counts, got {budgets}")
    budgets = sorted(set(budgets))
    if base.model.init_from:
        raise PlanError("a sweep trains every size from scratch; the base config must not set model.init_from")
    vocab = planned_vocab_size(base)
    ladder = shape.ladder(base.model_config(vocab, pad_token_id=0))
    seq_len = base.data.seq_len
    step_tokens = base.train.batch_size * base.train.grad_accum * seq_len
    points = [_point(budget, cfg, steps, base, shape, grid, step_tokens)
              for budget in budgets for cfg, steps in _curve(budget, ladder, grid, seq_len, step_tokens)]
    if len({p.name for p in points}) < len(points):
        raise PlanError(f"budgets {budgets} are too close: they agree to 3 significant digits")
    return Plan(budgets, shape, grid, vocab, points)


def _curve(budget: float, ladder: list[tuple[int, ModelConfig]], grid: GridSpec, seq_len: int,
           step_tokens: int) -> list[tuple[ModelConfig, int]]:
    """The (model, optimizer steps) pairs of one budget's curve."""
    per_token = [training_flops(cfg, seq_len, 1.0, grid.compute) for _, cfg in ladder]
    sizes = np.array([n for n, _ in ladder], float)
    tokens = budget / np.array(per_token)
    min_tokens = grid.min_steps * step_tokens
    if tokens[0] < min_tokens:
        n0, cfg0 = ladder[0]
        raise PlanError(
            f"budget {budget:.3g} FLOPs is too small for any configurable model: the smallest "
            f"(hidden {cfg0.hidden_size}, {cfg0.num_hidden_layers} layer(s), {human(n0)} activated) "
            f"would get {tokens[0]:.3g} tokens, under {grid.min_steps} steps of {step_tokens} tokens; "
            "raise the budget, or lower the batch, seq_len or min_steps")
    centre = sizes[np.argmin(np.abs(np.log(tokens / sizes / grid.tokens_per_param)))]
    targets = centre * grid.spread ** np.linspace(-0.5, 0.5, grid.points)
    if targets[-1] > sizes[-1] * 1.5:
        raise PlanError(f"budget {budget:.3g}: a {human(targets[-1])}-parameter point is beyond the shape "
                        f"rule's largest model ({human(sizes[-1])}); raise max_hidden")
    picks = sorted({int(np.argmin(np.abs(np.log(sizes / t)))) for t in targets})
    if len(picks) < 3:
        raise PlanError(f"budget {budget:.3g}: the {grid.points} targets around {human(centre)} snap to "
                        f"only {len(picks)} distinct model(s); raise spread or lower the shape's head_dim")
    curve = []
    for i in picks:
        steps = math.ceil(tokens[i] / step_tokens)
        if steps < grid.min_steps:
            raise PlanError(f"budget {budget:.3g}: the {human(sizes[i])}-parameter point would train "
                            f"{steps} steps (< min_steps {grid.min_steps}); raise the budget or lower spread")
        curve.append((ladder[i][1], steps))
    return curve


def _point(budget: float, cfg: ModelConfig, steps: int, base: RunConfig, shape: ShapeRule,
           grid: GridSpec, step_tokens: int) -> PlanPoint:
    n_active = closed_form_params(cfg).active
    tokens = steps * step_tokens
    name = f"C{budget:.2e}_N{human(n_active)}"
    run = base.to_dict()
    run["run_dir"] = name
    run["model"] = {"preset": base.model.preset, **base.model.overrides, **shape.fields(cfg.hidden_size)}
    # The base's warmup share carries over; only the final validation loss is needed.
    warmup = min(steps - 1, round(steps * base.train.warmup_steps / base.train.steps))
    run["train"].update(steps=steps, warmup_steps=warmup, eval_every=steps)
    flops = training_flops(cfg, base.data.seq_len, tokens, grid.compute)
    return PlanPoint(name, budget, n_active, tokens, steps, flops, run)
