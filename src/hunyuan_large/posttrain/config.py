"""Post-training run configuration: typed sections from TOML, overridable as `--section.key value`.

Defaults are the paper's SFT recipe (3 epochs, LR 2e-5 -> 2e-6, attention dropout 0.1, hidden
dropout 0.2); `configs/sft.toml`, `dpo.toml` and `rm.toml` run them on a tiny model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import tomlio
from ..errors import require
from ..train.config import ParallelSection, RunConfigError, read_section, read_toml


@dataclass
class InitSection:
    """The model folder to start from and the dropout used while training it."""

    init: str = ""  # a model folder (config.json, weights, tokenizer)
    attention_dropout: float = 0.1
    hidden_dropout: float = 0.2


@dataclass
class PostDataSection:
    """jsonl files and the packed/truncated sequence length."""

    train: list[str] = field(default_factory=list)
    seq_len: int = 1024
    strict: bool = False  # stop at the first bad line instead of skipping it


@dataclass
class PostTrainSection:
    """Optimiser, schedule and cadence (read by build_optimizer, as pre-training's [train])."""

    epochs: int = 3
    steps: int = 0  # 0: epochs x steps per epoch
    batch_size: int = 8  # packed rows (sft) or pairs (dpo, rm) per micro-batch
    grad_accum: int = 1
    lr: float = 2e-5
    lr_floor: float = 0.1  # the decay ends at lr x lr_floor (2e-6)
    warmup_steps: int = 0
    decay: str = "cosine"  # cosine | linear | constant
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    aux_loss_coef: float = 0.01  # the router's load-balancing loss (MoE models)
    expert_lr_scale: float = 1.0
    routing: str = "dropless"
    device: str = "auto"
    seed: int = 0
    log_every: int = 10
    save_every: int = 100
    keep_last: int = 2
    resume: bool = True
    plots: bool = True  # PNGs at the end of the run (matplotlib takes seconds)
    mfu: bool = True  # log MFU against a peak GEMM measured at the start (seconds on a CPU)


@dataclass
class DPOSection:
    """Single-stage DPO: -log sigmoid(beta * delta) + nll_weight * NLL(chosen), EMA of the policy."""

    beta: float = 0.1
    nll_weight: float = 0.2
    loss: str = "sigmoid"  # sigmoid | ipo
    length_normalize: bool = False  # log-probs as means over response tokens instead of sums
    ema_decay: float = 0.99
    export: str = "ema"  # ema | policy: which weights the run's model folder gets
    # Online pairs (online.py): off while online_every = 0.
    online_every: int = 0  # steps between sampling rounds
    online_prompts_file: list[str] = field(default_factory=list)  # jsonl of {"prompt": [messages]}
    online_prompts: int = 4  # prompts per round
    online_n: int = 4  # samples per prompt
    online_fraction: float = 0.5  # share of each micro-batch's pairs taken from the latest round
    online_min_gap: float = 0.0  # skip a prompt whose best and worst scores are closer
    online_max_new_tokens: int = 32
    online_temperature: float = 1.0
    reward_model: str = ""  # a folder written by `hunyuan rm`
    sample_from: str = "ema"  # ema | policy


@dataclass
class RMSection:
    """Bradley-Terry reward model: -log sigmoid(r_c - r_r) + center_coef * mean((r_c + r_r)^2)."""

    center_coef: float = 0.01


SECTIONS = {"model": InitSection, "data": PostDataSection, "train": PostTrainSection, "dpo": DPOSection,
            "rm": RMSection, "parallel": ParallelSection}


@dataclass
class PostConfig:
    """Everything a post-training run needs; saved resolved in the run folder."""

    run_dir: str = "runs/post"
    model: InitSection = field(default_factory=InitSection)
    data: PostDataSection = field(default_factory=PostDataSection)
    train: PostTrainSection = field(default_factory=PostTrainSection)
    dpo: DPOSection = field(default_factory=DPOSection)
    rm: RMSection = field(default_factory=RMSection)
    parallel: ParallelSection = field(default_factory=ParallelSection)  # sft under torchrun

    @classmethod
    def from_toml(cls, path: str | Path, overrides: list[str] | None = None) -> "PostConfig":
        """Defaults, then the file, then `--section.key value` overrides."""
        return cls.from_dict(read_toml(path, overrides))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "PostConfig":
        cfg = cls()
        for key, value in raw.items():
            if key == "run_dir":
                cfg.run_dir = str(value)
            elif key in SECTIONS:
                setattr(cfg, key, read_section(SECTIONS[key], key, value))
            else:
                raise RunConfigError(f"unknown config section {key!r} (allowed: run_dir, {', '.join(SECTIONS)})")
        cfg.validate()
        return cfg

    def validate(self) -> None:
        t, m, d = self.train, self.model, self.dpo
        require([
            (bool(m.init), "model.init must name a model folder to start from"),
            (bool(self.data.train), "data.train must list at least one jsonl file"),
            (self.data.seq_len >= 2, f"data.seq_len must be >= 2, got {self.data.seq_len}"),
            (t.epochs >= 1 and t.steps >= 0, "train.epochs must be >= 1 and train.steps >= 0"),
            (t.batch_size >= 1 and t.grad_accum >= 1, "train.batch_size and train.grad_accum must be >= 1"),
            (t.lr > 0 and 0 < t.lr_floor <= 1, "train.lr must be > 0 and train.lr_floor in (0, 1]"),
            (t.decay in ("cosine", "linear", "constant"), f"train.decay {t.decay!r} is not cosine, linear or constant"),
            (t.routing in ("dropless", "drop", "recycle"), f"train.routing {t.routing!r} is not dropless, drop or recycle"),
            (0 <= m.attention_dropout < 1 and 0 <= m.hidden_dropout < 1, "model dropouts must be in [0, 1)"),
            (d.loss in ("sigmoid", "ipo"), f"dpo.loss {d.loss!r} is not sigmoid or ipo"),
            (d.export in ("ema", "policy"), f"dpo.export {d.export!r} is not ema or policy"),
            (0 <= d.ema_decay < 1, f"dpo.ema_decay must be in [0, 1), got {d.ema_decay}"),
            (d.sample_from in ("ema", "policy"), f"dpo.sample_from {d.sample_from!r} is not ema or policy"),
            (d.online_every == 0 or (d.reward_model and d.online_prompts_file),
             "dpo.online_every > 0 needs dpo.reward_model and dpo.online_prompts_file"),
            (0 <= d.online_fraction <= 1 and d.online_n >= 2 and d.online_prompts >= 1,
             "dpo.online_fraction must be in [0, 1], online_n >= 2, online_prompts >= 1"),
        ], RunConfigError)

    def to_toml(self) -> str:
        d = {k: dataclasses.asdict(getattr(self, k)) for k in SECTIONS}
        return f"run_dir = {tomlio.format_value(self.run_dir)}\n\n" + tomlio.dumps(d)
