"""An ablation suite: a base run config and sets of arms, each arm changing one factor of it.

A suite file (configs/ablate.toml) holds `out` (the ablation folder), `[base]` (a run config, as
in configs/*.toml: the reference recipe), `[[sets]]` (name, the paper's claim, seeds, whether the
arms are matched in activated parameters, and `arms`: each a name plus `model`/`train` tables
that override the base) and `[quick]` (what `--quick` changes: `out`, `base` overrides, fewer
`seeds` per set). The first arm of a set is its reference. Every arm of a set runs the same
seeds; a seed fixes the initialisation, the data order and the routing's random stream, so arms
of one seed see the same tokens in the same order.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..accounting import closed_form_params
from ..config import ModelConfig, padded_vocab
from ..errors import UserError
from ..scaling.files import read_table_file
from ..train import RunConfig

ARM_SECTIONS = ("model", "train")


class SuiteError(UserError):
    """A suite file that cannot be planned."""


@dataclass(frozen=True)
class Arm:
    """One variant of a set: its name and the base fields it overrides."""

    name: str
    overrides: dict[str, dict[str, Any]]  # {"model": {...}, "train": {...}}

    @property
    def factor(self) -> dict[str, Any]:
        """The overridden fields as dotted keys: {'train.routing': 'drop', ...}."""
        return {f"{sec}.{k}": v for sec, table in self.overrides.items() for k, v in table.items()}


@dataclass(frozen=True)
class AblationSet:
    """Arms that differ from the reference (the first) in one factor, over the same seeds."""

    name: str
    claim: str
    arms: tuple[Arm, ...]
    seeds: int
    match_active: bool  # arms' intermediate_size solved to the reference's activated parameters


@dataclass(frozen=True)
class PlannedRun:
    """One training run of the suite: a set, an arm, a seed, and its resolved run config."""

    set: str
    arm: str
    seed: int
    folder: str  # shared by every (set, arm, seed) that resolves to the same config
    run: dict  # RunConfig.to_dict() without run_dir
    active: int
    total: int


@dataclass(frozen=True)
class Suite:
    out: Path
    base: dict
    sets: tuple[AblationSet, ...]

    @classmethod
    def load(cls, path: str | Path, quick: bool = False) -> "Suite":
        """Read a suite file; `quick` applies its [quick] table."""
        raw = read_table_file(path, "ablation suite")
        unknown = set(raw) - {"out", "base", "sets", "quick"}
        if unknown:
            raise SuiteError(f"{path}: unknown key {sorted(unknown)[0]!r} (allowed: out, base, sets, quick)")
        out, base = raw.get("out", "runs/ablate"), raw.get("base", {})
        seeds: dict[str, int] = {}
        if quick:
            q = raw.get("quick")
            if not isinstance(q, dict):
                raise SuiteError(f"{path} has no [quick] table, so --quick is not defined for it")
            out = q.get("out", f"{out}-quick")
            base = merge(base, q.get("base", {}))
            seeds = q.get("seeds", {})
        sets = tuple(_read_set(s, i, path) for i, s in enumerate(raw.get("sets", [])))
        if not sets:
            raise SuiteError(f"{path} has no [[sets]]")
        names = [s.name for s in sets]
        if len(set(names)) != len(names):
            raise SuiteError(f"{path}: set names must be unique, got {names}")
        for name, n in seeds.items():
            if name not in names:
                raise SuiteError(f"{path}: quick.seeds names set {name!r}, which is not one of {', '.join(names)}")
            if not isinstance(n, int) or n < 1:
                raise SuiteError(f"{path}: quick.seeds.{name} must be an integer >= 1, got {n!r}")
        sets = tuple(AblationSet(s.name, s.claim, s.arms, seeds.get(s.name, s.seeds), s.match_active)
                     for s in sets)
        return cls(Path(out), base, sets)

    def plan(self) -> list[PlannedRun]:
        """Every (set, arm, seed) resolved; identical configs share one folder (trained once)."""
        runs, folders = [], {}
        for s in self.sets:
            resolved = [self._resolve(s, arm) for arm in s.arms]
            for seed in range(s.seeds):
                for arm, (cfg, active, total) in zip(s.arms, resolved):
                    cfg = copy.deepcopy(cfg)
                    cfg["train"]["seed"] = seed
                    key = config_key(cfg)
                    folder = folders.setdefault(key, f"{s.name}-{slug(arm.name)}-s{seed}")
                    runs.append(PlannedRun(s.name, arm.name, seed, folder, cfg, active, total))
        return runs

    def _resolve(self, s: AblationSet, arm: Arm) -> tuple[dict, int, int]:
        """An arm's resolved run config (seed 0) and its activated and total parameters."""
        cfg = _run_config(merge(self.base, arm.overrides), f"set {s.name}, arm {arm.name}")
        if s.match_active and arm is not s.arms[0]:
            reference = _run_config(merge(self.base, s.arms[0].overrides), f"set {s.name}, arm {s.arms[0].name}")
            width = match_width(model_of(cfg), params(model_of(reference))[0])
            cfg.model.overrides["intermediate_size"] = width
            cfg = _run_config(cfg.to_dict(), f"set {s.name}, arm {arm.name}")
        d = cfg.to_dict()
        d.pop("run_dir")
        return (d, *params(model_of(cfg)))


