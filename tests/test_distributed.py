"""Distributed training on CPU with gloo and 2 processes (FSDP2, expert parallelism, DCP)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from hunyuan_large.tokenizer import HunyuanTokenizer
from hunyuan_large.train.export import export_run

from . import dist_workers
from .test_train import CODE

WORLD = 2


def spawn(fn, tmp_path: Path, *args, world: int = WORLD) -> list[dict]:
    mp.spawn(dist_workers.run_guarded, args=(world, str(tmp_path), fn, *args), nprocs=world, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    errors = [f"rank {rank}:\n{r['error']}" for rank, r in enumerate(results) if "error" in r]
    assert not errors, "\n".join(errors)
    return results


@pytest.mark.parametrize("world, ep", [(2, 2), (2, 1), (4, 2)])
def test_distributed_expert_parallel_equals_one_process(tmp_path, world, ep):
    # (4, 2): experts sharded over ep and, by FSDP, over the other mesh dimension too.
    for r in spawn(dist_workers.expert_parallel_matches_one_process, tmp_path, ep, world=world):
        assert r["logits"] <= 1e-5 and r["grad"] <= 1e-5, r


def test_distributed_each_rank_routes_its_micro_batch_like_one_process(tmp_path):
    results = spawn(dist_workers.routing_per_rank_equals_one_process, tmp_path)
    assert all(r["same"] and r["logits"] <= 1e-5 for r in results)
    assert sum(r["recycled"] for r in results) > 0  # capacity routing really recycled tokens


def test_distributed_config_mismatch_is_one_clear_error(tmp_path):
    results = spawn(dist_workers.config_mismatch, tmp_path)
    assert results[0]["message"].startswith("rank 1's resolved config differs from rank 0's")


# ----- whole runs under torchrun ---------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("corpus")
    src = root / "src"
    src.mkdir()
    for i in range(40):
        (src / f"m{i}.py").write_text(CODE.format(i=i, j=i * 3) * 4)
    HunyuanTokenizer.train([p.read_text() for p in src.iterdir()], 600).save(root / "tok")
    return src, root / "tok"


def write_config(path: Path, corpus, run_dir: Path, **train) -> Path:
    src, tok = corpus
    options = {"steps": 20, "batch_size": 4, "warmup_steps": 2, "log_every": 1, "eval_every": 10,
               "save_every": 10, "eval_tokens": 512, "routing": "dropless", "aux_loss_coef": 0.0,
               "lr": 3e-3, **train}
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in options.items())
    path.write_text(f'run_dir = "{run_dir}"\n[model]\npreset = "tiny"\n[tokenizer]\npath = "{tok}"\n'
                    f'[data]\nsources = {{code = ["{src}"]}}\nseq_len = 32\nworkers = 1\nval_fraction = 0.2\n'
                    f"[train]\n{body}\n")
    return path


def train(config: Path, *overrides: str, nproc: int = 1, ep: int = 1) -> subprocess.CompletedProcess:
    if nproc == 1:
        cmd = [sys.executable, "-m", "hunyuan_large", "train", str(config)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--standalone", "-m", "hunyuan_large", "train", str(config)]
    cmd += [*overrides, "--parallel.ep", str(ep)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def losses(run_dir: Path) -> tuple[list[float], list[float]]:
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return ([r["loss"] for r in records if "loss" in r], [r["val_loss"] for r in records if "val_loss" in r])


@pytest.mark.parametrize("ep", [1, 2])
def test_distributed_data_parallel_reproduces_one_process(tmp_path, corpus, ep):
    config = write_config(tmp_path / "run.toml", corpus, tmp_path / "unused")
    train(config, "--run_dir", str(tmp_path / "one"), "--train.batch_size", "4")
    train(config, "--run_dir", str(tmp_path / "two"), "--train.batch_size", "2", nproc=2, ep=ep)
    (one, val_one), (two, val_two) = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == len(two) == 20
    assert max(abs(a - b) for a, b in zip(one, two)) <= 1e-5
    assert max(abs(a - b) for a, b in zip(val_one, val_two)) <= 1e-5


def _continue_from(src: Path, dst: Path) -> None:
    import shutil

    shutil.copytree(src, dst)
    for late in [p for p in dst.glob("ckpt-*") if not p.name.endswith("0000010")]:
        shutil.rmtree(late)


@pytest.mark.slow  # ~90 s on 2 cores: keeps the default suite within CI's 10 minutes
def test_distributed_checkpoints_reshard_between_world_sizes(tmp_path, corpus):
    config = write_config(tmp_path / "run.toml", corpus, tmp_path / "unused", steps=12, keep_last=5)
    # 2 ranks with expert parallelism save; 1 process resumes from step 10, and the reverse.
    train(config, "--run_dir", str(tmp_path / "two"), "--train.batch_size", "2", nproc=2, ep=2)
    train(config, "--run_dir", str(tmp_path / "one"), "--train.batch_size", "4")
    _continue_from(tmp_path / "two", tmp_path / "two_then_one")
    train(config, "--run_dir", str(tmp_path / "two_then_one"), "--train.batch_size", "4")
    _continue_from(tmp_path / "one", tmp_path / "one_then_two")
    train(config, "--run_dir", str(tmp_path / "one_then_two"), "--train.batch_size", "2", nproc=2, ep=2)
    for base, resumed in (("two", "two_then_one"), ("one", "one_then_two")):
        want, got = losses(tmp_path / base)[0], losses(tmp_path / resumed)[0]
        assert max(abs(a - b) for a, b in zip(want[10:], got[10:])) <= 1e-5
    # The step-10 checkpoint of the 2-rank run loads in one process with every parameter intact.
    a = export_run(tmp_path / "two", tmp_path / "hf_two", checkpoint="ckpt-0000010")
    b = export_run(tmp_path / "two_then_one", tmp_path / "hf_again", checkpoint="ckpt-0000010")
    from safetensors.torch import load_file

    ta, tb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_distributed_rank_failure_stops_the_job_with_a_message(tmp_path, corpus):
    config = write_config(tmp_path / "run.toml", corpus, tmp_path / "run", steps=100000, save_every=5)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
           "-m", "hunyuan_large", "train", str(config), "--train.batch_size", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.time() + 300
    while not list((tmp_path / "run").glob("ckpt-*[0-9]")) and time.time() < deadline:
        time.sleep(0.5)
    victim = _worker_pid(proc.pid, rank=1)
    os.kill(victim, signal.SIGKILL)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert "another rank failed or the job was stopped" in out
    ckpt = sorted((tmp_path / "run").glob("ckpt-*[0-9]"))[-1]
    export_run(tmp_path / "run", tmp_path / "hf", checkpoint=ckpt.name)  # still loadable


def _worker_pid(parent: int, rank: int) -> int:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and f"PPid:\t{parent}" in status:
            return int(pid)
    raise AssertionError("worker process not found")
