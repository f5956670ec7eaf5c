"""The synth pipeline's parts: rating and answer parsers on malformed outputs, MinHash, endpoint backend."""

from __future__ import annotations

import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hunyuan_large.errors import UserError
from hunyuan_large.synth.minhash import MinHashIndex
from hunyuan_large.synth.parsing import LEAK_WORDS_RE, final_number, is_refusal, parse_rating

pytest.importorskip("httpx")
from hunyuan_large.synth.backends import BackendConfig, OpenAIBackend, Request  # noqa: E402


@pytest.mark.parametrize("text, rating", [
    ("Rating: 7", 7.0), ("rating:8 - solid", 8.0), ("**Rating:** 9/10", 9.0), ("I'd give it 6/10.", 6.0),
    ("Score of 4.5 overall", 4.5), ("  3 ", 3.0), ("7 out of 10", 7.0), ("Overall: good.", 7.0),
    ("Rating: 11", None), ("Rating: 0", None), ("no idea", None), ("", None), ("Rating: ten", None),
])
def test_parse_rating(text, rating):
    assert parse_rating(text) == rating


@pytest.mark.parametrize("text, answer", [
    ("so 3 + 4 = 7", "7"), ("The total is 1,234.50 dollars.", "1234.5"), ("x = -2.0", "-2"), ("none", None),
    ("answer: 12\n\n", "12"),
])
def test_final_number(text, answer):
    assert final_number(text) == answer


def test_refusals():
    assert is_refusal("I'm sorry, but I can't help with that.") and is_refusal("As an AI, I won't")
    assert not is_refusal("Sorting a list in Python is easy.")


@pytest.mark.parametrize("text, leaks", [
    ("#Reply#\nI'm looking for a new puppy.", True),  # SmolLM2 invents marker headers
    ("Intro\n  #Teacher's Example#\nWhat do you need?", True),
    ("Here's a rewritten version of the instruction: sort a list", True),
    ("Here is the revised passage with additional instructions", True),
    ("Rewritten Instruction: sort a list", True),
    ("# Sorting\nSort a list of 10 numbers in C# and explain #include in C.", False),
    ("Write a function; use #pragma once in the header.", False),
])
def test_leaked_template_words(text, leaks):
    assert bool(LEAK_WORDS_RE.search(text)) == leaks


def _jaccard(a: str, b: str, n: int = 3) -> float:
    def grams(t):
        w = t.lower().split()
        return {" ".join(w[i:i + n]) for i in range(len(w) - n + 1)}
    ga, gb = grams(a), grams(b)
    return len(ga & gb) / len(ga | gb)


def test_minhash_estimates_jaccard_and_finds_near_duplicates():
    rng = random.Random(0)
    words = [f"w{i}" for i in range(300)]
    base = [rng.choice(words) for _ in range(200)]
    index = MinHashIndex(threshold=0.5, num_perm=256, seed=1)
    for changed in (5, 20, 60, 120):
        other = list(base)
        for i in rng.sample(range(200), changed):
            other[i] = rng.choice(words)
        a, b = " ".join(base), " ".join(other)
        estimate = float((index.signature(a) == index.signature(b)).mean())
        # Each slot agrees with probability J: 256 slots give a standard error <= 0.031; allow 4 of them.
        assert abs(estimate - _jaccard(a, b)) < 4 * 0.5 / 256 ** 0.5
    assert index.add(" ".join(base)) is None
    assert index.add(" ".join(base[:195] + ["new"] * 5)) is not None  # ~95% similar: a duplicate
    assert index.add(" ".join(rng.choice(words) for _ in range(200))) is None  # unrelated


class _Fake(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint: fails the first `fail` requests with 503, then echoes; tracks concurrency."""

    def do_POST(self):  # noqa: N802
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with srv.lock:
            srv.seen.append((self.path, body, self.headers.get("Authorization")))
            failing = srv.fail > 0
            srv.fail -= failing
            srv.active += 1
            srv.peak = max(srv.peak, srv.active)
        time.sleep(srv.delay)
        with srv.lock:
            srv.active -= 1
        if failing:
            self.send_response(503)
            self.end_headers()
            return
        text = body["messages"][-1]["content"] if "messages" in body else str(body["prompt"])
        chat = "messages" in body
        choice = {"message": {"role": "assistant", "content": "echo " + text}} if chat else {"text": "echo " + text}
        data = json.dumps({"choices": [choice]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_servers():
    servers = []
    for _ in range(2):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _Fake)
        srv.lock, srv.seen, srv.fail, srv.active, srv.peak, srv.delay = threading.Lock(), [], 0, 0, 0, 0.0
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
    yield servers
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def _backend(servers, **kw) -> OpenAIBackend:
    urls = [f"http://127.0.0.1:{s.server_address[1]}/v1" for s in servers]
    return OpenAIBackend("ep", BackendConfig(kind="openai", model="m", endpoints=urls, api_key="k", **kw))


def test_endpoints_spread_bounded_and_ordered(fake_servers):
    for s in fake_servers:
        s.delay = 0.05
    backend = _backend(fake_servers, max_in_flight=4)
    reqs = [Request(messages=({"role": "user", "content": f"q{i}"},), seed=i) for i in range(16)]
    assert backend.generate(reqs) == [f"echo q{i}" for i in range(16)]
    assert [len(s.seen) for s in fake_servers] == [8, 8]  # round-robin
    assert 2 <= sum(s.peak for s in fake_servers) and max(s.peak for s in fake_servers) <= 4
    path, body, auth = fake_servers[0].seen[0]
    assert path == "/v1/chat/completions" and auth == "Bearer k" and body["model"] == "m" and "seed" in body
    assert backend.generate([Request(prompt=(1, 2, 3), stop=("</s>",))]) == ["echo [1, 2, 3]"]
    assert fake_servers[0].seen[-1][0] == "/v1/completions" or fake_servers[1].seen[-1][0] == "/v1/completions"


def test_retries_with_backoff_then_gives_up(fake_servers):
    fake_servers[0].fail = fake_servers[1].fail = 2
    backend = _backend(fake_servers[:1], max_in_flight=1, retries=3, backoff=0.05)
    start = time.perf_counter()
    assert backend.generate([Request(messages=({"role": "user", "content": "hi"},))]) == ["echo hi"]
    assert backend.attempts == 3 and time.perf_counter() - start >= 0.05 + 0.1  # slept 0.05, then 0.1
    fake_servers[1].fail = 10
    with pytest.raises(UserError, match="HTTP 503 .after 3 attempts"):
        _backend(fake_servers[1:], retries=2, backoff=0.01).generate([Request(prompt="x")])
    dead = OpenAIBackend("dead", BackendConfig(kind="openai", model="m", endpoints=["http://127.0.0.1:9/v1"],
                                               retries=1, backoff=0.01, timeout=2))
    with pytest.raises(UserError, match="ConnectError"):
        dead.generate([Request(prompt="x")])