def _run_config(raw: dict, where: str) -> RunConfig:
    try:
        return RunConfig.from_dict({k: v for k, v in raw.items() if k != "run_dir"})
    except UserError as e:
        raise SuiteError(f"{where}: {e}") from None


def model_of(cfg: RunConfig) -> ModelConfig:
    """The ModelConfig a run will train (its vocabulary the tokenizer's, padded)."""
    return cfg.model_config(padded_vocab(cfg.tokenizer.vocab_size), 0)


def params(model: ModelConfig) -> tuple[int, int]:
    """(activated, total) parameters."""
    p = closed_form_params(model)
    return p.active, p.total


def match_width(model: ModelConfig, target_active: int) -> int:
    """The expert width (intermediate_size) whose activated parameter count is nearest the target.

    Activated parameters are linear in the width (shared + k routed SwiGLU units per layer), so
    two evaluations give the slope and the nearest integer is exact.
    """
    f = model.intermediate_size
    a0, a1 = params(model.replace(intermediate_size=f))[0], params(model.replace(intermediate_size=f + 1))[0]
    return max(1, round(f + (target_active - a0) / (a1 - a0)))


def _read_set(raw: Any, i: int, path: str | Path) -> AblationSet:
    where = f"{path}: sets[{i}]"
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise SuiteError(f"{where} must be a table with a name")
    unknown = set(raw) - {"name", "claim", "arms", "seeds", "match_active"}
    if unknown:
        raise SuiteError(f"{where}: unknown key {sorted(unknown)[0]!r} "
                         "(allowed: name, claim, arms, seeds, match_active)")
    arms = []
    for j, a in enumerate(raw.get("arms", [])):
        if not isinstance(a, dict) or not isinstance(a.get("name"), str):
            raise SuiteError(f"{where}.arms[{j}] must be a table with a name")
        bad = set(a) - {"name", *ARM_SECTIONS}
        if bad:
            raise SuiteError(f"{where}.arms[{j}]: unknown key {sorted(bad)[0]!r} (allowed: name, model, train)")
        arms.append(Arm(a["name"], {k: dict(a[k]) for k in ARM_SECTIONS if k in a}))
    if len(arms) < 2:
        raise SuiteError(f"{where} ({raw['name']}) needs at least two arms")
    if len({slug(a.name) for a in arms}) != len(arms):
        raise SuiteError(f"{where} ({raw['name']}): arm names must differ")
    seeds = raw.get("seeds", 1)
    if not isinstance(seeds, int) or seeds < 1:
        raise SuiteError(f"{where} ({raw['name']}): seeds must be an integer >= 1, got {seeds!r}")
    return AblationSet(raw["name"], str(raw.get("claim", "")), tuple(arms), seeds, bool(raw.get("match_active", False)))


def merge(base: dict, over: dict) -> dict:
    """A deep copy of base with over's tables merged in (over's values win)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def config_key(run: dict) -> str:
    return hashlib.sha256(json.dumps(run, sort_keys=True).encode()).hexdigest()[:16]


def slug(name: str) -> str:
    """A folder-safe form of an arm name: 'recycle cf1.25' -> 'recycle-cf1.25'."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-").lower()
