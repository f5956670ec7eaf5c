"""The paged GQA + CLA KV cache: its size, and cached decoding against the official decode and the full forward."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from hunyuan_large import HunyuanForCausalLM, ModelConfig, load_pretrained
from hunyuan_large.accounting import kv_cache_bytes_per_token
from hunyuan_large.infer.kv_cache import KVCache

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
    cache = KVCache(cfg, num_blocks=3, block_size=7, dtype=dtype)
    owners = -(-cfg.num_hidden_layers // factor)  # layers 0, f, 2f, ... compute K/V
    itemsize = torch.empty((), dtype=dtype).element_size()
    want = 2 * cfg.num_key_value_heads * cfg.head_dim * owners * itemsize
    assert cache.bytes_per_token() == want
    assert cache.nbytes == want * (3 + 1) * 7  # + the scratch block
    assert not cache.k.any() and not cache.v.any()  # zeroed: masked-out positions must be finite
    assert want == kv_cache_bytes_per_token(cfg, itemsize)["as_built"]


def test_release_cache_is_the_papers_gqa_cla_figure():
    cfg = ModelConfig.from_preset("hunyuan-large")
    cache = KVCache(cfg, num_blocks=2 * cfg.max_position_embeddings // 16, block_size=16, dtype=torch.bfloat16,
                    device="meta")
    # Paper Table 2, GQA+CLA: 2 * n_g * d_h * l = 2 * 8 * 80 * 64 elements, bf16 -> 81,920 bytes.
    assert cache.bytes_per_token() == 2 * 8 * 80 * 64 == 81_920
    assert cache.bytes_per_token() == kv_cache_bytes_per_token(cfg)["GQA+CLA"]


@torch.no_grad()
def greedy_with_cache(model: HunyuanForCausalLM, prompt: torch.Tensor, steps: int, table: list[int], block_size: int):
    """Prefill then greedy single-token steps through a paged KVCache whose blocks are `table`;
    returns ids (1, P+steps), logits (1, steps+1, V)."""
    cache = KVCache(model.config, num_blocks=max(table) + 1, block_size=block_size)
    P = prompt.shape[1]
    logits = [model(prompt, cache=cache.batch([table], [0], [P]), logits_to_keep=1).logits[:, -1]]
    ids = [prompt]
    for step in range(steps):
        ids.append(logits[-1].argmax(-1, keepdim=True))
        view = cache.batch([table], [P + step], [1])
        logits.append(model(ids[-1], cache=view, past_length=view.past_length, logits_to_keep=1).logits[:, -1])
    return torch.cat(ids, 1), torch.stack(logits, 1)


def test_reference_decode(tiny_ref):
    ref = load_file(tiny_ref / "reference.safetensors")
    model = load_pretrained(tiny_ref)
    steps = ref["decode.step_logits"].shape[1] - 1
    ids, logits = greedy_with_cache(model, ref["decode.prompt_ids"], steps, [5, 2, 7, 0, 3, 1, 4, 6], 4)
    assert torch.equal(ids, ref["decode.generated_ids"])
    assert (logits - ref["decode.step_logits"]).abs().max() <= TOL


@pytest.mark.parametrize("table", [[3, 0, 2], [0, 1, 2, 3]])  # scattered blocks (gathered), consecutive (a view)
@pytest.mark.parametrize("factor", LAYER_PATTERNS)
def test_cached_decoding_equals_full_forward(factor, table):
    model = make_model(seed=factor, **LAYER_PATTERNS[factor])
    prompt = torch.randint(0, 256, (1, 9), generator=torch.Generator().manual_seed(factor))
    ids, logits = greedy_with_cache(model, prompt, 6, table, block_size=5)
    with torch.no_grad():
        full = model(ids).logits  # (1, 15, V), no cache
    assert (logits - full[:, prompt.shape[1] - 1 :]).abs().max() <= TOL


@pytest.mark.parametrize("factor", LAYER_PATTERNS)
def test_scattered_blocks_equal_one_contiguous_run(factor):
    """Paged attention over blocks in any order equals the contiguous layout (one view) within 1e-5."""
    model = make_model(seed=40 + factor, **LAYER_PATTERNS[factor])
    prompt = torch.randint(0, 256, (1, 10), generator=torch.Generator().manual_seed(factor))
    ids, contiguous = greedy_with_cache(model, prompt, 7, list(range(5)), block_size=4)
    ids_paged, paged = greedy_with_cache(model, prompt, 7, [4, 1, 3, 0, 2], block_size=4)
    assert torch.equal(ids, ids_paged)
    assert (paged - contiguous).abs().max() <= 1e-5


@pytest.mark.parametrize("factor", LAYER_PATTERNS)
@torch.no_grad()
def test_rows_of_different_lengths_decode_together(factor):
    """One step over rows holding 5, 9 and 7 tokens in interleaved blocks equals each sequence's own full forward."""
    model = make_model(seed=10 + factor, **LAYER_PATTERNS[factor])
    gen = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, 256, (1, n + 1), generator=gen) for n in (5, 9, 7)]
    tables = [[4, 0], [1, 6, 3], [2, 5]]  # block size 4
    cache = KVCache(model.config, num_blocks=7, block_size=4)
    for t, s in zip(tables, seqs):  # prefill all but the last token, one row at a time
        model(s[:, :-1], cache=cache.batch([t], [0], [s.shape[1] - 1]))
    view = cache.batch(tables, [s.shape[1] - 1 for s in seqs], [1, 1, 1])
    out = model(torch.cat([s[:, -1:] for s in seqs]), attention_mask=view.attention_mask(),
                position_ids=view.position_ids(), cache=view, past_length=view.past_length).logits[:, -1]
    for row, s in enumerate(seqs):
        assert (out[row] - model(s).logits[0, -1]).abs().max() <= TOL


