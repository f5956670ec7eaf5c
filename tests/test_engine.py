"""The generation engine: exact greedy decoding, continuous batching, sampling, stops, streaming."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from hunyuan_large import load_pretrained
from hunyuan_large.errors import UserError
from hunyuan_large.infer import Engine, EngineConfig, SamplingParams, load_generation_defaults
from hunyuan_large.infer.engine import default_num_blocks
from hunyuan_large.infer.sampling import penalize_repetition, sample

from .conftest import REFERENCE, make_model
from .infer_helpers import make_model_folder, one_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

GREEDY = SamplingParams(temperature=0.0)


@torch.no_grad()
def greedy_reference(model, prompt: list[int], n: int) -> list[int]:
    """Greedy continuation by full forwards, no cache: the independent expectation."""
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_model_folder(tmp_path_factory.mktemp("model"))


def test_reference_greedy_ids_and_logprobs(tiny_ref):
    ref = load_file(tiny_ref / "reference.safetensors")
    model = load_pretrained(tiny_ref)
    V, steps = model.config.vocab_size, ref["decode.step_logits"].shape[1] - 1
    engine = Engine(model, config=EngineConfig(max_batch=2))
    result = engine.generate([ref["decode.prompt_ids"][0].tolist()], GREEDY.replace(max_new_tokens=steps, logprobs=V))[0]
    assert result.token_ids == ref["decode.generated_ids"][0, -steps:].tolist()
    got = torch.full((steps, V), float("nan"))
    for t, lp in enumerate(result.logprobs):
        got[t, [i for i, _ in lp.top]] = torch.tensor([v for _, v in lp.top])
        assert lp.logprob == got[t, lp.token_id]
    assert (got - ref["decode.step_logits"][0, :steps].log_softmax(-1)).abs().max() <= 1e-4


@pytest.mark.parametrize("overrides", [dict(), dict(num_hidden_layers=5, cla_share_factor=3), dict(moe_topk=2)])
def test_continuous_batching_matches_each_request_alone(overrides):
    """Requests of different lengths join and leave a 3-slot batch; each equals its solo greedy run."""
    model = make_model(seed=5, **overrides)
    gen = torch.Generator().manual_seed(0)
    lengths, budgets = [3, 11, 6, 1, 9, 4, 14], [5, 9, 1, 7, 4, 8, 6]  # 1: done at prefill
    prompts = [torch.randint(3, 256, (n,), generator=gen).tolist() for n in lengths]
    engine = Engine(model, config=EngineConfig(max_batch=3, max_len=32, max_prefill_tokens=16))
    got = {}
    for p, n in zip(prompts[:4], budgets[:4]):
        engine.add_request(p, GREEDY.replace(max_new_tokens=n), request_id=str(len(got) + len(engine.waiting)))
    late = list(zip(prompts[4:], budgets[4:]))
    steps = 0
    while engine.has_unfinished() or late:
        if steps in (2, 5, 6) and late:  # requests arriving while others run
            p, n = late.pop(0)
            engine.add_request(p, GREEDY.replace(max_new_tokens=n), request_id=str(7 - len(late) - 1))
        for out in engine.step():
            got.setdefault(out.request_id, []).extend(out.token_ids)
            if out.finished:
                assert out.finish_reason == "length"
        assert len(engine.running) <= 3
        assert engine.blocks.used() == len({b for s in engine.running for b in s.blocks})  # no leaked blocks
        steps += 1
    for i, (p, n) in enumerate(zip(prompts, budgets)):
        assert got[str(i)] == greedy_reference(model, p, n), f"request {i}"


def test_stop_token_and_context_limit():
    model = make_model(seed=6)
    prompt = [5, 17, 99, 42]
    ref = greedy_reference(model, prompt, 8)
    k = next(i for i in range(1, 8) if ref[i] not in ref[:i])  # a token's first appearance
    engine = Engine(model, config=EngineConfig(max_batch=1, max_len=len(prompt) + 5))
    stopped = engine.generate([prompt], GREEDY.replace(stop_token_ids=(ref[k],)))[0]
    assert stopped.token_ids == ref[: k + 1] and stopped.finish_reason == "stop"
    full = engine.generate([prompt], GREEDY)[0]  # no max_new_tokens: until the context is full
    assert full.token_ids == ref[:5] and full.finish_reason == "length"


def test_seeded_sampling_is_reproducible_and_batch_independent():
    model = make_model(seed=7)
    engine = Engine(model, config=EngineConfig(max_batch=4))
    params = SamplingParams(temperature=1.0, top_k=50, top_p=0.9, max_new_tokens=12, seed=123)
    alone = engine.generate([[1, 2, 3]], params)[0].token_ids
    batched = engine.generate([[9, 8], [1, 2, 3], [4, 4, 4, 4]], params)[1].token_ids
    other_seed = engine.generate([[1, 2, 3]], params.replace(seed=124))[0].token_ids
    assert alone == batched
    assert alone != other_seed
    top1 = engine.generate([[1, 2, 3]], params.replace(top_k=1))[0].token_ids
    assert top1 == greedy_reference(model, [1, 2, 3], 12)


def test_sample_top_k_top_p_and_temperature_distributions():
    logits = torch.tensor([2.0, 1.5, 0.8, 0.1, -1.0])
    gen = torch.Generator().manual_seed(0)

    def freq(params, n=4000):
        counts = torch.zeros(5)
        for _ in range(n):
            counts[sample(logits, params, None, gen)] += 1
        return counts / n

    p = freq(SamplingParams(temperature=1.0, top_k=2))
    want = torch.zeros(5)
    want[:2] = logits[:2].softmax(-1)
    assert (p - want).abs().max() < 0.03
    probs = logits.softmax(-1)  # top_p keeps the fewest most likely tokens reaching p
    cut = int((probs.cumsum(-1) < 0.8).sum()) + 1
    p = freq(SamplingParams(temperature=1.0, top_p=0.8))
    want = torch.zeros(5)
    want[:cut] = probs[:cut] / probs[:cut].sum()
    assert (p[cut:] == 0).all() and (p - want).abs().max() < 0.03
    p = freq(SamplingParams(temperature=0.5))
    assert (p - (logits / 0.5).softmax(-1)).abs().max() < 0.03


def test_repetition_penalty_matches_transformers():
    transformers = pytest.importorskip("transformers")
    logits = torch.randn(50, generator=torch.Generator().manual_seed(1))
    seen = torch.tensor([3, 7, 7, 20, 41])
    want = transformers.RepetitionPenaltyLogitsProcessor(1.3)(seen[None], logits[None].clone())[0]
    assert torch.equal(penalize_repetition(logits, seen, 1.3), want)


def test_text_stop_strings_and_streaming(folder):
    engine = Engine.from_pretrained(folder, EngineConfig(max_batch=2))
    params = GREEDY.replace(max_new_tokens=40, stop_token_ids=())
    full = engine.generate(["Hello, world"], params)[0]
    assert full.text == engine.tokenizer.decode(full.token_ids, skip_special_tokens=True)
    streamed = list(engine.stream("Hello, world", params))
    assert "".join(s.text for s in streamed) == full.text
    assert [t for s in streamed for t in s.token_ids] == full.token_ids
    assert streamed[-1].finished and not any(s.finished for s in streamed[:-1])
    stop = full.text.strip()[3:6]
    cut = full.text.find(stop)
    pieces = [s.text for s in engine.stream("Hello, world", params.replace(stop=(stop, "never said")))]
    assert "".join(pieces) == full.text[:cut]
    assert streamed[-1].completion_tokens == len(full.token_ids)


def test_abort_frees_the_slot():
    model = make_model(seed=8)
    engine = Engine(model, config=EngineConfig(max_batch=2))
    a = engine.add_request([1, 2, 3, 4], GREEDY.replace(max_new_tokens=10))
    b = engine.add_request([7, 8], GREEDY.replace(max_new_tokens=10))
    got = {a: [], b: []}
    for _ in range(3):
        for out in engine.step():
            got[out.request_id] += out.token_ids
    engine.abort(a)
    outs = engine.step()
    assert any(o.request_id == a and o.finish_reason == "abort" for o in outs)
    assert [s.request_id for s in engine.running] == [b]
    for o in outs:
        got[o.request_id] += o.token_ids
    while engine.has_unfinished():
        for o in engine.step():
            got[o.request_id] += o.token_ids
    assert got[b] == greedy_reference(model, [7, 8], 10)


def test_defaults_come_from_generation_config(folder):
    engine = Engine.from_pretrained(folder)
    tok = engine.tokenizer
    assert engine.defaults == SamplingParams(temperature=0.7, top_k=20, top_p=0.6, repetition_penalty=1.05,
                                             stop_token_ids=(tok.chat_eos_id, tok.extra_5_id))
    assert set(engine.chat_params().stop_token_ids) == set(tok.chat_stop_ids)


def test_release_generation_config():
    folder = REFERENCE / "hunyuan-release"
    if not folder.exists():
        pytest.skip(f"reference data {folder} is absent")
    d = load_generation_defaults(folder)
    assert d.stop_token_ids == (127960, 127967)
    assert (d.temperature, d.top_k, d.top_p, d.repetition_penalty) == (0.7, 20, 0.6, 1.05)


def test_user_mistakes_are_one_line_errors():
    engine = Engine(make_model(seed=9), config=EngineConfig(max_batch=1, max_len=8))
    with pytest.raises(UserError, match="8 tokens"):
        engine.add_request(list(range(1, 9)))
    with pytest.raises(UserError, match="empty"):
        engine.add_request([])
    with pytest.raises(UserError, match="256"):
        engine.add_request([3, 256])
    with pytest.raises(UserError, match="no tokenizer"):
        engine.add_request("text")
    assert SamplingParams(temperature=1e-6).greedy and not SamplingParams(temperature=1e-4).greedy
    for bad in (dict(temperature=-1.0), dict(top_p=0.0), dict(top_k=-2), dict(max_new_tokens=0), dict(seed=2**64)):
        with pytest.raises(UserError, match=next(iter(bad))):
            SamplingParams(**bad)


def test_cache_blocks_default_to_the_budget_capped_by_full_contexts():
    model = make_model(seed=0)  # tiny: 512 bytes per token, context 512
    context = model.config.max_position_embeddings
    assert default_num_blocks(model, 2, context, 16, budget=1 << 30) == 2 * context // 16
    assert default_num_blocks(model, 2, context, 16, budget=512 * 16 * 10 + 100) == 10
    with pytest.raises(UserError, match="budget"):
        default_num_blocks(model, 2, context, 16, budget=100)
    engine = Engine(model, config=EngineConfig(max_batch=2, cache_memory=512 * 16 * 10))
    assert engine.max_len == 160  # one sequence may take the whole cache


def test_cli_generate_and_user_errors(folder, capsys):
    from hunyuan_large.cli import main

    assert main(["generate", "--model", str(folder), "Hello, world", "--max-new-tokens", "6", "--greedy"]) == 0
    out = capsys.readouterr()
    engine = Engine.from_pretrained(folder, EngineConfig(max_batch=1))
    want = engine.generate(["Hello, world"], engine.defaults.replace(temperature=0.0, max_new_tokens=6))[0]
    assert out.out == want.text + "\n"
    assert "generated" in out.err
    assert main(["generate", "--model", str(folder / "missing"), "hi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert main(["chat", "--model", str(folder), "--max-batch", "0"]) == 2


def test_chat_repl_keeps_the_conversation(folder):
    import io

    from hunyuan_large.infer.interactive import chat

    engine = Engine.from_pretrained(folder, EngineConfig(max_batch=1))
    params = engine.defaults.replace(temperature=0.0, max_new_tokens=5)
    lines = iter(["Hello there", "How are you?", "/exit"])
    out = io.StringIO()
    chat(engine, params, system="Be brief.", read=lambda prompt: next(lines), out=out)
    chat_params = engine.chat_params(params)
    first = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    r1 = engine.generate([engine.encode_chat(first)], chat_params)[0].text
    second = first + [{"role": "assistant", "content": r1}, {"role": "user", "content": "How are you?"}]
    r2 = engine.generate([engine.encode_chat(second)], chat_params)[0].text
    assert out.getvalue().split("\n", 1)[1] == f"{r1}\n{r2}\n"  # after the banner line
