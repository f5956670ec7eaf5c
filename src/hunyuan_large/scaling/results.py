"""Sweep results: one record per run, written by `scaling run`, read by `scaling fit`.

A results file (JSON, or TOML with `[[points]]` tables) holds a list `points`; each needs
`budget`, `n_active`, `tokens` and `loss`, and may give `batch_tokens` (tokens per optimizer
step, for the C_min correction), `name` and `status` (records not "ok" are left out of fits).
Results of runs made elsewhere can be fitted by writing them in this form.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .files import read_table_file, write_json
from .fit import Observation


@dataclass(frozen=True)
class PointResult:
    """What a sweep run recorded about one planned point."""

    name: str
    budget: float
    status: str  # ok | failed
    n_active: int = 0
    tokens: int = 0
    flops: float = 0.0  # exact: accounting.flops_per_token x tokens
    flops_paper: float = 0.0  # 9.59 N D + 2.3e8 D
    loss: float = math.nan  # final validation cross-entropy, nats per token
    batch_tokens: int = 0
    seconds: float = 0.0
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def write_results(path: Path, results: list[PointResult]) -> Path:
    """The sweep's results file (JSON), in the form `load_observations` reads."""
    return write_json(path, {"points": [dataclasses.asdict(r) for r in results]})


def load_observations(path: str | Path) -> tuple[list[Observation], list[str]]:
    """The fittable records of a results file, and the names of those left out (not ok)."""
    raw = read_table_file(path, "results")
    records = raw.get("points")
    if not isinstance(records, list) or not records:
        raise UserError(f"{path} has no 'points' list of results")
    observations, skipped = [], []
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise UserError(f"{path}: result #{i} is not a table")
        name = str(r.get("name", f"#{i}"))
        if r.get("status", "ok") != "ok":
            skipped.append(name)
            continue
        try:
            obs = Observation(float(r["budget"]), float(r["n_active"]), float(r["tokens"]), float(r["loss"]),
                              float(r.get("batch_tokens", 0)), name)
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{path}: result {name} needs numeric budget, n_active, tokens and loss ({e})") from None
        if not all(math.isfinite(v) and v > 0 for v in (obs.budget, obs.n_active, obs.tokens, obs.loss)):
            raise UserError(f"{path}: result {name} has a non-positive or non-finite value")
        observations.append(obs)
    return observations, skipped
