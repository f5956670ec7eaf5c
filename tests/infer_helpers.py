"""Shared by the inference tests: a small model folder in the release's layout, one-thread runs."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import hunyuan_large
from hunyuan_large import HunyuanForCausalLM, ModelConfig, save_pretrained
from hunyuan_large.tokenizer import HunyuanTokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 20,
    "Hello, world! How are you today? I am fine, thank you. " * 20,
    "Numbers 12345 and words: alpha beta gamma delta. " * 20,
]
GENERATION_CONFIG = {"do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.6, "repetition_penalty": 1.05}


def make_model_folder(folder: Path, seed: int = 0) -> Path:
    """The tiny preset with a BPE tokenizer trained on TEXTS and the release's sampling defaults."""
    tok = HunyuanTokenizer.train(TEXTS, vocab_size=600, min_frequency=1)
    torch.manual_seed(seed)
    model = HunyuanForCausalLM(ModelConfig.from_preset("tiny", vocab_size=tok.vocab_size, initializer_range=0.1))
    save_pretrained(model, folder)
    tok.save(folder)
    stops = {"eos_token_id": [tok.chat_eos_id, tok.extra_5_id], "pad_token_id": tok.pad_id}
    (folder / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG | stops))
    return folder


@pytest.fixture(scope="module")
def one_thread():
    """Tiny shapes gain nothing from more intra-op threads, and with one, other jobs on a busy
    machine cannot stall every op at an OpenMP barrier (measured: 88 s -> 6 s for these tests)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(folder: Path, *args: str):
    """`hunyuan serve --model folder ARGS` in a subprocess (one thread, CPU); yields its base URL."""
    import httpx

    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(  # one thread: see one_thread
        [str(Path(hunyuan_large.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "hunyuan_large", "serve", "--model", str(folder), "--port", str(port),
           "--device", "cpu", *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}: {proc.stdout.read()}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > deadline:
                pytest.fail("server did not come up within 90 s")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

