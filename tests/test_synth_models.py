"""The synth pipeline on real models: our engine in-process (configs/synth.toml end to end) and a
`hunyuan serve` process on loopback through the endpoint backend."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from hunyuan_large.cli import main
from hunyuan_large.synth.backends import BackendConfig, EngineBackend, OpenAIBackend, Request
from hunyuan_large.synth.stages import read_jsonl

from .infer_helpers import make_model_folder, one_thread  # noqa: F401 (fixture)
from .test_server import KEY, MODEL, server  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_model_folder(tmp_path_factory.mktemp("model"), seed=1)


def test_engine_backend_matches_the_engine_and_opens_user_turns(folder):
    backend = EngineBackend("e", BackendConfig(kind="engine", model=str(folder), device="cpu"))
    engine, tok = backend.engine, backend.tokenizer
    msgs = ({"role": "user", "content": "Hello, world!"},)
    [text] = backend.generate([Request(messages=msgs, max_tokens=12, temperature=0.0)])
    params = engine.chat_params().replace(max_new_tokens=12, temperature=0.0)
    assert text == engine.generate([engine.encode_chat(list(msgs))], params)[0].text
    # The prefix is the template's text before the user's content; the stop is what closes it.
    ids, stop = backend.user_prefix()
    full = tok.apply_chat_template(list(msgs), add_generation_prompt=False)
    body = tok.encode("Hello, world!", add_special_tokens=False)
    assert full == [*ids, *body, *tok.encode(stop[0], add_special_tokens=False)]
    outs = backend.generate([Request(prompt=ids, stop=stop, max_tokens=16, seed=s) for s in range(4)])
    assert len(outs) == 4 and all(isinstance(o, str) for o in outs)


@pytest.mark.slow  # starting the server takes 10-40 s
def test_endpoint_backend_against_hunyuan_serve(server, folder):  # noqa: F811
    cfg = BackendConfig(kind="openai", model=MODEL, endpoints=[f"{server}/v1"], api_key=KEY, max_in_flight=4,
                        tokenizer=str(folder))
    backend = OpenAIBackend("serve", cfg)
    reqs = [Request(messages=({"role": "user", "content": f"Numbers {i}"},), max_tokens=8, temperature=0.0)
            for i in range(6)]
    texts = backend.generate(reqs)
    engine = EngineBackend("e", BackendConfig(kind="engine", model=str(folder), device="cpu"))
    assert texts == engine.generate(reqs)  # greedy: the server's replies are the engine's
    ids, stop = backend.user_prefix()
    assert len(backend.generate([Request(prompt=ids, stop=stop, max_tokens=8, seed=3)])) == 1


def test_config_end_to_end_with_the_cli(folder, tmp_path):
    text = (ROOT / "configs" / "synth.toml").read_text()
    text = text.replace('model = "runs/demo/model"', f'model = "{folder}"').replace(
        'out = "runs/synth"', f'out = "{tmp_path / "out"}"')
    config = tmp_path / "synth.toml"
    config.write_text(text)
    start = time.perf_counter()
    cwd = os.getcwd()
    os.chdir(ROOT)  # seed paths are relative to the repository
    try:
        assert main(["synth", str(config)]) == 0
        first = time.perf_counter() - start
        assert main(["synth", str(config)]) == 0  # all reused
    finally:
        os.chdir(cwd)
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    stages = summary["stages"]
    prefixes = 2 * 2  # prefix_per_shard x shards of 8
    assert stages[0]["in"] == summary["seeds"] == 6 + 8 + 1
    for s, extra in zip(stages, [prefixes, 0, 0, 0, 0]):
        assert s["in"] + extra - sum(s["dropped"].values()) == s["kept"]
    assert all(s["reused_shards"] > 0 for s in stages)
    sft = read_jsonl(out / "sft.jsonl")
    assert len(sft) == stages[-1]["kept"] == summary["sft"]
    for pair in read_jsonl(out / "dpo.jsonl"):
        assert pair["prompt"][0]["role"] == "user" and pair["chosen"] != pair["rejected"]
    assert first < 60