@pytest.mark.parametrize("factor", LAYER_PATTERNS)
@torch.no_grad()
def test_paged_prefill_over_a_cached_prefix_equals_the_contiguous_forward(factor):
    """A right-padded prefill of two rows on top of 8 cached tokens each (scattered blocks) equals
    each sequence's full forward: the prefix-cache hit path, CLA included."""
    model = make_model(seed=20 + factor, **LAYER_PATTERNS[factor])
    gen = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, 256, (1, n), generator=gen) for n in (13, 11)]
    tables = [[5, 2, 0, 7], [1, 3, 6]]  # block size 4
    cache = KVCache(model.config, num_blocks=8, block_size=4)
    for t, s in zip(tables, seqs):
        model(s[:, :8], cache=cache.batch([t], [0], [8]))
    ids = torch.zeros(2, 5, dtype=torch.long)
    ids[0], ids[1, :3] = seqs[0][0, 8:], seqs[1][0, 8:]
    out = model(ids, cache=cache.batch(tables, [8, 8], [5, 3]), past_length=8).logits
    for row, s in enumerate(seqs):
        want = model(s).logits[0, 8:]
        assert (out[row, : len(want)] - want).abs().max() <= 1e-5


@pytest.mark.parametrize("table", [list(range(17)), [16, *range(16)]])  # common blocks: a view / gathered once
@torch.no_grad()
def test_decode_rows_sharing_blocks_equal_their_full_forwards(table):
    """Samples of one 68-token prompt (17 shared blocks of 4) decode a step together, the shared K/V
    read once (PrefixKV), each row at its own length; each equals its full forward."""
    from hunyuan_large.infer.decode_layout import prepare_for_decode

    model = prepare_for_decode(make_model(seed=30, num_hidden_layers=5, cla_share_factor=3))
    gen = torch.Generator().manual_seed(2)
    prompt = torch.randint(0, 256, (1, 68), generator=gen)
    tails = [torch.randint(0, 256, (1, n), generator=gen) for n in (1, 3, 2)]
    cache = KVCache(model.config, num_blocks=20, block_size=4)
    model(prompt, cache=cache.batch([table], [0], [68]))
    tables = [table + [17 + i] for i in range(3)]
    for t, tail in zip(tables, tails):  # each row's own tokens before the step
        if tail.shape[1] > 1:
            model(tail[:, :-1], cache=cache.batch([t], [68], [tail.shape[1] - 1]), past_length=68)
    past = [68 + tail.shape[1] - 1 for tail in tails]
    view = cache.batch(tables, past, [1, 1, 1], share_prefix=True)
    assert view.shared_len == 68
    out = model(torch.cat([t[:, -1:] for t in tails]), attention_mask=view.attention_mask(),
                position_ids=view.position_ids(), cache=view, past_length=view.past_length).logits[:, -1]
    for row, tail in enumerate(tails):
        assert (out[row] - model(torch.cat([prompt, tail], 1)).logits[0, -1]).abs().max() <= TOL


def test_views_not_copies_for_a_lone_sequence_in_consecutive_blocks():
    cache = KVCache(ModelConfig.from_preset("tiny"), num_blocks=6, block_size=4)
    k, v = torch.randn(2, 1, 2, 5, 16)
    K, V = cache.batch([[2, 3]], [0], [5]).update(0, k, v)
    assert K.data_ptr() == cache.k[0, :, 8:].data_ptr() and V.data_ptr() == cache.v[0, :, 8:].data_ptr()
    assert torch.equal(K, k) and torch.equal(V, v)
    K, V = cache.batch([[3, 1]], [0], [5]).update(0, k, v)  # not consecutive: gathered, same values
    assert torch.equal(K, k) and torch.equal(cache.k[0, :, 12:16], k[0, :, :4])
    assert torch.equal(cache.k[0, :, 4:5], k[0, :, 4:])


def test_short_block_table_is_refused():
    cache = KVCache(ModelConfig.from_preset("tiny"), num_blocks=2, block_size=4)
    with pytest.raises(ValueError, match="too short"):
        cache.batch([[0]], [4], [1])


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
