"""The OpenAI-compatible server as a real process on loopback, driven by the official `openai` client."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hunyuan_large.infer import Engine, EngineConfig

from .infer_helpers import make_model_folder, one_thread, serving  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

KEY = "test-key"
MODEL = "tiny-chat"
MAX_BATCH = 16
MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_model_folder(tmp_path_factory.mktemp("model"), seed=1)


@pytest.fixture(scope="module")
def server(folder):
    """`hunyuan serve` in a subprocess; yields its base URL and stops it however the tests end."""
    with serving(folder, "--api-key", KEY, "--served-model-name", MODEL, "--max-batch", str(MAX_BATCH),
                 "--max-request-size", str(MAX_BODY)) as base:
        yield base


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def local(folder):
    """The same model in this process: what the server's answers must equal."""
    return Engine.from_pretrained(folder, EngineConfig(max_batch=4), device="cpu")


def _local_text(engine: Engine, prompt: list[int], max_tokens: int, chat: bool) -> tuple[str, int, str]:
    params = engine.defaults.replace(temperature=0.0, max_new_tokens=max_tokens)
    result = engine.generate([prompt], engine.chat_params(params) if chat else params)[0]
    return result.text, len(result.token_ids), result.finish_reason


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    health = httpx.get(f"{server}/health").json()  # no key needed
    assert health["status"] == "ok"


def test_completion(client, local):
    out = client.completions.create(model=MODEL, prompt="Hello, world", max_tokens=8, temperature=0)
    prompt = local.encode_prompt("Hello, world")
    text, n, reason = _local_text(local, prompt, 8, chat=False)
    assert out.choices[0].text == text and out.choices[0].finish_reason == reason
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (len(prompt), n)
    assert out.usage.total_tokens == len(prompt) + n


def test_chat(client, local):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How are you?"}]
    out = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=10, temperature=0)
    prompt = local.encode_chat(messages)
    text, n, reason = _local_text(local, prompt, 10, chat=True)
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content == text and out.choices[0].finish_reason == reason
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (len(prompt), n)


def test_streaming_chat_with_usage(client):
    messages = [{"role": "user", "content": "Tell me about the quick brown fox."}]
    whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0)
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == whole.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert not chunks[-1].choices and chunks[-1].usage.model_dump() == whole.usage.model_dump()
    assert all(c.usage is None for c in chunks[:-1])


def test_streaming_completion_ends_with_done(server):
    body = {"model": MODEL, "prompt": "alpha beta", "max_tokens": 5, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{server}/v1/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert r.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all(e["object"] == "text_completion" for e in events)
    assert events[-1]["choices"][0]["finish_reason"] in ("length", "stop")


def test_logprobs(client, local):
    special = set(local.tokenizer.special_ids)
    plain = {"ignore_eos": True, "repetition_penalty": 1.0}  # greedy on the raw logits
    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=6,
                                          temperature=0, logprobs=True, top_logprobs=2, extra_body=plain)
    entries = chat.choices[0].logprobs.content
    assert len(entries) == chat.usage.completion_tokens == 6
    for e in entries:  # greedy: the chosen token is the most likely one
        assert len(e.top_logprobs) == 2 and e.logprob <= 0
        assert e.logprob == e.top_logprobs[0].logprob and e.token == e.top_logprobs[0].token
        assert bytes(e.bytes).decode("utf-8", errors="replace") == e.token
    text = bytes(b for e in entries if e.token not in special for b in e.bytes).decode("utf-8", errors="replace")
    assert text == chat.choices[0].message.content
    out = client.completions.create(model=MODEL, prompt="alpha", max_tokens=5, temperature=0, logprobs=1,
                                    extra_body=plain)
    lp = out.choices[0].logprobs
    texts = ["" if t in special else t for t in lp.tokens]
    assert lp.text_offset == [sum(len(t) for t in texts[:i]) for i in range(len(texts))]
    assert all(lp.token_logprobs[i] == max(lp.top_logprobs[i].values()) for i in range(5))


