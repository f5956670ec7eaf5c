"""ModelConfig: presets, config.json keys, routing keys, one-line validation errors."""

from __future__ import annotations

import json

import pytest

from hunyuan_large import ModelConfig
from hunyuan_large.config import PRESETS, ConfigError


def test_release_presets_match_spec():
    inst = ModelConfig.from_preset("hunyuan-large")
    pre = ModelConfig.from_preset("hunyuan-large-pretrain")
    assert (inst.vocab_size, inst.max_position_embeddings, inst.rope_scaling["alpha"]) == (129024, 131072, 1000.0)
    assert (pre.vocab_size, pre.max_position_embeddings, pre.rope_scaling["alpha"]) == (128512, 262144, 1e5)
    assert inst.head_dim == 80
    assert inst.rope_base == pytest.approx(1.19378e7, rel=1e-5)
    assert pre.rope_base == pytest.approx(1.34340e9, rel=1e-5)


def test_reference_config_round_trips_with_release_key_set(tiny_ref, tmp_path):
    original = json.loads((tiny_ref / "config.json").read_text())
    cfg = ModelConfig.load(tiny_ref)
    cfg.save(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text()) == original


def test_unknown_keys_are_kept():
    d = ModelConfig.from_preset("tiny").to_hf_dict() | {"some_future_key": [1, 2]}
    assert ModelConfig.from_hf_dict(d).to_hf_dict()["some_future_key"] == [1, 2]


def test_routing_policy_lives_in_release_keys():
    cfg = ModelConfig.from_preset("tiny")
    assert cfg.routing_policy == "dropless"
    for policy, drop, rnd in (("drop", True, False), ("recycle", True, True), ("dropless", False, False)):
        cfg.set_routing_policy(policy)
        d = cfg.to_hf_dict()
        assert (d["moe_drop_tokens"], d["moe_random_routing_dropped_token"]) == (drop, rnd)
        assert ModelConfig.from_hf_dict(d).routing_policy == policy


def test_capacity_formula():
    cfg = ModelConfig.from_preset("small")  # 16 experts, capacity factor 1.25
    assert cfg.capacity(4096) == 320
    assert cfg.replace(moe_topk=2).capacity(1000) == 157
    assert cfg.replace(moe_min_capacity=8).capacity(10) == 8


@pytest.mark.parametrize("change, message", [
    (dict(num_attention_heads=4, num_key_value_heads=3), "divisible by num_key_value_heads"),
    (dict(moe_topk=5), "moe_topk 5 must be <= num_experts 4"),
    (dict(cla_share_factor=0), "cla_share_factor must be an integer >= 1"),
    (dict(rope_scaling={"type": "dynamic", "alpha": 1000.0}), "needs both 'factor' and 'alpha'"),
    (dict(rope_scaling={"type": "dynamic", "factor": 1.0}), "needs both 'factor' and 'alpha'"),
    (dict(rope_scaling={"type": "yarn", "factor": 1.0, "alpha": None}), "rope_scaling.type 'yarn' is unknown"),
    (dict(hidden_size=66), "divisible by num_attention_heads"),
    (dict(vocab_size=0), "vocab_size must be a positive integer"),
])
def test_invalid_values_give_one_clear_line(change, message):
    with pytest.raises(ConfigError, match=message) as info:
        ModelConfig.from_preset("tiny", **change)
    assert "\n" not in str(info.value)


def test_bad_files(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ModelConfig.load(tmp_path)
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        ModelConfig.from_preset("huge")


def test_presets_are_independent_copies():
    a = ModelConfig.from_preset("tiny")
    a.rope_scaling["alpha"] = 5.0
    assert PRESETS["tiny"].rope_scaling["alpha"] == 1000.0
