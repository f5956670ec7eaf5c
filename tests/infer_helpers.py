"""Shared by the inference tests: a small model folder in the release's layout, one-thread runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

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