def test_auth_failure(server):
    bad = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.models.list()
    assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
    r = httpx.post(f"{server}/v1/completions", json={"model": MODEL, "prompt": "hi"})  # no key at all
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_bad_requests_get_openai_errors_and_the_server_survives(server, client, local):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    r = httpx.post(f"{server}/v1/chat/completions", content=b'{"model": "tiny-chat", "messages": [', headers=headers)
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    user = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=user)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model=MODEL, messages=user, max_tokens=0)
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.completions.create(model=MODEL, prompt="hi", max_tokens=local.max_len)
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.completions.create(model=MODEL, prompt=[5] * local.max_len, max_tokens=1)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model=MODEL, messages=user, temperature="hot")
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model=MODEL, messages="hi")
    with pytest.raises(openai.BadRequestError, match="role"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "robot", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="top_p"):
        client.chat.completions.create(model=MODEL, messages=user, top_p=0)
    with pytest.raises(openai.BadRequestError, match="seed"):
        client.chat.completions.create(model=MODEL, messages=user, seed=2**70)
    r = httpx.post(f"{server}/v1/completions", json={"model": MODEL, "prompt": [local.max_len * 1000]},
                   headers=headers)
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    extreme = client.completions.create(model=MODEL, prompt="hi", max_tokens=3, temperature=1.0, seed=1,
                                        extra_body={"repetition_penalty": 1e-40, "top_k": 5})
    assert extreme.usage.completion_tokens >= 1  # overflowing logits still give a token
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
    assert client.completions.create(model=MODEL, prompt="hi", max_tokens=2).usage.completion_tokens >= 1


def test_sixteen_concurrent_streaming_clients(server, local):
    prompts = [f"Client {i} says: the quick brown fox number {i}" for i in range(16)]

    def run(prompt: str) -> str:
        c = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=120)
        stream = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": prompt}],
                                           max_tokens=16, temperature=0, stream=True)
        return "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)

    with ThreadPoolExecutor(17) as pool:
        futures = [pool.submit(run, p) for p in prompts]
        running = []  # the engine's batch size while the clients stream
        while not all(f.done() for f in futures):
            running.append(httpx.get(f"{server}/health").json()["running"])
        got = [f.result() for f in futures]
    assert max(running) > 1  # served together, not one after another
    for prompt, text in zip(prompts, got):
        want, _, _ = _local_text(local, local.encode_chat([{"role": "user", "content": prompt}]), 16, chat=True)
        assert text == want


def test_client_disconnect_frees_its_slot(server):
    body = {"model": MODEL, "prompt": "alpha", "max_tokens": 400, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{server}/v1/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}) as r:
        lines = r.iter_lines()
        next(line for line in lines if line.startswith("data:"))
        assert httpx.get(f"{server}/health").json()["running"] == 1
    deadline = time.time() + 10  # the engine notices at its next token
    while httpx.get(f"{server}/health").json()["running"] and time.time() < deadline:
        time.sleep(0.05)
    assert httpx.get(f"{server}/health").json() == {"status": "ok", "running": 0, "waiting": 0}


def test_a_waiting_client_that_leaves_has_its_request_aborted(server, local):
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"model": MODEL, "prompt": "alpha", "max_tokens": local.max_len - 8, "ignore_eos": True}
    t0 = time.perf_counter()
    assert httpx.post(f"{server}/v1/completions", json=body, headers=headers, timeout=120).status_code == 200
    full = time.perf_counter() - t0  # the whole generation, for scale
    t0 = time.perf_counter()
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{server}/v1/completions", json=body, headers=headers, timeout=full / 10)
    while httpx.get(f"{server}/health").json()["running"] and time.perf_counter() - t0 < full:
        time.sleep(0.02)
    stopped = time.perf_counter() - t0
    assert httpx.get(f"{server}/health").json()["running"] == 0
    assert stopped < full / 10 + 1.5 and stopped < 0.8 * full  # aborted, not run to the end


def test_unsupported_openai_fields_are_refused_by_name(client):
    user = [{"role": "user", "content": "hi"}]
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    cases = [("tools", dict(tools=[tool])), ("tool_choice", dict(tool_choice="required")),
             ("response_format", dict(response_format={"type": "json_object"})),
             ("logit_bias", dict(logit_bias={"5": 10}))]
    for field, kwargs in cases:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model=MODEL, messages=user, max_tokens=1, **kwargs)
        assert e.value.body["param"] == field and f"'{field}' is not supported" in e.value.body["message"]
    for field, value in (("best_of", 3), ("suffix", " end")):
        with pytest.raises(openai.BadRequestError, match=f"'{field}' is not supported"):
            client.completions.create(model=MODEL, prompt="hi", max_tokens=1, **{field: value})
    # the values that ask for nothing are fine
    client.chat.completions.create(model=MODEL, messages=user, max_tokens=1, response_format={"type": "text"})
    client.completions.create(model=MODEL, prompt="hi", max_tokens=1, best_of=1)


