"""Chunked prefill: attention after a cached past, chunked logits = one-shot logits, and the engine
interleaving a long prompt's chunks with running streams (same greedy ids, preemption mid-prefill)."""

from __future__ import annotations

import pytest
import torch

from hunyuan_large.errors import UserError
from hunyuan_large.infer import Engine, EngineConfig
from hunyuan_large.infer.decode_layout import prepare_for_decode
from hunyuan_large.infer.kv_cache import KVCache
from hunyuan_large.model.attention import causal_after_past, masked_causal_after_past

from .conftest import make_model
from .infer_helpers import TEXTS, make_model_folder, one_thread  # noqa: F401 (fixture)
from .test_engine import GREEDY, greedy_reference

pytestmark = pytest.mark.usefixtures("one_thread")

PATTERNS = {  # every CLA pattern, and a Llama-like dense model (no CLA, no QK-norm, one SwiGLU)
    "cla1": dict(use_cla=False),
    "cla2": dict(),
    "cla3": dict(num_hidden_layers=5, cla_share_factor=3),
    "llama": dict(use_cla=False, use_qk_norm=False, num_experts=1),
}


def _prompt(n: int, seed: int) -> list[int]:
    return torch.randint(3, 256, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.mark.parametrize("Hq,Hkv", [(4, 4), (8, 2)])
@pytest.mark.parametrize("attend", [causal_after_past, masked_causal_after_past])
def test_attention_after_a_past_is_bottom_right_causal(attend, Hq, Hkv):
    """Query t of T (after P = S - T cached keys) sees keys 0..P+t: softmax(QK^T/sqrt(d)) V by hand."""
    gen = torch.Generator().manual_seed(0)
    B, T, S, d = 2, 7, 19, 16
    q, k, v = torch.randn(B, Hq, T, d, generator=gen), torch.randn(B, Hkv, S, d, generator=gen), torch.randn(
        B, Hkv, S, d, generator=gen)
    kk, vv = k.repeat_interleave(Hq // Hkv, 1), v.repeat_interleave(Hq // Hkv, 1)  # head h reads KV head h // g
    scores = q @ kk.transpose(-1, -2) / d**0.5  # (B, Hq, T, S)
    allowed = torch.arange(S)[None, :] <= torch.arange(S - T, S)[:, None]
    want = scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ vv
    assert (attend(q, k, v) - want).abs().max() <= 1e-5


@torch.no_grad()
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("chunk,table", [(7, list(range(15))),
                                         (16, [9, 2, 14, 0, 4, 11, 6, 13, 1, 3, 5, 7, 8, 10, 12])])
def test_chunked_prefill_logits_equal_one_shot(pattern, chunk, table):
    """Logits of a prompt prefilled in chunks through the paged cache (consecutive blocks: a view;
    scattered blocks: gathers) equal the one-shot prefill's and the cache-free forward's."""
    model = prepare_for_decode(make_model(seed=3, **PATTERNS[pattern]))
    P, bs = 57, 4
    ids = torch.tensor([_prompt(P, 1)])
    full = model(ids).logits  # (1, P, V) no cache
    cache = KVCache(model.config, num_blocks=max(table) + 1, block_size=bs)
    one_shot = model(ids, cache=cache.batch([table], [0], [P])).logits
    cache = KVCache(model.config, num_blocks=max(table) + 1, block_size=bs)
    chunks = [model(ids[:, s : s + chunk], cache=cache.batch([table], [s], [min(chunk, P - s)]), past_length=s).logits
              for s in range(0, P, chunk)]
    chunked = torch.cat(chunks, dim=1)
    assert (one_shot - full).abs().max() <= 1e-4
    assert (chunked - one_shot).abs().max() <= 1e-4


def _step_all(engine: Engine) -> dict[tuple[str, int], list[int]]:
    """Step to the end checking that every referenced block is a running (or part-prefilled) sequence's."""
    got: dict[tuple[str, int], list[int]] = {}
    while engine.has_unfinished():
        for out in engine.step():
            got.setdefault((out.request_id, out.index), []).extend(out.token_ids)
        _check_blocks(engine)
    assert engine.blocks.used() == 0
    return got


def _check_blocks(engine: Engine) -> None:
    refs = [0] * engine.blocks.num_blocks
    for b in (b for s in engine.running for b in s.blocks + s.fork_blocks):
        refs[b] += 1
    assert refs == engine.blocks.refs
    assert not any(s.blocks for s in engine.waiting)


@pytest.mark.parametrize("pattern", ["cla2", "llama"])
def test_greedy_ids_equal_with_and_without_chunking(pattern):
    """Long and short prompts, one with two samples forked after its last chunk: the same ids as
    one-shot prefill and as full forwards without a cache."""
    model = prepare_for_decode(make_model(seed=7, **PATTERNS[pattern]))  # the engine's layout, for the reference too
    prompts = [_prompt(n, seed) for seed, n in enumerate([45, 5, 23, 9, 64])]
    want = [greedy_reference(model, p, 6) for p in prompts]
    for chunk in (0, 8, 13):
        engine = Engine(model, config=EngineConfig(max_batch=4, max_len=96, block_size=4, prefill_chunk=chunk))
        for i, p in enumerate(prompts):
            engine.add_request(p, GREEDY.replace(max_new_tokens=6, n=2 if i == 0 else 1), request_id=str(i))
        got = _step_all(engine)
        assert got == {(str(i), j): w for i, w in enumerate(want) for j in range(2 if i == 0 else 1)}, chunk


def test_a_long_prompt_does_not_stall_a_running_stream():
    """While a 70-token prompt arrives in chunks of 8, a running stream gets a token every step;
    the long prompt's first token comes with its ninth chunk."""
    model = prepare_for_decode(make_model(seed=2))
    engine = Engine(model, config=EngineConfig(max_batch=2, max_len=128, block_size=4, prefill_chunk=8))
    stream, long = _prompt(5, 0), _prompt(70, 1)
    engine.add_request(stream, GREEDY.replace(max_new_tokens=30), request_id="stream")
    got = {"stream": [], "long": []}
    for _ in range(3):
        for out in engine.step():
            got[out.request_id] += out.token_ids
    engine.add_request(long, GREEDY.replace(max_new_tokens=4), request_id="long")
    steps = 0
    while not got["long"]:
        before = len(got["stream"])
        for out in engine.step():
            got[out.request_id] += out.token_ids
        steps += 1
        assert len(got["stream"]) == before + 1  # the stream decoded during every chunk
        _check_blocks(engine)
    assert steps == -(-70 // 8)
    got_rest = _step_all(engine)
    for rid, prompt, n in (("stream", stream, 30), ("long", long, 4)):
        assert got[rid] + got_rest.get((rid, 0), []) == greedy_reference(model, prompt, n)


def test_preemption_mid_prefill_resumes_from_the_cached_chunks():
    """With one spare block, the stream's next block preempts the part-prefilled long prompt; it
    comes back later starting from its registered chunks, and both get their exact greedy ids."""
    model = prepare_for_decode(make_model(seed=4))
    stream, long = _prompt(6, 0), _prompt(40, 1)
    # The stream (6 + 1 tokens: 2 blocks of 4), the long prompt (10 blocks), one spare.
    engine = Engine(model, config=EngineConfig(max_batch=2, num_blocks=13, block_size=4, prefill_chunk=4))
    engine.add_request(stream, GREEDY.replace(max_new_tokens=16), request_id="stream")
    got = {"stream": [t for out in engine.step() for t in out.token_ids], "long": []}
    engine.add_request(long, GREEDY.replace(max_new_tokens=3), request_id="long")
    hits_before = None
    while engine.has_unfinished():
        part = engine.prefilling
        for out in engine.step():
            got[out.request_id] += out.token_ids
        _check_blocks(engine)
        if part is not None and hits_before is None and engine.waiting and engine.waiting[0] is part:
            assert part.cached == 0 and not part.blocks  # preempted mid-prefill
            hits_before = engine.blocks.hit_tokens
    assert hits_before is not None and engine.metrics.preemptions == 1
    assert engine.blocks.hit_tokens > hits_before  # readmission found its chunks in the prefix cache
    assert engine.blocks.used() == 0
    assert got["long"] == greedy_reference(model, long, 3)
    assert got["stream"] == greedy_reference(model, stream, 16)


def test_aborting_a_part_prefilled_request_frees_its_blocks():
    model = make_model(seed=1)
    engine = Engine(model, config=EngineConfig(max_batch=2, max_len=64, block_size=4, prefill_chunk=8))
    engine.add_request(_prompt(30, 0), GREEDY.replace(n=2, max_new_tokens=3), request_id="r")
    assert engine.step() == [] and engine.prefilling is not None
    engine.abort("r")
    outs = engine.step()
    assert sorted((o.index, o.finish_reason) for o in outs) == [(0, "abort"), (1, "abort")]
    assert engine.blocks.used() == 0 and engine.prefilling is None and not engine.has_unfinished()


def test_negative_prefill_chunk_is_a_user_error():
    with pytest.raises(UserError, match="prefill_chunk"):
        Engine(make_model(), config=EngineConfig(max_len=32, prefill_chunk=-1))


def test_cli_prefill_chunk(tmp_path, capsys):
    from hunyuan_large.cli import main

    folder = make_model_folder(tmp_path / "model")
    prompt = TEXTS[0][:300]
    assert main(["generate", "--model", str(folder), prompt, "--prefill-chunk", "16", "--max-new-tokens", "5",
                 "--greedy"]) == 0
    engine = Engine.from_pretrained(folder, EngineConfig(max_batch=1, prefill_chunk=0))
    want = engine.generate([prompt], engine.defaults.replace(temperature=0.0, max_new_tokens=5))[0]
    assert len(want.prompt_ids) > 16 and capsys.readouterr().out == want.text + "\n"
    assert main(["generate", "--model", str(folder), "hi", "--prefill-chunk", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--prefill-chunk" in err and len(err.strip().splitlines()) == 1
