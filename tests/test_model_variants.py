"""The fast model against the plain spec-written forward (naive_reference) on many shapes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hunyuan_large.infer.decode_layout import prepare_for_decode
from hunyuan_large.pretrained import hf_tensors

from .conftest import dense_weights, make_model
from .naive_reference import forward as naive_forward

VARIANTS = {
    "release-like": {},
    "topk2": dict(moe_topk=2),
    "topk3-e8-mqa": dict(num_experts=8, moe_topk=3, num_key_value_heads=1),
    "shared2": dict(num_shared_expert=2),
    "cla3": dict(num_hidden_layers=5, cla_share_factor=3),
    "no-cla": dict(use_cla=False),
    "untied": dict(tie_word_embeddings=False),
    "dense": dict(num_experts=1),
    "no-rope-scaling": dict(rope_scaling=None),
    "linear-rope": dict(rope_scaling={"type": "linear", "factor": 2.0, "alpha": None}),
    "dynamic-ntk-beyond": dict(rope_scaling={"type": "dynamic", "factor": 2.0, "alpha": None},
                               max_position_embeddings=8),
    "dynamic-ntk-within": dict(rope_scaling={"type": "dynamic", "factor": 2.0, "alpha": None}),
    "no-qk-norm-no-shared": dict(use_qk_norm=False, use_mixed_mlp_moe=False),
}


def _state(model):
    return {k: v.detach().clone() for k, v in hf_tensors(model).items()} | (
        {} if model.config.tie_word_embeddings else {"lm_head.weight": model.lm_head.weight.detach()}
    )


@pytest.mark.parametrize("name", VARIANTS)
@torch.no_grad()
def test_matches_naive_reference(name):
    model = make_model(seed=1, **VARIANTS[name])
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    out = model(ids, output_hidden_states=True, output_routing=True)
    want_logits, want_hidden, want_combine = naive_forward(model.config, _state(model), ids)
    assert (out.logits - want_logits).abs().max() <= 1e-4
    for got, want in zip(out.hidden_states, want_hidden):
        assert (got - want).abs().max() <= 1e-4
    for routing, want in zip(out.routing or [], want_combine):
        got = dense_weights(routing, model.config.num_experts)
        assert torch.equal(got > 0, want > 0)
        assert (got - want).abs().max() <= 1e-5


@pytest.mark.parametrize("name", ["release-like", "cla3", "topk2"])
@torch.no_grad()
def test_left_padding_matches_unpadded_rows(name):
    model = make_model(seed=2, **VARIANTS[name])
    gen = torch.Generator().manual_seed(1)
    solo = torch.randint(3, 256, (1, 8), generator=gen)
    ids = torch.cat([torch.zeros(1, 4, dtype=torch.long), solo], dim=1)
    mask = torch.tensor([[0] * 4 + [1] * 8])
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    padded = model(ids, attention_mask=mask, position_ids=pos).logits
    alone = model(solo).logits
    assert torch.isfinite(padded).all()
    assert (padded[:, 4:] - alone).abs().max() <= 1e-4
    want, _, _ = naive_forward(model.config, _state(model), ids, attention_mask=mask, position_ids=pos)
    assert (padded[:, 4:] - want[:, 4:]).abs().max() <= 1e-4


def test_loss_is_shifted_cross_entropy_ignoring_minus_100():
    model = make_model(seed=3)
    ids = torch.randint(0, 256, (2, 10))
    labels = ids.clone()
    labels[0, :5] = -100
    out = model(ids, labels=labels)
    want = F.cross_entropy(out.logits[:, :-1].reshape(-1, 256), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert torch.allclose(out.loss, want)
    assert out.aux_loss is None  # eval mode collects no routing losses unless asked


def test_cla_reuse_layers_have_no_kv_projections_but_own_key_norm():
    model = make_model(num_hidden_layers=6, cla_share_factor=3)
    names = set(hf_tensors(model))
    for i in range(6):
        has_kv = f"model.layers.{i}.self_attn.k_proj.weight" in names
        assert has_kv == (i % 3 == 0)
        assert f"model.layers.{i}.self_attn.key_layernorm.weight" in names


def test_dense_mlp_uses_release_names():
    names = set(hf_tensors(make_model(num_experts=1)))
    assert "model.layers.0.mlp.gate_proj.weight" in names
    assert not any(".experts." in n or ".gate.wg" in n for n in names)


def test_explicit_position_ids_shift_rope():
    model = make_model(seed=4)
    ids = torch.randint(0, 256, (1, 6))
    base = model(ids).logits
    same = model(ids, position_ids=torch.arange(6)[None]).logits
    shifted = model(ids, position_ids=torch.arange(6)[None] + 5).logits
    assert torch.equal(base, same)
    assert not torch.allclose(base, shifted, atol=1e-4)


@pytest.mark.parametrize("name", ["release-like", "cla3", "dense", "no-qk-norm-no-shared"])
@torch.no_grad()
def test_fused_projections_keep_outputs_and_state(name):
    model = make_model(seed=6, **VARIANTS[name])
    ids = torch.randint(0, 256, (2, 9))
    before = model(ids).logits
    state = {k: v.clone() for k, v in model.state_dict().items()}
    prepare_for_decode(model)
    assert (model(ids).logits - before).abs().max() <= 1e-5
    after = model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)
