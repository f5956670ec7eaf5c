"""Trainer: schedule, expert learning rates, exact resume, anneal mixture, non-finite steps, export."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hunyuan_large import HunyuanForCausalLM, load_pretrained
from hunyuan_large.train import RunConfig, Trainer
from hunyuan_large.train.config import RunConfigError, TrainSection
from hunyuan_large.train.export import export_run
from hunyuan_large.train.optim import build_optimizer, surge_expert_scale, surge_optimal_lr
from hunyuan_large.train.run_state import checkpoints, load_model
from hunyuan_large.train.schedule import Schedule
from hunyuan_large.train.trainer import TrainingDiverged

from .conftest import ROOT, make_model

CODE = "def f(x):\n    return x * {i} + {j}\n\n\nclass K{i}:\n    value = '{j}'\n"


def tiny_run(tmp_path: Path, categories=("code",), **train) -> RunConfig:
    sources = {}
    for c, cat in enumerate(categories):
        src = tmp_path / f"src_{cat}"
        src.mkdir(parents=True, exist_ok=True)
        for i in range(30):
            (src / f"m{i}.py").write_text(CODE.format(i=i + 100 * c, j=i * 7) * 3)
        sources[cat] = [str(src)]
    return RunConfig.from_dict({
        "run_dir": str(tmp_path / "run"),
        "model": {"preset": "tiny"},
        "tokenizer": {"vocab_size": 600},
        "data": {"sources": sources, "seq_len": 32, "workers": 1, "val_fraction": 0.2},
        "train": {"steps": 6, "batch_size": 4, "warmup_steps": 1, "log_every": 1, "eval_every": 3,
                  "save_every": 3, "eval_tokens": 256, "lr": 3e-3, **train},
    })


def losses(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


@pytest.mark.parametrize("decay", ["cosine", "linear", "constant"])
def test_schedule_has_three_phases_and_anneals_to_a_tenth(decay):
    s = Schedule(peak=1.0, total=1000, warmup=100, decay=decay, decay_floor=0.3)
    assert s.anneal_start == 950
    assert [s.phase(i) for i in (0, 99, 100, 949, 950, 999)] == ["warmup"] * 2 + ["decay"] * 2 + ["anneal"] * 2
    assert s.factor(0) == pytest.approx(0.01) and s.factor(99) == pytest.approx(1.0)
    decay_end = 1.0 if decay == "constant" else 0.3
    assert s.factor(100) == pytest.approx(1.0)
    assert s.factor(949) == pytest.approx(decay_end, abs=0.02)
    assert s.factor(999) == pytest.approx(0.1)  # the anneal ends at 0.1x peak
    anneal = [s.factor(i) for i in range(950, 1000)]
    steps = [b - a for a, b in zip(anneal, anneal[1:])]
    assert all(d == pytest.approx(steps[0]) for d in steps)  # linear
    if decay != "constant":
        decays = [s.factor(i) for i in range(100, 950)]
        assert all(b <= a + 1e-12 for a, b in zip(decays, decays[1:]))  # monotone


def test_routed_experts_get_the_scaled_learning_rate():
    model = make_model()
    opt = build_optimizer(model, TrainSection(lr=1e-3, weight_decay=0.1, beta1=0.9, beta2=0.95, eps=1e-8),
                          expert_lr_scale=0.31)
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["expert"]["lr"] == pytest.approx(0.31e-3) and groups["base"]["lr"] == 1e-3
    ids = lambda g: {id(p) for p in groups[g]["params"]}  # noqa: E731
    layer = model.model.layers[0]
    assert id(layer.mlp.experts.gate_up_proj) in ids("expert")
    assert id(layer.mlp.gate.wg.weight) in ids("base") and id(layer.mlp.shared_mlp.up_proj.weight) in ids("base")
    assert id(layer.input_layernorm.weight) in ids("no_decay") and groups["no_decay"]["weight_decay"] == 0
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_surge_rule():
    assert surge_optimal_lr(1e6, 1e6) == pytest.approx(1.0)  # peak at B = B_noise
    scale = surge_expert_scale(batch_tokens=1e5, b_noise=1e7, top_k=1, num_experts=16)
    assert scale == pytest.approx(math.sqrt(1 / 16), rel=0.02) and scale < 1  # small B: ~sqrt(k/E)
    assert surge_expert_scale(batch_tokens=1e9, b_noise=1e6, top_k=1, num_experts=16) > 1


def test_resume_is_exact(tmp_path, monkeypatch):
    straight = tiny_run(tmp_path / "a")
    Trainer(straight).run()
    want = losses(Path(straight.run_dir))
    assert len(want) == 6

    cfg = tiny_run(tmp_path / "b")
    original = Trainer._step

    def interrupt_at_3(self, step, acc):
        if step == 3:
            raise KeyboardInterrupt
        return original(self, step, acc)

    monkeypatch.setattr(Trainer, "_step", interrupt_at_3)
    result = Trainer(cfg).run()
    assert result.interrupted and result.steps == 3
    monkeypatch.setattr(Trainer, "_step", original)
    Trainer(cfg).run()
    assert losses(Path(cfg.run_dir)) == want  # bit-identical on CPU
    names = [p.name for p in checkpoints(Path(cfg.run_dir))]
    assert names == ["ckpt-0000003", "ckpt-0000006"] and not list(Path(cfg.run_dir).glob("*.tmp"))


def test_anneal_switches_the_mixture_at_its_start(tmp_path, monkeypatch):
    cfg = tiny_run(tmp_path, categories=("prose", "best"), steps=20, anneal_fraction=0.2, save_every=100)
    cfg.data.mixture, cfg.data.anneal_mixture = {"prose": 1.0}, {"best": 1.0}
    trainer = Trainer(cfg)
    flags = []
    next_batch = trainer.sampler.next_batch

    def record(anneal=False):
        flags.append(anneal)
        batch = next_batch(anneal)
        cats = trainer.sampler.categories_for_step(trainer.sampler.step - 1, anneal)
        assert set(cats) == ({"best"} if anneal else {"prose"})
        return batch

    trainer.sampler.next_batch = record
    trainer.run()
    assert flags == [False] * 16 + [True] * 4


def test_non_finite_steps_are_skipped_then_the_run_stops(tmp_path, monkeypatch):
    cfg = tiny_run(tmp_path, steps=12, save_every=2, max_bad_steps=3)
    trainer = Trainer(cfg)
    forward = HunyuanForCausalLM.forward

    def nan_after_4(self, *a, **kw):
        out = forward(self, *a, **kw)
        if self.training and trainer.sampler.step > 4:
            out.logits = out.logits * float("nan")
        return out

    monkeypatch.setattr(HunyuanForCausalLM, "forward", nan_after_4)
    with pytest.raises(TrainingDiverged, match="non-finite for 3 steps in a row.*ckpt-0000004"):
        trainer.run()
    records = [json.loads(x) for x in (Path(cfg.run_dir) / "metrics.jsonl").read_text().splitlines()]
    assert sum(1 for r in records if r.get("skipped")) == 3
    assert [p.name for p in checkpoints(Path(cfg.run_dir))][-1] == "ckpt-0000004"
    load_model(Path(cfg.run_dir) / "ckpt-0000004")  # intact


def test_export_gives_a_release_style_folder(tmp_path):
    cfg = tiny_run(tmp_path, steps=2, save_every=1, keep_last=1)
    trainer = Trainer(cfg)
    trainer.run()
    assert [p.name for p in checkpoints(Path(cfg.run_dir))] == ["ckpt-0000002"]
    out = export_run(cfg.run_dir, tmp_path / "hf")
    for name in ("config.json", "model.safetensors", "hy.tiktoken", "tokenizer_config.json", "generation_config.json"):
        assert (out / name).exists(), name
    model = load_pretrained(out)
    ids = torch.randint(0, model.config.vocab_size, (1, 10))
    trainer.model.eval()
    assert torch.equal(model(ids).logits, trainer.model(ids).logits)


def test_config_overrides_and_errors(tmp_path):
    cfg = RunConfig.from_toml(None, ["--train.lr", "3e-4", "--data.seq_len=64", "--model.num_experts", "4"])
    assert cfg.train.lr == 3e-4 and cfg.data.seq_len == 64 and cfg.model.overrides["num_experts"] == 4
    assert cfg.model.overrides["hidden_size"] == 256  # the demo's other overrides stay
    with pytest.raises(RunConfigError, match="unknown key train.learning_rate"):
        RunConfig.from_toml(None, ["--train.learning_rate", "1"])
    with pytest.raises(RunConfigError, match="train.steps must be int"):
        RunConfig.from_toml(None, ["--train.steps", "many"])
    with pytest.raises(RunConfigError, match="does not exist"):
        RunConfig.from_toml(tmp_path / "missing.toml")


def test_demo_config_file_spells_out_the_embedded_defaults():
    from_file = RunConfig.from_toml(ROOT / "configs" / "demo.toml")
    assert from_file.to_dict() == RunConfig().to_dict()


def test_cli_reports_bad_config_in_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "hunyuan_large", "train", str(tmp_path / "x.toml")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.startswith("error: config file") and "Traceback" not in res.stderr
