"""Interrupts and misuse of a run folder: Ctrl-C/SIGTERM at any point resume exactly, one trainer per
folder, a torn metrics line, a changed model, bad values rejected up front, environment failures."""

from __future__ import annotations

import errno
import io
import os
import signal
from pathlib import Path

import pytest
import torch.distributed.checkpoint as dcp
from rich.console import Console

from hunyuan_large import HunyuanForCausalLM, cli
from hunyuan_large.errors import UserError
from hunyuan_large.train import RunConfig, Trainer
from hunyuan_large.train.config import RunConfigError
from hunyuan_large.train.run_state import RunFolderBusy, checkpoints, load_model

from .test_train import losses, tiny_run


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> list[float]:
    """Losses of an uninterrupted 6-step run (grad_accum 2, saves only at the end)."""
    cfg = tiny_run(tmp_path_factory.mktemp("straight"), grad_accum=2, save_every=100)
    Trainer(cfg).run()
    return losses(Path(cfg.run_dir))


def signal_during_step(monkeypatch, trainer_step: int, micro: int, signals: list[int]) -> None:
    """Deliver `signals` to this process inside micro-batch `micro` of optimizer step `trainer_step`."""
    forward, calls = HunyuanForCausalLM.forward, {"n": 0}

    def forward_then_signal(self, *a, **kw):
        if self.training:
            calls["n"] += 1
            if calls["n"] == trainer_step * 2 + micro + 1:  # grad_accum = 2 forwards per step
                for s in signals:
                    os.kill(os.getpid(), s)
        return forward(self, *a, **kw)

    monkeypatch.setattr(HunyuanForCausalLM, "forward", forward_then_signal)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_step_finishes_the_step_saves_and_resumes_exactly(tmp_path, monkeypatch, straight, sig):
    cfg = tiny_run(tmp_path, grad_accum=2, save_every=100)
    before = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]  # SIG_IGN when run in the background
    signal_during_step(monkeypatch, trainer_step=3, micro=1, signals=[sig])  # between micro-batches
    result = Trainer(cfg).run()
    assert result.interrupted and result.steps == 4  # step 4 completed, then saved
    assert [p.name for p in checkpoints(Path(cfg.run_dir))] == ["ckpt-0000004"]
    monkeypatch.undo()
    assert not Trainer(cfg).run().interrupted
    assert losses(Path(cfg.run_dir)) == straight  # bit-identical, no batch skipped or repeated
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == before  # handlers restored


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, straight):
    cfg = tiny_run(tmp_path, grad_accum=2, save_every=2)
    signal_during_step(monkeypatch, trainer_step=3, micro=0, signals=[signal.SIGINT, signal.SIGINT])
    result = Trainer(cfg).run()
    assert result.interrupted and result.steps == 3
    assert [p.name for p in checkpoints(Path(cfg.run_dir))] == ["ckpt-0000002"]  # the half step is not saved
    monkeypatch.undo()
    Trainer(cfg).run()
    assert losses(Path(cfg.run_dir)) == straight


def test_ctrl_c_during_a_save_lets_it_complete(tmp_path, monkeypatch, straight):
    cfg = tiny_run(tmp_path, grad_accum=2, save_every=3)
    save = dcp.save

    def save_with_interrupts(*a, **kw):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # a second press does not abort the write either
        return save(*a, **kw)

    monkeypatch.setattr(dcp, "save", save_with_interrupts)
    result = Trainer(cfg).run()
    assert result.interrupted and result.steps == 3
    run_dir = Path(cfg.run_dir)
    assert [p.name for p in checkpoints(run_dir)] == ["ckpt-0000003"] and not list(run_dir.glob("*.tmp"))
    load_model(run_dir / "ckpt-0000003")
    monkeypatch.undo()
    Trainer(cfg).run()
    assert losses(run_dir) == straight


def test_one_trainer_per_run_folder(tmp_path):
    cfg = tiny_run(tmp_path, steps=2)
    first = Trainer(cfg)
    with pytest.raises(RunFolderBusy, match=f"in use by another trainer \\(PID {os.getpid()}\\)"):
        Trainer(cfg)
    first.run()
    Trainer(cfg).run()  # released when the first run ended


def test_a_torn_metrics_line_is_tolerated_on_resume(tmp_path, monkeypatch, straight):
    cfg = tiny_run(tmp_path, grad_accum=2, save_every=100)
    signal_during_step(monkeypatch, trainer_step=2, micro=0, signals=[signal.SIGINT])
    Trainer(cfg).run()
    monkeypatch.undo()
    with open(Path(cfg.run_dir) / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "tokens": 51')  # the process died mid-write
    Trainer(cfg).run()
    assert losses(Path(cfg.run_dir)) == straight


def test_resuming_with_another_model_shape_is_one_line(tmp_path):
    cfg = tiny_run(tmp_path, steps=2, save_every=1)
    Trainer(cfg).run()
    changed = tiny_run(tmp_path, steps=4, save_every=1)
    changed.model.overrides["intermediate_size"] = 48
    with pytest.raises(UserError, match="ckpt-0000002 has .* of shape .*the model config changed"):
        Trainer(changed).run()


@pytest.mark.parametrize("override, message", [
    (("log_every", 0), "train.log_every must be >= 1"),
    (("save_every", 0), "train.save_every must be >= 1"),
    (("eval_every", -1), "train.eval_every must be >= 1"),
    (("grad_clip", -1.0), "train.grad_clip must be >= 0"),
    (("beta1", 1.0), r"train.beta1 and train.beta2 must be in \[0, 1\)"),
    (("beta2", -0.1), r"train.beta1 and train.beta2 must be in \[0, 1\)"),
    (("seed", -3), "train.seed must be >= 0"),
    (("device", "cuda:7"), "train.device 'cuda:7' is not available"),
    (("device", "tpu"), "train.device 'tpu' is not available"),
])
def test_bad_values_are_rejected_before_any_work(tmp_path, override, message):
    with pytest.raises(RunConfigError, match=message):
        tiny_run(tmp_path, **dict([override]))
    assert not (tmp_path / "run").exists()  # nothing tokenized or written


def test_bad_moe_shape_is_rejected_before_data_work(tmp_path):
    with pytest.raises(RunConfigError, match=r"\[model\]: moe_topk 4 must be <= num_experts 2"):
        RunConfig.from_toml(None, ["--model.num_experts", "2", "--model.moe_topk", "4"])


def test_an_unwritable_run_folder_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    cfg = tiny_run(tmp_path)
    cfg.run_dir = str(tmp_path / "file" / "run")
    with pytest.raises(UserError, match="cannot write in the run folder"):
        Trainer(cfg)


def test_environment_failures_are_one_line(monkeypatch, capsys):
    import hunyuan_large.train.commands as commands

    def full_disk(args):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/ckpt-0000003.tmp")

    monkeypatch.setattr(commands, "_train", full_disk)
    assert cli.main(["train", "run.toml"]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: the disk is full: runs/x/ckpt-0000003.tmp (No space left on device)")


def test_an_empty_validation_split_warns(tmp_path):
    def console_of(run: str, val_fraction: float) -> str:
        cfg = tiny_run(tmp_path / run)
        cfg.data.val_fraction = val_fraction
        out = io.StringIO()
        Trainer(cfg, console=Console(file=out, width=300))
        return out.getvalue()

    assert "warning: the validation split of code has fewer than 33 tokens: no val_loss" in console_of("a", 1e-4)
    assert "warning" not in console_of("b", 0.0)  # no validation asked for
