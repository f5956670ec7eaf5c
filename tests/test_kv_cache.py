"""The GQA + CLA KV cache: its size, and cached decoding against the official decode and the full forward."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from hunyuan_large import HunyuanForCausalLM, ModelConfig, load_pretrained
from hunyuan_large.accounting import kv_cache_bytes_per_token
from hunyuan_large.infer.kv_cache import CacheFullError, KVCache

from .conftest import make_model
from .infer_helpers import one_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-4
LAYER_PATTERNS = {  # CLA factor -> overrides
    1: dict(use_cla=False),
    2: dict(),
    3: dict(num_hidden_layers=5, cla_share_factor=3),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("factor", LAYER_PATTERNS)
def test_bytes_per_token_is_owner_layers_only(factor, dtype):
    cfg = ModelConfig.from_preset("tiny", **LAYER_PATTERNS[factor])
    cache = KVCache(cfg, max_batch=3, max_len=7, dtype=dtype)
    owners = -(-cfg.num_hidden_layers // factor)  # layers 0, f, 2f, ... compute K/V
    itemsize = torch.empty((), dtype=dtype).element_size()
    want = 2 * cfg.num_key_value_heads * cfg.head_dim * owners * itemsize
    assert cache.bytes_per_token() == want
    assert cache.nbytes == want * 3 * 7
    assert not cache.k.any() and not cache.v.any()  # zeroed: masked-out positions must be finite
    assert want == kv_cache_bytes_per_token(cfg, itemsize)["as_built"]


def test_release_cache_is_the_papers_gqa_cla_figure():
    cfg = ModelConfig.from_preset("hunyuan-large")
    cache = KVCache(cfg, max_batch=2, max_len=cfg.max_position_embeddings, dtype=torch.bfloat16, device="meta")
    # Paper Table 2, GQA+CLA: 2 * n_g * d_h * l = 2 * 8 * 80 * 64 elements, bf16 -> 81,920 bytes.
    assert cache.bytes_per_token() == 2 * 8 * 80 * 64 == 81_920
    assert cache.bytes_per_token() == kv_cache_bytes_per_token(cfg)["GQA+CLA"]


@torch.no_grad()
def greedy_with_cache(model: HunyuanForCausalLM, prompt: torch.Tensor, steps: int):
    """Prefill then greedy single-token steps through a KVCache; returns ids (1, P+steps), logits (1, steps+1, V)."""
    cache = KVCache(model.config, max_batch=1, max_len=prompt.shape[1] + steps)
    view = cache.batch(0, [0], prompt.shape[1])
    logits = [model(prompt, cache=view, logits_to_keep=1).logits[:, -1]]
    cache.advance(0, [prompt.shape[1]])
    ids = [prompt]
    for _ in range(steps):
        ids.append(logits[-1].argmax(-1, keepdim=True))
        view = cache.batch(0, cache.lengths[:1], 1)
        logits.append(model(ids[-1], cache=view, past_length=view.past_length, logits_to_keep=1).logits[:, -1])
        cache.advance(0, [1])
    return torch.cat(ids, 1), torch.stack(logits, 1)


def test_reference_decode(tiny_ref):
    ref = load_file(tiny_ref / "reference.safetensors")
    model = load_pretrained(tiny_ref)
    steps = ref["decode.step_logits"].shape[1] - 1
    ids, logits = greedy_with_cache(model, ref["decode.prompt_ids"], steps)
    assert torch.equal(ids, ref["decode.generated_ids"])
    assert (logits - ref["decode.step_logits"]).abs().max() <= TOL


@pytest.mark.parametrize("factor", LAYER_PATTERNS)
def test_cached_decoding_equals_full_forward(factor):
    model = make_model(seed=factor, **LAYER_PATTERNS[factor])
    prompt = torch.randint(0, 256, (1, 9), generator=torch.Generator().manual_seed(factor))
    ids, logits = greedy_with_cache(model, prompt, steps=6)
    with torch.no_grad():
        full = model(ids).logits  # (1, 15, V), no cache
    assert (logits - full[:, prompt.shape[1] - 1 :]).abs().max() <= TOL


@pytest.mark.parametrize("factor", LAYER_PATTERNS)
@torch.no_grad()
def test_rows_of_different_lengths_decode_together(factor):
    """One step over slots holding 5, 9 and 7 tokens equals each sequence's own full forward."""
    model = make_model(seed=10 + factor, **LAYER_PATTERNS[factor])
    gen = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, 256, (1, n + 1), generator=gen) for n in (5, 9, 7)]
    cache = KVCache(model.config, max_batch=4, max_len=16)
    for slot, s in enumerate(seqs):  # prefill all but the last token, one slot at a time
        model(s[:, :-1], cache=cache.batch(slot, [0], s.shape[1] - 1))
        cache.advance(slot, [s.shape[1] - 1])
    view = cache.batch(0, cache.lengths[:3], 1)
    out = model(torch.cat([s[:, -1:] for s in seqs]), attention_mask=view.attention_mask(),
                position_ids=view.position_ids(), cache=view, past_length=view.past_length).logits[:, -1]
    for row, s in enumerate(seqs):
        assert (out[row] - model(s).logits[0, -1]).abs().max() <= TOL


@torch.no_grad()
def test_views_not_copies_and_move():
    model = make_model(seed=4)
    cache = KVCache(model.config, max_batch=3, max_len=12)
    ids = torch.randint(0, 256, (1, 6), generator=torch.Generator().manual_seed(3))
    view = cache.batch(2, [0], 5)
    k, v = view.update(0, torch.randn(1, 2, 5, 16), torch.randn(1, 2, 5, 16))
    assert k.untyped_storage().data_ptr() == cache.k.untyped_storage().data_ptr()  # a view of the buffer
    assert v.untyped_storage().data_ptr() == cache.v.untyped_storage().data_ptr()
    model(ids[:, :5], cache=cache.batch(2, [0], 5))
    cache.advance(2, [5])
    cache.move(2, 0)  # the sequence continues identically from its new slot
    assert cache.lengths[:3] == [5, 0, 0]
    view = cache.batch(0, [5], 1)
    got = model(ids[:, 5:], cache=view, past_length=view.past_length).logits[0, -1]
    assert (got - model(ids).logits[0, -1]).abs().max() <= TOL


def test_full_cache_is_refused():
    cache = KVCache(ModelConfig.from_preset("tiny"), max_batch=1, max_len=4)
    cache.advance(0, [4])
    with pytest.raises(CacheFullError, match="max_len 4"):
        cache.batch(0, cache.lengths, 1)


def test_column_major_layout_keeps_values_names_and_ties():
    from hunyuan_large.infer.weight_layout import is_column_major, use_column_major_weights

    model = make_model(seed=11)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(0, 256, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(ids).logits
    use_column_major_weights(model)
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert all(is_column_major(p) for p in model.parameters() if p.dim() >= 2)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    with torch.no_grad():
        assert (model(ids).logits - want).abs().max() <= TOL
