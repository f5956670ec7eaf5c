"""Serving many requests: preemption under a small block budget, the prefix cache, n samples, metrics."""

from __future__ import annotations

import pytest
import torch

from hunyuan_large.errors import UserError
from hunyuan_large.infer import Engine, EngineConfig, SamplingParams
from hunyuan_large.infer.blocks import ROOT, BlockManager
from hunyuan_large.infer.metrics import Histogram, prometheus_text

from .conftest import make_model
from .infer_helpers import one_thread  # noqa: F401 (fixture)
from .test_engine import GREEDY, greedy_reference

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(engine: Engine, requests: list[tuple[list[int], SamplingParams]]) -> dict[tuple[str, int], list[int]]:
    """Queue all requests, step to the end checking the block invariants; token ids per (request, sample)."""
    for i, (prompt, params) in enumerate(requests):
        engine.add_request(prompt, params, request_id=str(i))
    got: dict[tuple[str, int], list[int]] = {}
    while engine.has_unfinished():
        for out in engine.step():
            got.setdefault((out.request_id, out.index), []).extend(out.token_ids)
        held = [b for s in engine.running for b in s.blocks]
        refs = [0] * engine.blocks.num_blocks
        for b in held:
            refs[b] += 1
        assert refs == engine.blocks.refs  # every reference is a running sequence's, none leaked
        assert not any(s.blocks for s in engine.waiting)
    assert engine.blocks.used() == 0
    return got


def test_block_manager_reference_counts_and_lru_eviction():
    m = BlockManager(num_blocks=3, block_size=2)
    a, b = m.allocate(), m.allocate()
    assert (a, b) == (0, 1)
    uid = m.register(a, ROOT, [7, 8])
    m.register(b, uid, [9, 10])
    assert m.lookup([7, 8, 9, 10, 11]) == [a, b]
    assert m.lookup([7, 9, 9, 10]) == [] and m.lookup([9, 10]) == []  # keys name the whole prefix
    m.acquire([a])  # a second sequence shares block a
    m.release([a, b])
    assert m.refs == [1, 0, 0] and m.available() == 2 and m.used() == 1
    assert m.allocate() == 2  # never-used blocks before cached ones
    assert m.allocate() == b  # then the least recently used cached block, which leaves the index
    assert m.lookup([7, 8, 9, 10]) == [a] and m.allocate() is None
    m.release([a])
    m.release([b, 2])
    assert m.available() == 3 and m.lookup([7, 8]) == [a]


def test_a_reused_block_never_matches_its_old_successors():
    m = BlockManager(num_blocks=2, block_size=1)
    first = m.allocate()
    second = m.allocate()
    m.register(second, m.register(first, ROOT, [1]), [2])
    m.release([first, second])  # the tail is evicted first: [2] goes, then [1]
    block = m.allocate()
    assert block == second and m.lookup([1, 2]) == [first]
    m.release([block])
    m.allocate(), m.allocate()  # evicts [1]: the block now holds other tokens
    assert m.lookup([1]) == [] and m.lookup([1, 2]) == []


@pytest.mark.parametrize("overrides", [dict(), dict(num_hidden_layers=5, cla_share_factor=3)])
def test_preemption_under_a_tiny_block_budget_gives_the_same_greedy_ids(overrides):
    """Five requests in a cache of 9 blocks of 4 tokens: sequences are preempted and recomputed,
    none fails, and each gets exactly its solo greedy continuation."""
    model = make_model(seed=3, **overrides)
    gen = torch.Generator().manual_seed(2)
    prompts = [torch.randint(3, 256, (n,), generator=gen).tolist() for n in (6, 13, 9, 3, 11)]
    budgets = [14, 9, 12, 16, 7]
    engine = Engine(model, config=EngineConfig(max_batch=4, block_size=4, num_blocks=9))
    got = _run(engine, [(p, GREEDY.replace(max_new_tokens=n)) for p, n in zip(prompts, budgets)])
    assert engine.metrics.preemptions > 0
    for i, (p, n) in enumerate(zip(prompts, budgets)):
        assert got[str(i), 0] == greedy_reference(model, p, n), f"request {i}"


def test_prefix_cache_shares_blocks_and_keeps_outputs():
    """Requests sharing a 20-token system prefix: the second and later hit the cache, share the
    blocks while running together, and produce the same tokens as without prefix caching."""
    model = make_model(seed=4)
    gen = torch.Generator().manual_seed(3)
    system = torch.randint(3, 256, (20,), generator=gen).tolist()
    prompts = [system + torch.randint(3, 256, (n,), generator=gen).tolist() for n in (5, 2, 9, 4)]
    params = GREEDY.replace(max_new_tokens=6)
    results = {}
    for caching in (False, True):
        engine = Engine(model, config=EngineConfig(max_batch=4, block_size=4, prefix_caching=caching))
        first = _run(engine, [(prompts[0], params)])  # caches the shared blocks
        engine.add_request(prompts[1], params, request_id="a")
        engine.add_request(prompts[2], params, request_id="b")
        engine.step()
        a, b = engine.running
        shared = set(a.blocks) & set(b.blocks)
        assert len(shared) == (5 if caching else 0)  # 20 tokens = 5 full blocks, in use by both
        rest = _run(engine, [(p, params) for p in prompts[1:]])
        results[caching] = [first["0", 0], *(rest[str(i), 0] for i in range(3))]
        hit_rate = engine.blocks.hit_rate()
        assert (hit_rate > 0) == caching
    assert results[True] == results[False]
    assert results[True] == [greedy_reference(model, p, 6) for p in prompts]


