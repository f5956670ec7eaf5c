"""The model against what the official code computed (../shared/reference/tiny)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from hunyuan_large import load_pretrained

from .conftest import dense_weights

TOL = 1e-4


@pytest.fixture(params=["single", "sharded"])
def loaded(request, tiny_ref):
    folder = tiny_ref if request.param == "single" else tiny_ref / "sharded"
    return load_pretrained(folder), load_file(tiny_ref / "reference.safetensors")


@torch.no_grad()
def test_logits_hidden_states_and_expert_choices(loaded):
    model, ref = loaded
    out = model(ref["input_ids"], output_hidden_states=True, output_routing=True)
    assert out.logits.dtype == torch.float32
    assert (out.logits - ref["logits"]).abs().max() <= TOL
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    for i, h in enumerate(out.hidden_states):
        assert (h - ref[f"hidden_states.{i}"]).abs().max() <= TOL, f"hidden state {i}"
    for i, routing in enumerate(out.routing):
        want = ref[f"moe_weights.layer{i}"]
        got = dense_weights(routing, model.config.num_experts)
        assert torch.equal(got > 0, want > 0), f"expert choices of layer {i}"
        assert (got - want).abs().max() <= 1e-5


@torch.no_grad()
def test_left_padded_batch_real_positions(loaded):
    model, ref = loaded
    out = model(ref["padded.input_ids"], attention_mask=ref["padded.attention_mask"],
                position_ids=ref["padded.position_ids"])
    real = ref["padded.attention_mask"].bool()
    assert torch.isfinite(out.logits).all()
    assert (out.logits - ref["padded.logits"])[real].abs().max() <= TOL