def test_model_retrieve(server, client):
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_request_bodies_over_the_limit_get_413(server):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    big = json.dumps({"model": MODEL, "prompt": "x" * MAX_BODY, "max_tokens": 1}).encode()
    r = httpx.post(f"{server}/v1/completions", content=big, headers=headers)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    chunked = (big[i:i + 4096] for i in range(0, len(big), 4096))  # no Content-Length: counted as it arrives
    r = httpx.post(f"{server}/v1/completions", content=chunked, headers=headers)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


def _serve_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hunyuan_large", "serve", *args], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, **(env or {})))


def test_serve_refuses_an_empty_key_and_a_busy_port(folder):
    r = _serve_cli("--model", str(folder), "--api-key", "")
    assert r.returncode == 2 and r.stderr.strip() == (
        "error: the API key is empty; give a real key, or none to serve without one")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = _serve_cli("--model", str(folder), "--port", str(port), "--device", "cpu")
    assert r.returncode == 2 and "serving" not in r.stdout
    assert r.stderr.strip() == f"error: cannot listen on 127.0.0.1:{port}: the port is in use (another server?); choose --port"


def test_the_api_key_can_come_from_the_environment(folder, monkeypatch):
    from hunyuan_large import cli
    from hunyuan_large.infer import server as server_module

    seen = {}
    monkeypatch.setattr(server_module, "serve", lambda *a, **kw: seen.update(kw))
    monkeypatch.setenv("HUNYUAN_API_KEY", "from-env")
    assert cli.main(["serve", "--model", str(folder), "--threads", "1"]) == 0 and seen["api_key"] == "from-env"
    assert cli.main(["serve", "--model", str(folder), "--threads", "1", "--api-key", "flag"]) == 0 and seen["api_key"] == "flag"


def test_n_choices_are_seeded_and_streamed(client, local):
    extra = {"ignore_eos": True, "top_k": 50}
    kw = dict(model=MODEL, prompt="Once upon a time", max_tokens=6, temperature=1.0, seed=5, n=3, extra_body=extra)
    a, b = client.completions.create(**kw), client.completions.create(**kw)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert a.usage.completion_tokens == 18
    params = local.defaults.replace(temperature=1.0, top_k=50, seed=5, n=3, max_new_tokens=6, stop_token_ids=())
    want = local.generate([local.encode_prompt("Once upon a time")], params)
    assert [c.text for c in a.choices] == [r.text for r in want]
    messages = [{"role": "user", "content": "Tell me a story."}]
    kw = dict(model=MODEL, messages=messages, max_tokens=5, temperature=1.0, seed=9, n=2, extra_body=extra)
    whole = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    streamed = ["", ""]
    for c in chunks:
        for choice in c.choices:
            streamed[choice.index] += choice.delta.content or ""
    assert streamed == [c.message.content for c in whole.choices]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens == 10
    with pytest.raises(openai.BadRequestError, match="max_batch"):
        client.completions.create(model=MODEL, prompt="hi", n=MAX_BATCH + 1)


def _parse_prometheus(text: str) -> tuple[dict[str, str], dict[str, float]]:
    """Metric types from the TYPE lines and every sample's value, keyed by name{labels}."""
    types, samples = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            types[name] = kind
        elif line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return types, samples


def test_metrics_in_prometheus_text_format(server, client):
    client.completions.create(model=MODEL, prompt="alpha beta gamma", max_tokens=4, temperature=0)
    r = httpx.get(f"{server}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    types, samples = _parse_prometheus(r.text)
    for name in ("hunyuan_requests_running", "hunyuan_requests_waiting", "hunyuan_cache_blocks_used",
                 "hunyuan_prefix_cache_hit_rate"):
        assert types[name] == "gauge" and name in samples
    assert types["hunyuan_generated_tokens_total"] == "counter" and samples["hunyuan_generated_tokens_total"] >= 4
    assert 0 <= samples["hunyuan_prefix_cache_hit_rate"] <= 1
    for name in ("hunyuan_time_to_first_token_seconds", "hunyuan_inter_token_latency_seconds"):
        assert types[name] == "histogram"
        buckets = [v for k, v in samples.items() if k.startswith(f"{name}_bucket")]
        assert buckets == sorted(buckets) and buckets[-1] == samples[f"{name}_count"] > 0
