"""Run configuration: typed sections read from TOML, overridable as `--section.key value`.

The defaults are the embedded demo (`make demo`); `configs/demo.toml` spells them out.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from .. import tomlio
from ..config import ModelConfig
from ..errors import UserError, require
from ..tokenizer import MIN_VOCAB_SIZE

_MODEL_FIELDS = {f.name for f in fields(ModelConfig)} - {"extra"}
LONG = "long"  # the category of long documents (by length, from any source) in a stage's mixture


class RunConfigError(UserError):
    """A bad run-configuration file or override."""


@dataclass
class ModelSection:
    """The architecture: a preset plus field overrides, or a model folder to start from."""

    preset: str = "small"
    init_from: str = ""  # an HF model folder (e.g. an exported run) to continue from
    overrides: dict[str, Any] = field(default_factory=lambda: dict(
        hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=1,
        intermediate_size=384, num_experts=8, max_position_embeddings=1024,
    ))


@dataclass
class TokenizerSection:
    """An existing tokenizer folder, or the size of a BPE vocabulary to train on the data."""

    path: str = ""  # a folder with hy.tiktoken or tokenizer.json (e.g. an imported model); empty: train one
    vocab_size: int = 4096  # ranks + 209 special tokens
    train_max_mb: float = 32.0  # how much of the training text the merges are learned from


@dataclass
class DataSection:
    """Sources per category, mixtures, split and sequence length."""

    sources: dict[str, list[str]] = field(default_factory=lambda: {"code": ["stdlib"]})
    mixture: dict[str, float] = field(default_factory=dict)  # empty: equal weights
    anneal_mixture: dict[str, float] = field(default_factory=dict)  # empty: same as mixture
    val_fraction: float = 0.03
    text_field: str = "text"
    seq_len: int = 256
    workers: int = 0  # tokenizer processes; 0 = one per core


@dataclass
class StageSection:
    """One context-extension stage (`[[train.stages]]`), run after the steps before it."""

    seq_len: int = 0
    tokens: int = 0  # trained in this stage; steps = ceil(tokens / tokens per step)
    rope_theta: float = 0.0  # 0: keep the model's
    rope_alpha: float = 0.0  # NTK-alpha (rope_scaling {"type": "dynamic", "alpha": a}); 0: keep the model's
    mixture: dict[str, float] = field(default_factory=dict)  # empty: data.mixture; "long" = long documents
    long_min_tokens: int = 0  # documents at least this long are "long"; 0: the previous stage's seq_len
    long_from: list[str] = field(default_factory=list)  # categories long documents come from; empty: all
    batch_size: int = 0  # 0: the previous tokens per step (batch_size x seq_len), at least 1 row
    lr: float = 0.0  # peak of this stage's warmup + cosine decay to decay_floor; 0: train.lr
    warmup_steps: int = 0


@dataclass
class TrainSection:
    """Optimiser, schedule, routing, losses, and the loop's cadence."""

    steps: int = 500
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 4e-3
    warmup_steps: int = 50
    decay: str = "cosine"  # cosine | linear | constant
    decay_floor: float = 0.3  # end of the decay, as a fraction of the peak
    anneal_fraction: float = 0.05  # final share of tokens annealed linearly...
    anneal_floor: float = 0.1  # ...down to this fraction of the peak
    expert_lr_rule: str = "fixed"  # fixed (expert_lr_scale) | surge (from b_noise)
    expert_lr_scale: float = 0.31
    b_noise: float = 0.0  # noise-scale batch in tokens, for the surge rule
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    aux_loss_coef: float = 0.01
    z_loss_coef: float = 0.0
    routing: str = "recycle"  # dropless | drop | recycle
    capacity_factor: float = 1.25
    device: str = "auto"
    seed: int = 0
    log_every: int = 10
    eval_every: int = 100
    eval_tokens: int = 32768
    save_every: int = 250
    keep_last: int = 2
    max_bad_steps: int = 5
    resume: bool = True  # continue from the newest checkpoint of the run folder
    stages: list[StageSection] = field(default_factory=list)  # context extension after `steps`


