"""ModelConfig: the release's config.json keys as a typed dataclass, plus named presets."""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError, check


class ConfigError(UserError):
    """An invalid model configuration value."""


ROUTING_POLICIES = ("dropless", "drop", "recycle")

# Keys a newer Hunyuan config may carry that change the math of this (Large) architecture.
_UNSUPPORTED_IF_SET = {"use_pack_kv": False, "use_rotary_pos_emb": True}


@dataclass
class ModelConfig:
    """Hunyuan-Large architecture; field names and meanings are the release's config.json keys."""

    vocab_size: int = 129024
    hidden_size: int = 6400
    num_hidden_layers: int = 64
    num_attention_heads: int = 80
    num_key_value_heads: int = 8
    intermediate_size: int = 18304  # routed-expert width and the shared-MLP unit width
    num_experts: int = 16  # 1 means a dense SwiGLU MLP in every layer
    moe_topk: int = 1
    num_shared_expert: int = 1
    use_mixed_mlp_moe: bool = True  # adds the shared MLP beside the routed experts
    use_cla: bool = True
    cla_share_factor: int = 2
    use_qk_norm: bool = True
    rope_theta: float = 10000.0
    rope_scaling: dict | None = field(
        default_factory=lambda: {"alpha": 1000.0, "factor": 1.0, "type": "dynamic"}
    )
    max_position_embeddings: int = 131072
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True
    hidden_act: str = "silu"
    attention_bias: bool = False
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    # Training-time routing, stored under the release's own keys (the release never reads them).
    capacity_factor: float = 1.0
    moe_drop_tokens: bool = False
    moe_random_routing_dropped_token: bool = False
    pretraining_tp: int = 1
    bos_token_id: int = 1
    eos_token_id: int | list[int] = 2
    pad_token_id: int | None = 0
    use_cache: bool = True
    torch_dtype: str = "bfloat16"
    architectures: list[str] = field(default_factory=lambda: ["HunYuanForCausalLM"])
    model_type: str = "hunyuan"
    auto_map: dict = field(
        default_factory=lambda: {
            "AutoConfig": "configuration_hunyuan.HunYuanConfig",
            "AutoModel": "modeling_hunyuan.HunyuanModel",
            "AutoModelForCausalLM": "modeling_hunyuan.HunYuanForCausalLM",
        }
    )
    transformers_version: str = "4.41.2"
    # Ours, not the release's: written to config.json only when changed from the default.
    moe_min_capacity: int = 4
    hidden_dropout: float = 0.0  # on each residual branch, in training only (post-training's regulariser)
    # Keys of a loaded config.json that this class does not model; written back unchanged.
    extra: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.validate()

    # ----- derived quantities -------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1

    @property
    def shared_intermediate_size(self) -> int:
        return self.intermediate_size * self.num_shared_expert

    @property
    def has_shared_expert(self) -> bool:
        return self.is_moe and self.use_mixed_mlp_moe

    @property
    def routing_policy(self) -> str:
        """Training routing policy named by the release's keys: dropless, drop or recycle."""
        if not self.moe_drop_tokens:
            return "dropless"
        return "recycle" if self.moe_random_routing_dropped_token else "drop"

    def set_routing_policy(self, policy: str) -> None:
        """Store a routing policy under the release's keys."""
        if policy not in ROUTING_POLICIES:
            raise ConfigError(f"routing policy {policy!r} is not one of {', '.join(ROUTING_POLICIES)}")
        self.moe_drop_tokens = policy != "dropless"
        self.moe_random_routing_dropped_token = policy == "recycle"

    def kv_owner(self, layer: int) -> int:
        """Index of the layer whose K/V projections layer `layer` uses (itself unless CLA reuses)."""
        if not self.use_cla:
            return layer
        return layer - layer % self.cla_share_factor

    def owns_kv(self, layer: int) -> bool:
        return self.kv_owner(layer) == layer

    @property
    def num_kv_owner_layers(self) -> int:
        return sum(self.owns_kv(i) for i in range(self.num_hidden_layers))

    @property
    def rope_base(self) -> float:
        """RoPE base after static NTK-alpha scaling (the released models' variant)."""
        rs = self.rope_scaling
        if rs and rs.get("type") == "dynamic" and rs["alpha"]:
            d = self.head_dim
            return self.rope_theta * rs["alpha"] ** (d / (d - 2))
        return self.rope_theta

    # ----- validation ------------------------------------------------------------------------
    def validate(self) -> None:
        """Reject invalid values with one line naming the value and what is allowed."""

        need = functools.partial(check, error=ConfigError)

        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "intermediate_size", "num_experts", "moe_topk",
                     "max_position_embeddings", "pretraining_tp"):
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                 f"{name} must be a positive integer, got {v!r}")
        need(self.hidden_size % self.num_attention_heads == 0,
             f"hidden_size {self.hidden_size} must be divisible by num_attention_heads "
             f"{self.num_attention_heads}")
        need(self.num_attention_heads % self.num_key_value_heads == 0,
             f"num_attention_heads {self.num_attention_heads} must be divisible by "
             f"num_key_value_heads {self.num_key_value_heads}")
        need(self.head_dim % 2 == 0, f"head_dim {self.head_dim} must be even for RoPE")
        need(self.moe_topk <= self.num_experts,
             f"moe_topk {self.moe_topk} must be <= num_experts {self.num_experts}")
        need(isinstance(self.num_shared_expert, int) and self.num_shared_expert >= 0,
             f"num_shared_expert must be an integer >= 0, got {self.num_shared_expert!r}")
        need(not (self.has_shared_expert and self.num_shared_expert == 0),
             "use_mixed_mlp_moe needs num_shared_expert >= 1")
        need(isinstance(self.cla_share_factor, int) and self.cla_share_factor >= 1,
             f"cla_share_factor must be an integer >= 1, got {self.cla_share_factor!r}")
        need(self.hidden_act == "silu", f"hidden_act {self.hidden_act!r} is not supported (only 'silu')")
        need(not self.attention_bias, "attention_bias=true is not supported (the release has no biases)")
        need(self.rms_norm_eps > 0, f"rms_norm_eps must be > 0, got {self.rms_norm_eps}")
        need(self.rope_theta > 0, f"rope_theta must be > 0, got {self.rope_theta}")
        need(0.0 <= self.hidden_dropout < 1.0, f"hidden_dropout must be in [0, 1), got {self.hidden_dropout}")
        need(0.0 <= self.attention_dropout < 1.0,
             f"attention_dropout must be in [0, 1), got {self.attention_dropout}")
        need(self.capacity_factor > 0, f"capacity_factor must be > 0, got {self.capacity_factor}")
        need(isinstance(self.moe_min_capacity, int) and self.moe_min_capacity >= 0,
             f"moe_min_capacity must be an integer >= 0, got {self.moe_min_capacity!r}")
        need(self.pad_token_id is None or 0 <= self.pad_token_id < self.vocab_size,
             f"pad_token_id {self.pad_token_id} must be in [0, vocab_size={self.vocab_size})")
        rs = self.rope_scaling
        if isinstance(rs, dict) and "rope_type" in rs:
            _validate_hf_rope(rs)
        elif rs is not None:
            need(isinstance(rs, dict), f"rope_scaling must be an object or null, got {rs!r}")
            need("type" in rs, f"rope_scaling needs a 'type' key (the release's) or 'rope_type' (transformers'), "
                               f"got {rs}")
            need(rs["type"] in ("dynamic", "linear"),
                 f"rope_scaling.type {rs['type']!r} is unknown (allowed: 'dynamic', 'linear')")
            # The official code reads both keys unconditionally (KeyError otherwise).
            for key in ("factor", "alpha"):
                need(key in rs, f"rope_scaling needs both 'factor' and 'alpha' keys (missing {key!r})")
            need(isinstance(rs["factor"], (int, float)) and rs["factor"] > 0,
                 f"rope_scaling.factor must be a number > 0, got {rs['factor']!r}")
            need(rs["alpha"] is None or (isinstance(rs["alpha"], (int, float)) and rs["alpha"] >= 0),
                 f"rope_scaling.alpha must be null or a number >= 0, got {rs['alpha']!r}")
        for key, default in _UNSUPPORTED_IF_SET.items():
            if key in self.extra and self.extra[key] != default:
                raise ConfigError(f"{key}={self.extra[key]!r} is not supported by this architecture")
        if "head_dim" in self.extra and self.extra["head_dim"] != self.head_dim:
            raise ConfigError(f"head_dim {self.extra['head_dim']} != hidden_size/num_attention_heads "
                              f"{self.head_dim} is not supported")

    # ----- HF config.json ------------------------------------------------------------------
    def to_hf_dict(self) -> dict[str, Any]:
        """The config.json dict: the release's key set (plus our keys only when non-default)."""
        out: dict[str, Any] = {}
        defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = copy.deepcopy(getattr(self, f.name))
            if f.name in _OURS and value == defaults[f.name]:
                continue
            out[f.name] = value
        out.update(copy.deepcopy(self.extra))
        return dict(sorted(out.items()))

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Build from a config.json dict; unknown keys are kept in `extra`."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: copy.deepcopy(v) for k, v in d.items() if k in names}
        extra = {k: copy.deepcopy(v) for k, v in d.items() if k not in names}
        if d.get("model_type", "hunyuan") != "hunyuan":
            raise ConfigError(f"model_type {d['model_type']!r} is not 'hunyuan'")
        try:
            return cls(**known, extra=extra)
        except TypeError as e:  # wrong value types that the dataclass cannot take
            raise ConfigError(f"bad config.json: {e}") from None

    def save(self, path: str | Path) -> None:
        """Write config.json (path may be a folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        path.write_text(json.dumps(self.to_hf_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        """Read config.json (path may be a model folder)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.exists():
            raise ConfigError(f"no config.json at {path}")
        try:
            d = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path} must hold a JSON object, got {type(d).__name__}")
        return cls.from_hf_dict(d)

    def replace(self, **changes: Any) -> "ModelConfig":
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "ModelConfig":
        """One of the named presets, with optional field overrides."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
        return dataclasses.replace(copy.deepcopy(PRESETS[name]), **overrides)

    def capacity(self, num_tokens: int) -> int:
        """Per-expert capacity for a micro-batch: ceil(capacity_factor * tokens * k / E), floored."""
        c = math.ceil(self.capacity_factor * num_tokens * self.moe_topk / self.num_experts)
        return max(c, self.moe_min_capacity)


_OURS = {"moe_min_capacity", "hidden_dropout"}

# transformers' RoPE variants (rope_scaling with "rope_type"): the keys each needs besides its type.
HF_ROPE_KEYS = {
    "default": (),
    "linear": ("factor",),
    "dynamic": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}


def _validate_hf_rope(rs: dict) -> None:
    kind = rs["rope_type"]
    check(kind in HF_ROPE_KEYS, f"rope_scaling.rope_type {kind!r} is not supported "
                                f"(supported: {', '.join(HF_ROPE_KEYS)})", ConfigError)
    for key in HF_ROPE_KEYS[kind]:
        value = rs.get(key)
        check(isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0,
              f"rope_scaling.{key} must be a number > 0 for rope_type {kind!r}, got {value!r}", ConfigError)
    if kind == "llama3":
        check(rs["high_freq_factor"] > rs["low_freq_factor"],
              "rope_scaling.high_freq_factor must be > low_freq_factor", ConfigError)


def padded_vocab(size: int, multiple: int = 64) -> int:
    """Embedding rows for a tokenizer of `size` ids, rounded up (as the release pads 128166 to 129024)."""
    return -(-size // multiple) * multiple

_SMALL_ROPE = {"alpha": 1.0, "factor": 1.0, "type": "dynamic"}  # plain RoPE via the release's fp32 path

PRESETS: dict[str, ModelConfig] = {
    # Seconds on a CPU; the shape of the official reference model in shared/reference/tiny.
    "tiny": ModelConfig(
        vocab_size=256, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=96, num_experts=4, max_position_embeddings=512,
        rope_scaling={"alpha": 1000.0, "factor": 1.0, "type": "dynamic"}, initializer_range=0.02,
        torch_dtype="float32",
    ),
    # Every feature on, sized so its GEMMs run near the CPU's fp32 peak; ~112M total, ~22M active.
    "small": ModelConfig(
        vocab_size=8192, hidden_size=512, num_hidden_layers=8, num_attention_heads=8,
        num_key_value_heads=2, intermediate_size=512, num_experts=16, max_position_embeddings=4096,
        rope_scaling=dict(_SMALL_ROPE), initializer_range=0.02, torch_dtype="float32",
        capacity_factor=1.25, moe_drop_tokens=True, moe_random_routing_dropped_token=True,
    ),
    "hunyuan-large": ModelConfig(),
    "hunyuan-large-pretrain": ModelConfig(
        vocab_size=128512, max_position_embeddings=262144,
        rope_scaling={"alpha": 100000.0, "factor": 1.0, "type": "dynamic"},
    ),
}