@torch.no_grad()
def test_a_prefix_cache_hit_gives_the_logits_of_a_miss():
    model = make_model(seed=5, num_hidden_layers=5, cla_share_factor=3)
    prompt = torch.randint(3, 256, (18,), generator=torch.Generator().manual_seed(4)).tolist()
    params = GREEDY.replace(max_new_tokens=4, logprobs=model.config.vocab_size - 1)
    engine = Engine(model, config=EngineConfig(max_batch=2, block_size=4))
    miss, hit = (engine.generate([prompt], params)[0] for _ in range(2))
    assert engine.blocks.hit_tokens == 16  # 4 of the 5 blocks (the last token is always computed)
    assert hit.token_ids == miss.token_ids
    for a, b in zip(hit.logprobs, miss.logprobs):
        assert max(abs(x[1] - y[1]) for x, y in zip(sorted(a.top), sorted(b.top))) <= 1e-5


def test_n_samples_share_the_prompt_and_are_reproducible_with_a_seed():
    model = make_model(seed=6)
    engine = Engine(model, config=EngineConfig(max_batch=8, block_size=4))
    prompt = list(range(3, 13))  # 10 tokens: 2 full blocks, a partial one each sample copies
    params = SamplingParams(temperature=1.0, max_new_tokens=8, seed=11, n=4)
    results = engine.generate([prompt, [5, 6, 7]], params)
    assert [(r.request_id, r.index) for r in results] == [("req-0", i) for i in range(4)] + \
        [("req-1", i) for i in range(4)]
    again = engine.generate([prompt], params)
    assert [r.token_ids for r in again] == [r.token_ids for r in results[:4]]
    assert len({tuple(r.token_ids) for r in results[:4]}) > 1  # the samples differ from each other
    alone = engine.generate([prompt], params.replace(n=1, seed=13))[0]  # sample 2 draws from seed + 2
    assert alone.token_ids == results[2].token_ids
    engine.add_request(prompt, params)
    engine.step()  # one prefill, then forked
    full = engine.running[0].blocks[:2]
    assert all(s.blocks[:2] == full for s in engine.running) and engine.blocks.refs[full[0]] == 4
    assert len({s.blocks[2] for s in engine.running}) == 4
    long_prompt = list(range(3, 73))  # 70 tokens: the samples decode reading their shared blocks once
    engine = Engine(model, config=EngineConfig(max_batch=8, block_size=4))
    greedy = engine.generate([long_prompt], GREEDY.replace(max_new_tokens=5, n=3))
    assert all(r.token_ids == greedy_reference(model, long_prompt, 5) for r in greedy)
    with pytest.raises(UserError, match="max_batch"):
        engine.add_request(prompt, params.replace(n=9))
    with pytest.raises(UserError, match="n must be"):
        params.replace(n=0)


def test_memory_stays_flat_over_many_requests():
    model = make_model(seed=7)
    engine = Engine(model, config=EngineConfig(max_batch=3, block_size=4, num_blocks=12))
    gen = torch.Generator().manual_seed(5)
    for round_ in range(4):
        prompts = [torch.randint(3, 256, (int(n),), generator=gen).tolist()
                   for n in torch.randint(1, 20, (5,), generator=gen)]
        _run(engine, [(p, SamplingParams(temperature=1.0, max_new_tokens=10, n=2, seed=round_)) for p in prompts])
        assert engine.blocks.used() == 0 and engine.blocks.available() == 12
        assert len(engine.blocks.cached) == len(engine.blocks.key_of) <= 12


def test_metrics_text_parses_as_prometheus():
    h = Histogram((0.1, 1.0))
    for x in (0.05, 0.5, 3.0):
        h.observe(x)
    text = prometheus_text([("x_running", "gauge", "Running.", 2), ("x_ttft_seconds", "histogram", "TTFT.", h)])
    assert text.splitlines() == [
        "# HELP x_running Running.", "# TYPE x_running gauge", "x_running 2",
        "# HELP x_ttft_seconds TTFT.", "# TYPE x_ttft_seconds histogram",
        'x_ttft_seconds_bucket{le="0.1"} 1', 'x_ttft_seconds_bucket{le="1"} 2', 'x_ttft_seconds_bucket{le="+Inf"} 3',
        "x_ttft_seconds_sum 3.55", "x_ttft_seconds_count 3"]


def test_aborting_a_waiting_request_ends_all_its_samples():
    engine = Engine(make_model(seed=8), config=EngineConfig(max_batch=4, block_size=4))
    rid = engine.add_request([5, 6, 7], SamplingParams(temperature=1.0, n=3, max_new_tokens=4))
    engine.abort(rid)
    outs = engine.step()
    assert sorted((o.index, o.finish_reason) for o in outs) == [(0, "abort"), (1, "abort"), (2, "abort")]
    assert not engine.has_unfinished() and engine.blocks.used() == 0


def test_seeded_samples_survive_preemption():
    """Seeded n = 2 sampling of four prompts gives the same tokens in a cache too small for them all
    (samples preempted, recomputed, their generators carried over) as in a roomy one."""
    model = make_model(seed=9)
    gen = torch.Generator().manual_seed(6)
    prompts = [torch.randint(3, 256, (n,), generator=gen).tolist() for n in (9, 14, 5, 11)]
    params = SamplingParams(temperature=1.0, top_k=40, max_new_tokens=12, seed=3, n=2)
    got = {}
    for blocks in (10, 64):
        engine = Engine(model, config=EngineConfig(max_batch=8, block_size=4, num_blocks=blocks))
        got[blocks] = _run(engine, [(p, params) for p in prompts])
        assert (engine.metrics.preemptions > 0) == (blocks == 10)
    assert got[10] == got[64]
