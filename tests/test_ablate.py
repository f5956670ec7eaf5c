"""Ablations: matched arms differ only in their factor, a killed suite resumes, the report is built
from the run folders, bad suite files are one-line errors; the quick suite end to end (slow)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
from pathlib import Path

import pytest
from rich.console import Console

from hunyuan_large.ablate import Suite, run_suite
from hunyuan_large.ablate.suite import SuiteError, model_of
from hunyuan_large.accounting import count_params
from hunyuan_large.cli import main
from hunyuan_large.train import RunConfig, Trainer

from .conftest import ROOT
from .test_train import CODE

SUITE = ROOT / "configs" / "ablate.toml"
# Model fields the trainer derives from train fields (RunConfig.model_config).
DERIVED = {"train.routing": {"model.moe_drop_tokens", "model.moe_random_routing_dropped_token"},
           "train.capacity_factor": {"model.capacity_factor"}}


def flat_config(run: dict) -> dict:
    """Every field a run trains with: the full ModelConfig plus the run config's sections."""
    cfg = RunConfig.from_dict(run)
    flat = {f"model.{k}": v for k, v in dataclasses.asdict(model_of(cfg)).items()}
    for section in ("tokenizer", "data", "train", "parallel"):
        flat.update({f"{section}.{k}": v for k, v in dataclasses.asdict(getattr(cfg, section)).items()})
    return flat


# ----- matching ------------------------------------------------------------------------------
@pytest.mark.parametrize("quick", [False, True])
def test_matched_arms_differ_only_in_their_factor(quick):
    suite = Suite.load(SUITE, quick=quick)
    runs = suite.plan()
    by = {(r.set, r.arm, r.seed): r for r in runs}
    for s in suite.sets:
        ref_arm = s.arms[0]
        for seed in range(s.seeds):
            ref = by[(s.name, ref_arm.name, seed)]
            ref_flat = flat_config(ref.run)
            assert ref_flat["train.seed"] == seed
            for arm in s.arms[1:]:
                run = by[(s.name, arm.name, seed)]
                flat = flat_config(run.run)
                differ = {k for k in flat if flat[k] != ref_flat[k]}
                allowed = set(arm.factor) | set(ref_arm.factor)
                allowed |= {m for k in list(allowed) for m in DERIVED.get(k, ())}
                if s.match_active:
                    allowed.add("model.intermediate_size")
                assert differ and differ <= allowed, (s.name, arm.name, differ - allowed)
                assert differ & set(arm.factor) or any(m in differ for k in arm.factor for m in DERIVED.get(k, ()))
        # Activated parameters, counted on the module tree (not the planner's closed form).
        ref_model = model_of(RunConfig.from_dict(by[(s.name, ref_arm.name, 0)].run))
        ref_active = count_params(ref_model).active
        for arm in s.arms[1:]:
            model = model_of(RunConfig.from_dict(by[(s.name, arm.name, 0)].run))
            active = count_params(model).active
            L, D = model.num_hidden_layers, model.hidden_size
            if s.name == "shared_expert":  # the same widths; only the 17th expert's router column is extra
                assert active - ref_active == L * D
            elif s.name == "top_k":  # the nearest width: one unit more or less is further from the target
                for other in (model.intermediate_size - 1, model.intermediate_size + 1):
                    assert abs(active - ref_active) <= abs(count_params(model.replace(intermediate_size=other)).active
                                                           - ref_active)
                assert abs(active - ref_active) / ref_active < 0.005
            else:
                assert active == ref_active, (s.name, arm.name)
        if s.name == "cla":  # equal parameters, but half the layers keep K/V
            cla, none = (model_of(RunConfig.from_dict(by[(s.name, a.name, 0)].run)) for a in s.arms)
            assert cla.num_kv_owner_layers * 2 == none.num_kv_owner_layers == none.num_hidden_layers


