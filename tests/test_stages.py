"""Context stages: RoPE switched exactly, exported keys, long-document rows, exact resume, init_from config."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hunyuan_large import ModelConfig, load_pretrained, save_pretrained
from hunyuan_large.data import LongDocuments, MixtureSampler, TokenStream
from hunyuan_large.data.retrieval import NOISE, iter_retrieval, niah, vt
from hunyuan_large.model.moe import MoE
from hunyuan_large.model.rope import rope_cos_sin
from hunyuan_large.train import RunConfig, Trainer
from hunyuan_large.train.config import RunConfigError
from hunyuan_large.train.export import export_run
from hunyuan_large.train.run_state import checkpoints

from .conftest import make_model
from .test_train import losses, tiny_run

STAGE = {"seq_len": 64, "tokens": 4 * 8 * 64, "batch_size": 8, "rope_alpha": 8.0, "rope_theta": 20000.0,
         "lr": 1e-3, "mixture": {"code": 1.0}}


def staged_run(tmp_path: Path, **train) -> RunConfig:
    """tiny_run (4 steps of 4 x 32 tokens) + one stage of 4 steps of 8 x 64 tokens."""
    cfg = tiny_run(tmp_path, steps=4, save_every=2, eval_every=100, **train)
    cfg.train.stages = RunConfig.from_dict({"data": {"sources": cfg.data.sources},
                                            "train": {"stages": [STAGE]}}).train.stages
    cfg.validate()
    return cfg


def test_stage_applies_rope_exactly_and_exports_it(tmp_path):
    cfg = staged_run(tmp_path, keep_last=0)
    trainer = Trainer(cfg)
    before = trainer.model.config.rope_base
    shapes = []
    micro_batch = trainer._micro_batch

    def record(anneal):
        batch = micro_batch(anneal)
        shapes.append(tuple(batch.shape))
        return batch

    trainer._micro_batch = record
    trainer.run()
    assert shapes == [(4, 33)] * 4 + [(8, 65)] * 4
    mc = trainer.model.config
    d = mc.head_dim
    want_base = STAGE["rope_theta"] * STAGE["rope_alpha"] ** (d / (d - 2))  # SPEC 2.3
    assert before == pytest.approx(10000.0 * 1000.0 ** (d / (d - 2)))  # the tiny preset's alpha, before
    # The tables the forward uses: cos(p * base^(-2j/d)), computed here in float64 from the formula.
    pos = torch.arange(0, 64)[None]
    cos, sin = rope_cos_sin(trainer.model.model.cfg, pos, 64, torch.float32)
    j = torch.arange(d // 2, dtype=torch.float64)
    angles = pos[0, :, None].double() * want_base ** (-2 * j / d)
    assert torch.allclose(cos[0, :, 0, : d // 2].double(), angles.cos(), atol=2e-5)
    assert torch.allclose(sin[0, :, 0, d // 2 :].double(), angles.sin(), atol=2e-5)

    ckpts = {c.name: json.loads((c / "config.json").read_text()) for c in checkpoints(Path(cfg.run_dir))}
    alphas = {name: c["rope_scaling"]["alpha"] for name, c in ckpts.items()}
    assert alphas == {"ckpt-0000002": 1000.0, "ckpt-0000004": 1000.0, "ckpt-0000006": 8.0, "ckpt-0000008": 8.0}
    out = export_run(cfg.run_dir, tmp_path / "model")
    exported = json.loads((out / "config.json").read_text())
    assert exported["rope_scaling"] == {"alpha": 8.0, "factor": 1.0, "type": "dynamic"}
    assert exported["rope_theta"] == 20000.0 and exported["max_position_embeddings"] == 64
    assert load_pretrained(out, device="cpu").config.rope_base == pytest.approx(want_base)


def test_resume_across_a_stage_boundary_is_exact(tmp_path, monkeypatch):
    straight = staged_run(tmp_path / "a")
    Trainer(straight).run()
    want = losses(Path(straight.run_dir))
    assert len(want) == 8

    cfg = staged_run(tmp_path / "a")
    cfg.run_dir = str(tmp_path / "b")
    for part in ("tokenizer", "data"):  # the same sources: reuse the tokenizer and shards
        shutil.copytree(Path(straight.run_dir) / part, Path(cfg.run_dir) / part)
    original = Trainer._step
    for stop in (5, 7):  # last checkpoints: 4 (the boundary, pre-training's data state), then 6 (in the stage)
        def interrupt(self, step, acc, stop=stop):
            if step == stop:
                raise KeyboardInterrupt
            return original(self, step, acc)

        monkeypatch.setattr(Trainer, "_step", interrupt)
        assert Trainer(cfg).run().interrupted
    monkeypatch.setattr(Trainer, "_step", original)
    Trainer(cfg).run()
    assert losses(Path(cfg.run_dir)) == want  # bit-identical on CPU


def _stream(tmp_path: Path, lengths: list[int]) -> TokenStream:
    """One shard holding documents of these lengths; token = 1000 * document index + position."""
    tokens = np.concatenate([1000 * i + np.arange(n) for i, n in enumerate(lengths)]).astype(np.uint32)
    tokens.tofile(tmp_path / "train-00000.bin")
    np.save(tmp_path / "train-00000.idx.npy", np.cumsum([0, *lengths[:-1]]).astype(np.uint64))
    return TokenStream(tmp_path, [{"file": "train-00000.bin", "tokens": len(tokens)}], seq_len=16)


def test_long_documents_start_sequences_and_their_share_matches_the_mixture(tmp_path):
    rng = random.Random(0)
    lengths = [rng.randint(3, 60) for _ in range(300)]
    stream = _stream(tmp_path, lengths)
    long = LongDocuments([stream], min_tokens=20, seq_len=16)
    # Independent expectation: a document of L >= 20 tokens gives pieces at 0, 16, ... < L - 1.
    want = {(i, k) for i, n in enumerate(lengths[:-1]) if n >= 20 for k in range(0, n - 1, 16)}
    got = {(int(long.chunk(c)[0]) // 1000, int(long.chunk(c)[0]) % 1000) for c in range(long.num_chunks)}
    assert got == want
    assert all(len(long.chunk(c)) == 17 for c in range(long.num_chunks))

    sampler = MixtureSampler({"code": stream, "long": long}, {"long": 0.25, "code": 0.75}, None, 8, seed=3)
    rows = 0
    for step in range(250):
        cats = sampler.categories_for_step(step, False)
        batch = sampler.next_batch()
        for cat, row in zip(cats, batch):
            if cat == "long":  # each long row is a long document's start or its continuation
                doc, offset = divmod(int(row[0]), 1000)
                assert lengths[doc] >= 20 and offset % 16 == 0
        rows += cats.count("long")
    share, n = rows / (250 * 8), 250 * 8
    assert abs(share - 0.25) < 4 * (0.25 * 0.75 / n) ** 0.5  # binomial, 4 sigma


def test_init_from_builds_every_layer_with_the_runs_routing(tmp_path):
    folder = tmp_path / "start"
    model = make_model()
    model.config.set_routing_policy("dropless")
    save_pretrained(model, folder)
    cfg = tiny_run(tmp_path, routing="drop", capacity_factor=2.0)
    cfg.model.init_from, cfg.tokenizer.path = str(folder), ""
    cfg.model.overrides = {}
    trainer = Trainer(cfg)
    moes = [m for m in trainer.model.modules() if isinstance(m, MoE)]
    assert moes and all(m.cfg.routing_policy == "drop" and m.cfg.capacity_factor == 2.0 for m in moes)
    assert trainer.model.model.cfg is trainer.model.config
    for (name, p), q in zip(trainer.model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(p, q), name


def test_stage_config_errors_are_one_line():
    base = {"data": {"sources": {"code": ["x"]}}, "train": {"stages": [dict(STAGE, mixture={"web": 1.0})]}}
    with pytest.raises(RunConfigError, match=r"train.stages\[0\].mixture names unknown categories \['web'\]"):
        RunConfig.from_dict(base)
    with pytest.raises(RunConfigError, match=r"train.stages\[0\].seq_len must be >= 2"):
        RunConfig.from_dict({"train": {"stages": [{"tokens": 5}]}})
    with pytest.raises(RunConfigError, match="unknown key train.stages"):
        RunConfig.from_dict({"train": {"stages": [dict(STAGE, alpha=2.0)]}})


def test_retrieval_documents_follow_ruler_formats_and_are_deterministic():
    spec = "retrieval:docs=20,max_repeats=6,vt=0.5,seed=4"
    docs = [d.text for d in iter_retrieval(spec)]
    assert docs == [d.text for d in iter_retrieval(spec)]
    s = niah(10, random.Random(1), depth=0.3)
    lines = s.prompt.split("\n")
    assert lines[1:4] == [NOISE] * 3 and lines[4].startswith("One of the special magic numbers for ")
    key = lines[4].split(" for ")[1].split(" is: ")[0]
    assert lines[4] == f"One of the special magic numbers for {key} is: {s.answers[0]}."
    assert s.prompt.endswith(f"The special magic number for {key} mentioned in the provided text is")
    v = vt(8, random.Random(2))
    chain = [line for line in v.prompt.split("\n") if line.startswith("VAR ")]
    assert chain[0].endswith(" = " + v.prompt.split("assigned the value ")[1].split()[0] + ".")
    assert [c.split()[1] for c in chain] == v.answers and len(v.answers) == 5
    assert all(c == f"VAR {b} = VAR {a}." for c, a, b in zip(chain[1:], v.answers, v.answers[1:]))
