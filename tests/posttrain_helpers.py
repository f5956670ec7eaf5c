"""Shared by the post-training tests: the toy folder (written once per session) and run configs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from hunyuan_large.posttrain.config import PostConfig
from hunyuan_large.posttrain.toy import write_toy


@pytest.fixture(scope="session")
def toy(tmp_path_factory) -> Path:
    return write_toy(tmp_path_factory.mktemp("toy"), n=48)


def run_config(toy: Path, run_dir: Path, data_file: str = "sft.jsonl", **sections) -> PostConfig:
    raw = {"run_dir": str(run_dir), "model": {"init": str(toy / "model")},
           "data": {"train": [str(Path(toy) / data_file)], "seq_len": 64},
           "train": {"epochs": 1, "batch_size": 4, "lr": 1e-3, "log_every": 1, "save_every": 3, "keep_last": 10,
                     "device": "cpu", "plots": False, "mfu": False}}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return PostConfig.from_dict(raw)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model" / "model.safetensors")


def check_exact_resume(make_trainer, run_dir: Path) -> None:
    """A run, then the same run resumed from its middle checkpoint: identical weights and metrics."""
    make_trainer().run()
    first, log = weights(run_dir), _metrics(run_dir)
    last = sorted(run_dir.glob("ckpt-*"))[-1]
    assert last.name != "ckpt-0000003"
    shutil.rmtree(last)
    make_trainer().run()
    second = weights(run_dir)
    assert first.keys() == second.keys()
    for k in first:
        assert torch.equal(first[k], second[k]), k
    assert _metrics(run_dir) == log


def _metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the timing."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "mfu", "online/sample_s")} for r in rows]