@dataclass
class ParallelSection:
    """Scale-out under torchrun: FSDP2 over all ranks, experts sharded over `ep` ranks."""

    ep: int = 1  # expert-parallel degree: divides the world size and the number of experts
    timeout_s: int = 600  # a collective waiting longer than this ends the job


@dataclass
class RunConfig:
    """Everything a training run needs; saved resolved in the run folder."""

    run_dir: str = "runs/demo"
    model: ModelSection = field(default_factory=ModelSection)
    tokenizer: TokenizerSection = field(default_factory=TokenizerSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    parallel: ParallelSection = field(default_factory=ParallelSection)

    # ----- reading -----------------------------------------------------------------------
    @classmethod
    def from_toml(cls, path: str | Path | None, overrides: list[str] | None = None) -> "RunConfig":
        """Defaults, then the file (if any), then `--section.key value` overrides."""
        return cls.from_dict(read_toml(path, overrides))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RunConfig":
        cfg = cls()
        for key, value in raw.items():
            if key == "run_dir":
                cfg.run_dir = str(value)
            elif key == "model":
                cfg.model = _model_section(value)
            elif key == "train":
                cfg.train = _train_section(value)
            elif key in ("tokenizer", "data", "parallel"):
                setattr(cfg, key, read_section(type(getattr(cfg, key)), key, value))
            else:
                raise RunConfigError(f"unknown config section {key!r} "
                                     "(allowed: run_dir, model, tokenizer, data, train, parallel)")
        cfg.validate()
        return cfg

    def validate(self) -> None:
        t = self.train
        checks = [
            (t.steps >= 1 or (t.steps == 0 and bool(t.stages)),
             f"train.steps must be >= 1 (or 0 with [[train.stages]]), got {t.steps}"),
            (t.batch_size >= 1 and t.grad_accum >= 1, "train.batch_size and train.grad_accum must be >= 1"),
            (t.lr > 0, f"train.lr must be > 0, got {t.lr}"),
            (0 <= t.warmup_steps < max(t.steps, 1), f"train.warmup_steps must be in [0, steps), got {t.warmup_steps}"),
            (t.decay in ("cosine", "linear", "constant"), f"train.decay {t.decay!r} is not cosine, linear or constant"),
            (0 <= t.anneal_fraction < 1, f"train.anneal_fraction must be in [0, 1), got {t.anneal_fraction}"),
            (t.expert_lr_rule in ("fixed", "surge"), f"train.expert_lr_rule {t.expert_lr_rule!r} is not fixed or surge"),
            (t.expert_lr_rule != "surge" or t.b_noise > 0, "train.expert_lr_rule = 'surge' needs train.b_noise > 0"),
            (t.routing in ("dropless", "drop", "recycle"), f"train.routing {t.routing!r} is not dropless, drop or recycle"),
            (t.capacity_factor > 0, f"train.capacity_factor must be > 0, got {t.capacity_factor}"),
            (t.grad_clip >= 0, f"train.grad_clip must be >= 0 (0: no clipping), got {t.grad_clip}"),
            (0 <= t.beta1 < 1 and 0 <= t.beta2 < 1, f"train.beta1 and train.beta2 must be in [0, 1), got {t.beta1}, {t.beta2}"),
            (t.eps > 0, f"train.eps must be > 0, got {t.eps}"),
            (t.weight_decay >= 0, f"train.weight_decay must be >= 0, got {t.weight_decay}"),
            (t.expert_lr_scale > 0, f"train.expert_lr_scale must be > 0, got {t.expert_lr_scale}"),
            (t.aux_loss_coef >= 0 and t.z_loss_coef >= 0, "train.aux_loss_coef and train.z_loss_coef must be >= 0"),
            (t.seed >= 0, f"train.seed must be >= 0, got {t.seed}"),
            *((getattr(t, k) >= 1, f"train.{k} must be >= 1, got {getattr(t, k)}")
              for k in ("log_every", "eval_every", "save_every", "max_bad_steps")),
            (t.eval_tokens >= 0 and t.keep_last >= 0, "train.eval_tokens and train.keep_last must be >= 0"),
            (_device_available(t.device), f"train.device {t.device!r} is not available here "
                                           f"(auto, cpu{', cuda' if torch.cuda.is_available() else ''})"),
            (self.data.seq_len >= 2, f"data.seq_len must be >= 2, got {self.data.seq_len}"),
            (bool(self.data.sources), "data.sources must name at least one category"),
            (0 <= self.data.val_fraction < 1, f"data.val_fraction must be in [0, 1), got {self.data.val_fraction}"),
            (self.parallel.ep >= 1, f"parallel.ep must be >= 1, got {self.parallel.ep}"),
            (self.parallel.timeout_s >= 1, f"parallel.timeout_s must be >= 1, got {self.parallel.timeout_s}"),
            (bool(self.tokenizer.path) or self.tokenizer.vocab_size >= MIN_VOCAB_SIZE,
             f"tokenizer.vocab_size must be >= {MIN_VOCAB_SIZE} (256 bytes + the special tokens), "
             f"got {self.tokenizer.vocab_size}"),
            (self.data.workers >= 0, f"data.workers must be >= 0, got {self.data.workers}"),
        ]
        require(checks, RunConfigError)
        for i, stage in enumerate(t.stages):
            self._validate_stage(i, stage)
        if not self.model.init_from:  # a bad MoE shape fails here, before any data work
            try:
                self.model_config(self.tokenizer.vocab_size, 0)
            except UserError as e:
                raise RunConfigError(f"[model]: {e}") from None

    def _validate_stage(self, i: int, s: StageSection) -> None:
        name = f"train.stages[{i}]"
        cats = set(self.data.sources)
        require([
            (s.seq_len >= 2, f"{name}.seq_len must be >= 2, got {s.seq_len}"),
            (s.tokens >= 1, f"{name}.tokens must be >= 1, got {s.tokens}"),
            (s.rope_theta >= 0 and s.rope_alpha >= 0, f"{name}.rope_theta and rope_alpha must be >= 0 (0: keep)"),
            (s.batch_size >= 0 and s.lr >= 0 and s.warmup_steps >= 0,
             f"{name}.batch_size, lr and warmup_steps must be >= 0"),
            (s.long_min_tokens >= 0, f"{name}.long_min_tokens must be >= 0, got {s.long_min_tokens}"),
            (set(s.mixture) <= cats | {LONG}, f"{name}.mixture names unknown categories "
             f"{sorted(set(s.mixture) - cats - {LONG})} (have: {', '.join(sorted(cats | {LONG}))})"),
            (set(s.long_from) <= cats, f"{name}.long_from names unknown categories "
             f"{sorted(set(s.long_from) - cats)} (have: {', '.join(sorted(cats))})"),
            (LONG not in cats, f"data.sources may not name a category {LONG!r}: it is the long documents' name"),
        ], RunConfigError)

    # ----- writing -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        model = {"preset": self.model.preset, "init_from": self.model.init_from, **self.model.overrides}
        return {"run_dir": self.run_dir, "model": model, "tokenizer": dataclasses.asdict(self.tokenizer),
                "data": dataclasses.asdict(self.data), "train": dataclasses.asdict(self.train),
                "parallel": dataclasses.asdict(self.parallel)}

    def to_toml(self) -> str:
        d = self.to_dict()
        return f"run_dir = {tomlio.format_value(d.pop('run_dir'))}\n\n" + tomlio.dumps(d)

    def model_config(self, vocab_size: int, pad_token_id: int) -> ModelConfig:
        """The ModelConfig of this run (routing and capacity from the train section)."""
        if self.model.init_from:
            base = ModelConfig.load(self.model.init_from)
            cfg = base.replace(**self.model.overrides)
        else:
            cfg = ModelConfig.from_preset(self.model.preset, **self.model.overrides)
            cfg = cfg.replace(vocab_size=vocab_size, pad_token_id=pad_token_id, torch_dtype="float32",
                              max_position_embeddings=max(cfg.max_position_embeddings, self.data.seq_len))
        cfg = cfg.replace(capacity_factor=self.train.capacity_factor)
        cfg.set_routing_policy(self.train.routing)
        return cfg


def _device_available(device: str) -> bool:
    """Whether torch can use `device` here ('auto' always can)."""
    try:
        d = torch.device(device) if device != "auto" else None
    except RuntimeError:
        return False
    if d is None or d.type == "cpu":
        return True
    if d.type == "cuda":
        return torch.cuda.is_available() and (d.index or 0) < torch.cuda.device_count()
    if d.type == "mps":
        return torch.backends.mps.is_available()
    return False


def read_toml(path: str | Path | None, overrides: list[str] | None = None) -> dict[str, Any]:
    """A run config file's tables (none without a file) with `--section.key value` overrides applied."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise RunConfigError(f"config file {path} does not exist")
        try:
            raw = tomlio.loads(path.read_text())
        except tomlio.tomllib.TOMLDecodeError as e:
            raise RunConfigError(f"{path} is not valid TOML: {e}") from None
    for key, value in parse_overrides(overrides or []):
        section, _, name = key.partition(".")
        if name:
            raw.setdefault(section, {})[name] = value
        else:
            raw[section] = value
    return raw


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """['--train.lr', '3e-4', '--data.seq_len=512'] -> [('train.lr', 0.0003), ...]."""
    out, i = [], 0
    while i < len(items):
        item = items[i]
        if not item.startswith("--"):
            raise RunConfigError(f"expected --section.key, got {item!r}")
        key, eq, value = item[2:].partition("=")
        if not eq:
            if i + 1 >= len(items):
                raise RunConfigError(f"override {item} has no value")
            i += 1
            value = items[i]
        out.append((key, tomlio.parse_value(value)))
        i += 1
    return out


def read_section(kind: type, name: str, values: dict[str, Any]):
    """A `kind` dataclass from a TOML table: unknown keys and wrongly typed values are one error each."""
    if not isinstance(values, dict):
        raise RunConfigError(f"[{name}] must be a table")
    allowed = {f.name: f for f in fields(kind)}
    unknown = set(values) - set(allowed)
    if unknown:
        raise RunConfigError(f"unknown key {name}.{sorted(unknown)[0]} (allowed: {', '.join(allowed)})")
    section = kind()
    for key, value in values.items():
        default = getattr(section, key)
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if default is not None and not isinstance(value, type(default)):
            raise RunConfigError(f"{name}.{key} must be {type(default).__name__}, got {value!r}")
        setattr(section, key, value)
    return section


def _train_section(values: dict[str, Any]) -> TrainSection:
    """[train], with its `[[train.stages]]` tables read as StageSections."""
    if not isinstance(values, dict):
        raise RunConfigError("[train] must be a table")
    stages = values.get("stages", [])
    if not isinstance(stages, list):
        raise RunConfigError("train.stages must be an array of tables ([[train.stages]])")
    section = read_section(TrainSection, "train", {k: v for k, v in values.items() if k != "stages"})
    section.stages = [read_section(StageSection, f"train.stages[{i}]", s) for i, s in enumerate(stages)]
    return section


def _model_section(values: dict[str, Any]) -> ModelSection:
    """[model]: naming a preset or init_from starts from it; other keys override fields of it."""
    if not isinstance(values, dict):
        raise RunConfigError("[model] must be a table")
    if "preset" in values or "init_from" in values:
        section = ModelSection(preset=str(values.get("preset", "small")),
                               init_from=str(values.get("init_from", "")), overrides={})
    else:
        section = ModelSection()
    for key, value in values.items():
        if key in ("preset", "init_from"):
            continue
        if key not in _MODEL_FIELDS:
            raise RunConfigError(f"unknown key model.{key} (preset, init_from or a config.json field)")
        section.overrides[key] = value
    return section
