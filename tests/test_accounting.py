"""Accounting: module-tree counts equal closed forms; the release's published numbers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hunyuan_large import ModelConfig
from hunyuan_large.accounting import (
    closed_form_params, count_params, flops_per_token, kv_cache_bytes_per_token, paper_compute,
)

SHAPES = [
    ("tiny", {}), ("small", {}), ("hunyuan-large", {}), ("hunyuan-large-pretrain", {}),
    ("tiny", dict(moe_topk=2, num_shared_expert=3)), ("tiny", dict(num_experts=1)),
    ("tiny", dict(tie_word_embeddings=False, cla_share_factor=3, num_hidden_layers=7)),
    ("tiny", dict(use_cla=False, use_qk_norm=False, use_mixed_mlp_moe=False)),
]


@pytest.mark.parametrize("preset, overrides", SHAPES)
def test_module_tree_equals_closed_form(preset, overrides):
    cfg = ModelConfig.from_preset(preset, **overrides)
    assert count_params(cfg) == closed_form_params(cfg)


def test_release_numbers():
    cfg = ModelConfig.from_preset("hunyuan-large")
    p = count_params(cfg)
    assert p.total == pytest.approx(388.7e9, rel=1e-3)
    assert p.active == pytest.approx(51.3e9, rel=2e-3)
    assert p.active + p.embedding == pytest.approx(52.1e9, rel=2e-3)  # LM head counted apart
    kv = kv_cache_bytes_per_token(cfg)
    assert kv["as_built"] == kv["GQA+CLA"] == 81920
    assert kv["MHA"] == 1638400 and kv["GQA+CLA"] / kv["MHA"] == 0.05


def test_flops_per_token_by_hand():
    cfg = ModelConfig.from_preset("tiny")  # D=64, L=4, 4 heads of 16, 2 KV heads, I=96, E=4, V=256
    D, I, S = 64, 96, 32
    proj = 4 * 2 * D * D + 2 * 2 * D * 32  # q,o every layer; k,v on the 2 owner layers
    per_layer_mlp = D * 4 + 2 * 3 * D * I  # router + shared + one expert
    attn = 4 * 4 * 4 * 16 * (S + 1) / 2
    forward = 2 * (proj + 4 * per_layer_mlp + 256 * D) + attn
    assert flops_per_token(cfg, S, training=False) == pytest.approx(forward)
    assert flops_per_token(cfg, S) == pytest.approx(3 * forward)


def test_paper_compute_formula():
    assert paper_compute(52e9, 7e12) == pytest.approx(9.59 * 52e9 * 7e12 + 2.3e8 * 7e12)


def test_cli_info_json():
    out = subprocess.run([sys.executable, "-m", "hunyuan_large", "info", "--preset", "hunyuan-large", "--json"],
                         capture_output=True, text=True, check=True).stdout
    info = json.loads(out)
    assert info["total_params"] == pytest.approx(388.7e9, rel=1e-3)
    assert info["active_params"] == pytest.approx(51.3e9, rel=2e-3)
    assert info["kv_cache_bytes_per_token"] == 81920
    assert info["flops_per_token"] > 0


def test_cli_bad_preset_is_one_line_error():
    res = subprocess.run([sys.executable, "-m", "hunyuan_large", "info", "--preset", "nope"],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip().startswith("error: unknown preset 'nope'")
    assert "Traceback" not in res.stderr


def test_training_memory_estimate():
    from hunyuan_large.accounting import training_memory_per_gpu

    cfg = ModelConfig.from_preset("hunyuan-large")
    total = count_params(cfg).total
    one, many = training_memory_per_gpu(cfg, 64, 16), training_memory_per_gpu(cfg, 128, 16)
    assert one.states == pytest.approx(16 * total / 64)
    assert many.states == pytest.approx(one.states / 2) and many.gathered == one.gathered
    # Expert parallelism shrinks the per-layer unsharded experts: ep=1 gathers all 16 of them.
    assert training_memory_per_gpu(cfg, 64, 1).gathered > 5 * one.gathered
    assert one.total(1024) == pytest.approx(one.states + one.gathered + 1024 * one.activations_per_token)