def test_suite_shares_the_reference_run_and_sizes_seeds():
    suite, quick = Suite.load(SUITE), Suite.load(SUITE, quick=True)
    runs = suite.plan()
    refs = {r.folder for r in runs if r.arm == next(s for s in suite.sets if s.name == r.set).arms[0].name
            and r.seed == 0}
    assert len(refs) == 1  # every set's reference arm is the base recipe: trained once per seed
    assert {s.name: s.seeds for s in quick.sets} == {"routing": 3, "cla": 3, "expert_lr": 3, "shared_expert": 1,
                                                     "top_k": 1, "load_balance": 1}
    assert all(s.seeds >= 3 for s in suite.sets)
    assert len({r.folder for r in quick.plan()}) == 28


# ----- a micro suite, trained --------------------------------------------------------------
def micro_suite(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"m{i}.py").write_text(CODE.format(i=i, j=i * 7) * 3)
    path = tmp_path / "micro.toml"
    path.write_text(f"""
out = "{tmp_path / 'abl'}"
[base.model]
preset = "tiny"
hidden_size = 32
num_hidden_layers = 2
num_attention_heads = 2
num_key_value_heads = 1
intermediate_size = 16
num_experts = 4
[base.tokenizer]
vocab_size = 600
[base.data]
sources = {{"code" = ["{src}"]}}
seq_len = 32
workers = 1
val_fraction = 0.2
[base.train]
steps = 4
batch_size = 4
warmup_steps = 1
log_every = 2
eval_every = 4
save_every = 2
eval_tokens = 256
routing = "recycle"
capacity_factor = 1.0

[[sets]]
name = "routing"
seeds = 2
arms = [{{name = "recycle", train = {{routing = "recycle"}}}}, {{name = "drop", train = {{routing = "drop"}}}}]

[[sets]]
name = "lb"
arms = [{{name = "aux 0.01"}}, {{name = "aux 0", train = {{aux_loss_coef = 0.0}}}}]
""")
    return path


def final_val(run_dir: Path) -> float:
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["val_loss"] for r in records if r.get("val_loss") is not None][-1]


def test_micro_suite_runs_resumes_and_reports(tmp_path, monkeypatch):
    # The trainer's own per-run PNGs cost seconds each and are not what this test is about.
    monkeypatch.setattr("hunyuan_large.train.trainer.write_plots", lambda records, out: [])
    path = micro_suite(tmp_path)
    suite = Suite.load(path)
    out = suite.out

    # Ctrl-C during step 3 of the second run: the first run is finished, the second keeps its
    # step-2 checkpoint, and the suite stops; the rerun skips the first and resumes the second.
    step, calls = Trainer._step, []

    def interrupt_second_run(self, i, acc):
        calls.append(i)
        if calls.count(0) == 2 and i == 2:
            raise KeyboardInterrupt
        return step(self, i, acc)

    monkeypatch.setattr(Trainer, "_step", interrupt_second_run)
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, Console(quiet=True))
    assert [p.parent.name for p in out.glob("*/ablate.json")] == ["routing-recycle-s0"]
    assert [p.name for p in (out / "routing-drop-s0").glob("ckpt-*")] == ["ckpt-0000002"]
    monkeypatch.setattr(Trainer, "_step", step)
    console = Console(record=True, width=200)
    report = run_suite(suite, console)
    log = console.export_text()
    assert "1 finished earlier (skipped), 4 to train" in log and "resuming from ckpt-0000002 (step 2)" in log
    folders = sorted(p.parent.name for p in out.glob("*/ablate.json"))
    assert folders == ["lb-aux-0-s0", "routing-drop-s0", "routing-drop-s1", "routing-recycle-s0", "routing-recycle-s1"]
    assert all((out / f / "data").is_symlink() for f in folders)  # tokenized once

    # The report, from the run folders: mean ± std over seeds of each run's last validation loss.
    text = report.read_text()
    for arm in ("recycle", "drop"):
        losses = [final_val(out / f"routing-{arm}-s{s}") for s in (0, 1)]
        assert f"{statistics.mean(losses):.4f} ± {statistics.stdev(losses):.4f} (n=2)" in text
    assert f"{final_val(out / 'routing-recycle-s0'):.4f} (1 seed)" in text  # lb's reference: the shared run
    assert (out / "routing.png").stat().st_size > 0 and (out / "lb.png").stat().st_size > 0
    results = json.loads((out / "results.json").read_text())
    assert results["routing"]["recycle"]["dropped_frac"] == 0 and results["routing"]["drop"]["recycled_frac"] == 0

    # Kill one run after its step-2 checkpoint (as kill -9 would leave it): the rerun skips the
    # finished runs and resumes that one, to the same final loss as the uninterrupted run.
    victim = out / "routing-drop-s1"
    want = final_val(victim)
    for name in ("ablate.json", "summary.json"):
        (victim / name).unlink()
    shutil.rmtree(victim / "ckpt-0000004")
    others = {f: (out / f / "metrics.jsonl").stat().st_mtime_ns for f in folders if f != victim.name}
    (out / "report.md").unlink()
    console = Console(record=True, width=200)
    run_suite(Suite.load(path), console)
    log = console.export_text()
    assert "4 finished earlier (skipped), 1 to train" in log and "resuming from ckpt-0000002" in log
    assert final_val(victim) == want
    assert {f: (out / f / "metrics.jsonl").stat().st_mtime_ns for f in others} == others
    again = (out / "report.md").read_text()
    assert [line.split("|")[4] for line in again.splitlines() if line.startswith("| ")] == \
        [line.split("|")[4] for line in text.splitlines() if line.startswith("| ")]  # the same final losses

    # --report-only rebuilds the report from the folders and trains nothing.
    (out / "report.md").unlink()
    assert main(["ablate", str(path), "--out", str(out), "--report-only"]) == 0
    assert (out / "report.md").read_text() == again


