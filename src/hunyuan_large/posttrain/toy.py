"""A toy post-training setup in seconds: a tiny random model folder and rule-following data.

`python -m hunyuan_large.posttrain.toy DIR` writes DIR/model (tiny MoE preset, a BPE vocabulary
trained on the toy text, the release chat template), DIR/sft.jsonl (sums answered correctly)
and DIR/pairs.jsonl (chosen: the correct sum, rejected: a wrong one). configs/sft.toml,
dpo.toml and rm.toml train on these.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import torch

from ..config import ModelConfig, padded_vocab
from ..model import HunyuanForCausalLM
from ..pretrained import save_pretrained
from ..tokenizer import HunyuanTokenizer


def problem(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(0, 49), rng.randint(0, 49)
    return f"What is {a} plus {b}?", a + b


def conversation(question: str, answer: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": f"The answer is {answer}."}]


def write_toy(folder: str | Path, n: int = 256, seed: int = 0) -> Path:
    """The tiny model folder and the two jsonl files under `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    problems = [problem(rng) for _ in range(n)]
    with open(folder / "sft.jsonl", "w") as f:
        for q, a in problems:
            f.write(json.dumps({"messages": conversation(q, a)}) + "\n")
    with open(folder / "pairs.jsonl", "w") as f:
        for q, a in problems:
            wrong = a + rng.choice([-10, -2, -1, 1, 2, 10])
            f.write(json.dumps({"prompt": [{"role": "user", "content": q}], "chosen": f"The answer is {a}.",
                                "rejected": f"The answer is {wrong}."}) + "\n")
    texts = [f"{q} The answer is {a}." for q, a in problems]
    tok = HunyuanTokenizer.train(texts, vocab_size=640, min_frequency=1)
    torch.manual_seed(seed)
    cfg = ModelConfig.from_preset("tiny", vocab_size=padded_vocab(tok.vocab_size), pad_token_id=tok.pad_id,
                                  bos_token_id=tok.bos_id, eos_token_id=tok.chat_eos_id)
    save_pretrained(HunyuanForCausalLM(cfg), folder / "model")
    tok.save(folder / "model")
    return folder


if __name__ == "__main__":
    print(write_toy(sys.argv[1] if len(sys.argv) > 1 else "runs/toy"))
