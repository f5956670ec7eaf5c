"""SFT: packing changes nothing (block-diagonal mask, per-document positions), dropout, exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hunyuan_large.posttrain.chat_mask import tokens_and_mask
from hunyuan_large.posttrain.loop import load_policy
from hunyuan_large.posttrain.packing import best_fit_decreasing, pack
from hunyuan_large.posttrain.sft import SFTTrainer, example, sft_loss_sum
from hunyuan_large.tokenizer import load_tokenizer

from .posttrain_helpers import check_exact_resume, run_config, toy  # noqa: F401


def test_best_fit_decreasing() -> None:
    lengths = [5, 4, 3, 3, 2, 2, 1]
    bins = best_fit_decreasing(lengths, 7)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 7 for b in bins)
    assert len(bins) == 3  # 20 tokens in bins of 7: the lower bound


def test_packed_loss_equals_unpacked(toy: Path, tmp_path: Path) -> None:  # noqa: F811
    cfg = run_config(toy, tmp_path, model={"attention_dropout": 0.0, "hidden_dropout": 0.0})
    model = load_policy(cfg.model.init, cfg).eval()
    tok = load_tokenizer(toy / "model")
    lines = (toy / "sft.jsonl").read_text().splitlines()[:12]
    examples = [example(*tokens_and_mask(tok, json.loads(line)["messages"]), 10_000) for line in lines]
    packed = pack(examples, 96, tok.pad_id)
    assert len(packed) < len(examples) and (packed.segment_ids.max(1).values > 0).all()  # really packed
    with torch.no_grad():
        ce, _ = sft_loss_sum(model, packed)
        alone = [sft_loss_sum(model, pack([e], len(e.inputs), tok.pad_id))[0] for e in examples]
    learned = int((packed.targets != -100).sum())
    assert learned == sum(sum(t != -100 for t in e.targets) for e in examples)
    torch.testing.assert_close(ce / learned, torch.stack(alone).sum() / learned, rtol=0, atol=1e-5)


def test_dropout_only_in_training(toy: Path, tmp_path: Path) -> None:  # noqa: F811
    model = load_policy(str(toy / "model"), run_config(toy, tmp_path))
    ids = torch.randint(0, 500, (1, 12))
    model.train()
    assert not torch.equal(model(ids).logits, model(ids).logits)
    model.eval()
    assert torch.equal(model(ids).logits, model(ids).logits)


def test_sft_exact_resume(toy: Path, tmp_path: Path) -> None:  # noqa: F811
    cfg = run_config(toy, tmp_path / "run", train={"epochs": 3})
    check_exact_resume(lambda: SFTTrainer(cfg), tmp_path / "run")


def _sft(config: Path, nproc: int, *overrides: str) -> list[dict]:
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "hunyuan_large", "sft", str(config), *overrides]
    if nproc > 1:
        cmd[1:3] = ["-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--standalone", "-m", "hunyuan_large"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run_dir = Path(overrides[overrides.index("--run_dir") + 1])
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # two torchrun launches, ~25 s
def test_sft_two_processes_reproduce_one(toy: Path, tmp_path: Path) -> None:  # noqa: F811
    """torchrun with 2 gloo ranks (FSDP2, half the rows each) logs the losses of one process."""
    config = tmp_path / "sft.toml"
    config.write_text(f'[model]\ninit = "{toy / "model"}"\nattention_dropout = 0.0\nhidden_dropout = 0.0\n'
                      f'[data]\ntrain = ["{toy / "sft.jsonl"}"]\nseq_len = 64\n'
                      '[train]\nepochs = 2\nlr = 1e-3\nlog_every = 1\nsave_every = 100\nplots = false\n'
                      'mfu = false\ndevice = "cpu"\n')
    one = _sft(config, 1, "--run_dir", str(tmp_path / "one"), "--train.batch_size", "4")
    two = _sft(config, 2, "--run_dir", str(tmp_path / "two"), "--train.batch_size", "2")
    assert len(one) == len(two) > 2
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(one, two)) <= 1e-5
    assert (tmp_path / "two" / "model" / "model.safetensors").is_file()