def test_a_changed_suite_does_not_reuse_other_runs(tmp_path, capsys):
    path = micro_suite(tmp_path)
    suite = Suite.load(path)
    run = suite.plan()[0]
    (suite.out / run.folder).mkdir(parents=True)
    (suite.out / run.folder / "ablate.json").write_text(json.dumps({"run": {"other": 1}, "result": {}}))
    assert main(["ablate", str(path), "--report-only"]) == 2
    assert "holds a run of a different config" in capsys.readouterr().err


# ----- bad suite files ---------------------------------------------------------------------
@pytest.mark.parametrize("body, message", [
    ('[[sets]]\nname = "a"\narms = [{name = "x"}]', "needs at least two arms"),
    ('[[sets]]\nname = "a"\nfoo = 1\narms = [{name = "x"}, {name = "y"}]', "unknown key 'foo'"),
    ('[[sets]]\nname = "a"\narms = [{name = "x"}, {name = "y", data = {seq_len = 8}}]', "unknown key 'data'"),
    ('[[sets]]\nname = "a"\narms = [{name = "x"}, {name = "y", train = {routing = "nope"}}]', "is not dropless"),
    ('[[sets]]\nname = "a"\narms = [{name = "x"}, {name = "y", model = {moe_topk = 9}}]', "set a, arm y"),
    ('', "has no [[sets]]"),
])
def test_bad_suites_are_one_line_errors(tmp_path, capsys, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    assert main(["ablate", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_quick_needs_a_quick_table(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[[sets]]\nname = "a"\narms = [{name = "x"}, {name = "y"}]')
    with pytest.raises(SuiteError, match="no \\[quick\\] table"):
        Suite.load(path, quick=True)


# ----- the quick suite -----------------------------------------------------------------------
@pytest.mark.slow
def test_quick_suite_end_to_end(tmp_path):
    out = tmp_path / "quick"
    assert main(["ablate", str(SUITE), "--quick", "--out", str(out)]) == 0
    suite = Suite.load(SUITE, quick=True)
    assert all((out / r.folder / "ablate.json").exists() for r in suite.plan())
    report = (out / "report.md").read_text()
    for s in suite.sets:
        assert f"## {s.name}" in report and (out / f"{s.name}.png").exists()
    assert "not run" not in report
