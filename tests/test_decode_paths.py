"""The decode-speed paths against plain formulations: the thread-split matmul, the shared expert
stored in the routed stack, the one-op top-1 choice, the signed-sin RoPE and single-query attention."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from hunyuan_large import ModelConfig
from hunyuan_large.infer.decode_layout import prepare_for_decode, shared_prefix_attention, single_query_attention
from hunyuan_large.infer.kv_cache import PrefixKV
from hunyuan_large.infer.matmul import matmul
from hunyuan_large.model.moe import MoE
from hunyuan_large.model.rope import apply_rope, rope_cos_sin
from hunyuan_large.model.routing import combine_weights, dropless_choice, top_k_choice


@pytest.fixture
def threads():
    """Set torch's intra-op threads for one test, restoring them after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _weight(K: int, N: int, layout: str, gen: torch.Generator) -> torch.Tensor:
    """A (K, N) right operand stored the ways the model stores them."""
    if layout == "contiguous":  # a column-major nn.Linear weight, transposed
        return torch.randn(K, N, generator=gen)
    if layout == "row_major_weight":  # a plain nn.Linear weight (N, K), transposed
        return torch.randn(N, K, generator=gen).t()
    return torch.randn(K, N + 40, generator=gen)[:, 8 : 8 + N]  # a column block of a fused matrix


@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("rows", [1, 3, 16, 17])
@pytest.mark.parametrize("K", [300, 512, 768])
@pytest.mark.parametrize("layout", ["contiguous", "row_major_weight", "fused_block"])
def test_matmul_equals_the_plain_product(threads, n_threads, rows, K, layout):
    threads(n_threads)
    gen = torch.Generator().manual_seed(rows * K)
    wt = _weight(K, 40, layout, gen)
    x = torch.randn(rows, 1, K, generator=gen)  # (B, T, K) as at decode
    got = matmul(x, wt)
    want = (x.double() @ wt.double()).float()
    assert got.shape == (rows, 1, 40)
    # entries are ~N(0, K), |y| ~ 20: 1e-4 is fp32 rounding of a K-term sum, far below any mix-up
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def test_matmul_gradients_equal_the_plain_product(threads):
    threads(2)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 512, generator=gen, requires_grad=True)
    wt = torch.randn(512, 24, generator=gen, requires_grad=True)
    g = torch.randn(2, 24, generator=gen)
    (matmul(x, wt) * g).sum().backward()
    gx, gw = x.grad, wt.grad
    x.grad = wt.grad = None
    ((x @ wt) * g).sum().backward()
    torch.testing.assert_close(gx, x.grad)
    torch.testing.assert_close(gw, wt.grad)


def _moe(k: int = 1, shared_width: int = 1, seed: int = 0) -> MoE:
    cfg = ModelConfig.from_preset("tiny", num_experts=5, moe_topk=k, num_shared_expert=shared_width)
    torch.manual_seed(seed)
    moe = MoE(cfg).eval()
    with torch.no_grad():
        for p in moe.parameters():
            p.normal_(0, 0.1)
    return moe


@pytest.mark.parametrize("k, shared_width, stacked", [(1, 1, True), (1, 2, False), (2, 1, False)])
def test_fused_moe_equals_the_unfused_block(k, shared_width, stacked):
    moe = _moe(k, shared_width)
    ref = copy.deepcopy(moe)
    before = {n: t.clone() for n, t in moe.state_dict().items()}
    prepare_for_decode(moe)
    prepare_for_decode(moe)  # idempotent
    assert moe.shared_in_stack is stacked
    after = moe.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[n], before[n]) for n in before)
    if stacked:  # the shared expert is slot E of the routed experts' storage
        assert moe.shared_mlp.down_proj.weight.untyped_storage().data_ptr() == \
            moe.experts.down_proj.untyped_storage().data_ptr()
    gen = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        for shape in [(1, 1, 64)] * 8 + [(3, 1, 64), (2, 40, 64)]:  # decode rows, a batch, a prefill
            x = torch.randn(shape, generator=gen)
            torch.testing.assert_close(moe(x)[0], ref(x)[0], rtol=1e-5, atol=1e-6)


