"""Reward model: learns a toy preference rule (held-out accuracy), saves/loads as a folder, exact resume."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from hunyuan_large.cli import main
from hunyuan_large.posttrain.rm import RMTrainer, bradley_terry, score_pairs

from .posttrain_helpers import check_exact_resume, run_config, toy  # noqa: F401


def _rule_pairs(path: Path, n: int, seed: int, prefer_echo: bool = False) -> Path:
    """Preferred: a plain answer; dispreferred: the question echoed back (or the reverse). A lexical
    rule a tiny model learns."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            a, b = rng.randint(0, 49), rng.randint(0, 49)
            answer, echo = f"The answer is {a + b}.", f"What is {b} plus {a}?"
            chosen, rejected = (echo, answer) if prefer_echo else (answer, echo)
            f.write(json.dumps({"prompt": [{"role": "user", "content": f"What is {a} plus {b}?"}],
                                "chosen": chosen, "rejected": rejected}) + "\n")
    return path


def test_bradley_terry_formula() -> None:
    rc, rr = torch.tensor([1.0, -0.5]), torch.tensor([0.0, 0.5])
    want = (torch.log1p(torch.exp(-(rc - rr)))).mean() + 0.1 * ((rc + rr) ** 2).mean()
    torch.testing.assert_close(bradley_terry(rc, rr, 0.1), want)


def test_reward_model_learns_a_rule(toy: Path, tmp_path: Path) -> None:  # noqa: F811
    train, held_out = _rule_pairs(tmp_path / "train.jsonl", 64, 1), _rule_pairs(tmp_path / "test.jsonl", 40, 2)
    cfg = run_config(toy, tmp_path / "run", str(train), train={"epochs": 2, "batch_size": 8, "lr": 3e-3, "save_every": 100},
                     model={"attention_dropout": 0.0, "hidden_dropout": 0.0})
    RMTrainer(cfg).run()
    result = score_pairs(str(tmp_path / "run" / "model"), str(held_out))
    assert result["pairs"] == 40 and result["accuracy"] >= 0.9, result
    assert main(["rm", "score", "--model", str(tmp_path / "run" / "model"), str(held_out)]) == 0


def test_rm_exact_resume(toy: Path, tmp_path: Path) -> None:  # noqa: F811
    cfg = run_config(toy, tmp_path / "run", "pairs.jsonl")
    check_exact_resume(lambda: RMTrainer(cfg), tmp_path / "run")