def test_dropless_choice_equals_top_k_then_combine_weights():
    gen = torch.Generator().manual_seed(0)
    probs = torch.randn(200, 6, generator=gen).softmax(-1)
    probs[:20, 1] = probs[:20, 4] = 0.9  # ties: the first maximum wins, as argmax
    for k in (1, 2, 3):
        w, idx = dropless_choice(probs, k)
        want_idx = top_k_choice(probs, k)
        assert torch.equal(idx, want_idx)
        assert torch.equal(w, combine_weights(probs, want_idx))


@pytest.mark.parametrize("rope_scaling", [None, {"alpha": 1000.0, "factor": 1.0, "type": "dynamic"},
                                          {"type": "linear", "factor": 2.0, "alpha": None}])
def test_apply_rope_is_x_cos_plus_rotate_half_sin(rope_scaling):
    cfg = ModelConfig.from_preset("tiny", rope_scaling=rope_scaling)
    pos = torch.arange(5, 12)[None]
    cos, signed_sin = rope_cos_sin(cfg, pos, 12, torch.float32)
    half = cfg.head_dim // 2
    sin = torch.cat((-signed_sin[..., :half], signed_sin[..., half:]), -1)
    assert torch.equal(sin[..., :half], sin[..., half:])  # the plain table repeats its halves
    x = torch.randn(1, 7, 3, cfg.head_dim, generator=torch.Generator().manual_seed(0))
    rotate_half = torch.cat((-x[..., half:], x[..., :half]), -1)
    assert torch.equal(apply_rope(x, cos, signed_sin), x * cos + rotate_half * sin)


@pytest.mark.parametrize("Hq, Hkv", [(8, 2), (4, 4), (6, 1)])
def test_single_query_attention_equals_sdpa(Hq, Hkv):
    B, S, d = 3, 37, 16
    gen = torch.Generator().manual_seed(Hq * Hkv)
    q = torch.randn(B, 1, Hq, d, generator=gen)
    k, v = torch.randn(2, B, Hkv, S, d, generator=gen)
    lengths = torch.tensor([S, 20, 5])  # rows of different lengths, as in a continuous batch
    mask = torch.zeros(B, 1, 1, S).masked_fill_(torch.arange(S) >= lengths[:, None, None, None],
                                                torch.finfo(torch.float32).min)
    want = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, attn_mask=mask, scale=1.0,
                                          enable_gqa=True).transpose(1, 2).reshape(B, 1, Hq * d)
    torch.testing.assert_close(single_query_attention(q, k, v, mask), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(single_query_attention(q, k, v, None)[0],
                               want[0])  # row 0 sees every key: no mask needed


@pytest.mark.parametrize("Hq, Hkv", [(8, 2), (4, 4)])
@pytest.mark.parametrize("masked", [False, True])
def test_shared_prefix_attention_equals_sdpa(Hq, Hkv, masked):
    B, P, S, d = 3, 24, 37, 16
    gen = torch.Generator().manual_seed(Hq + masked)
    q = torch.randn(B, 1, Hq, d, generator=gen)
    shared_k, shared_v = torch.randn(2, 1, Hkv, P, d, generator=gen)
    own_k, own_v = torch.randn(2, B, Hkv, S - P, d, generator=gen)
    k, v = PrefixKV(shared_k, own_k), PrefixKV(shared_v, own_v)
    mask = None
    if masked:  # rows of different lengths past the shared part
        lengths = torch.tensor([S, 30, 25])
        mask = torch.zeros(B, 1, 1, S).masked_fill_(torch.arange(S) >= lengths[:, None, None, None],
                                                    torch.finfo(torch.float32).min)
    want = F.scaled_dot_product_attention(q.transpose(1, 2), k.materialize(), v.materialize(), attn_mask=mask,
                                          scale=1.0, enable_gqa=True).transpose(1, 2).reshape(B, 1, Hq * d)
    torch.testing.assert_close(shared_prefix_attention(q, k, v, mask), want, rtol=1e-5, atol=1e-6)
