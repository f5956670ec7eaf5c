"""Scaling-law toolkit: compute accounting, planning, fitting (paper and synthetic laws), bad inputs,
and a tiny end-to-end sweep with the trainer."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from hunyuan_large.accounting import count_params, flops_per_token
from hunyuan_large.cli import main
from hunyuan_large.scaling.compute import PAPER_D_OPT, PAPER_N_OPT, c_min, kaplan_b_crit, training_flops
from hunyuan_large.scaling.fit import FitError, Observation, fit_scaling
from hunyuan_large.scaling.grid import GridSpec
from hunyuan_large.scaling.plan import Plan, PlanError, make_plan
from hunyuan_large.scaling.results import load_observations
from hunyuan_large.scaling.run import SweepError, run_sweep
from hunyuan_large.scaling.shape import ShapeRule
from hunyuan_large.train import RunConfig

from .test_train import tiny_run

# A shape rule for the tiny preset's world: hidden grows in steps of 16, one layer per 32.
TINY_SHAPE = ShapeRule(head_dim=16, aspect=32, kv_group=2, num_experts=4)


# ----- compute accounting --------------------------------------------------------------------
def test_paper_law_gives_the_papers_optimum():
    # SPEC §5.4: ≈58.1B activated parameters and ≈5.6T tokens at C_min ≈ 3.1e24.
    assert PAPER_N_OPT(3.1e24) == pytest.approx(58.1e9, rel=0.01)
    assert PAPER_D_OPT(3.1e24) == pytest.approx(5.6e12, rel=0.01)


def test_paper_command_prints_readable_units(capsys):
    assert main(["scaling", "fit", "--paper"]) == 0
    out = capsys.readouterr().out
    n = float(out.split("activated parameters (")[1].split(")")[0])
    d = float(out.split("tokens (")[1].split(")")[0])
    assert n == pytest.approx(58.1e9, rel=0.01) and d == pytest.approx(5.6e12, rel=0.01)
    n_units = re.search(r"= ([\d.]+)B activated", out).group(1)  # the same numbers in readable units
    d_units = re.search(r"= ([\d.]+)T tokens", out).group(1)
    assert float(n_units) == pytest.approx(n / 1e9, rel=1e-3) and float(d_units) == pytest.approx(d / 1e12, rel=1e-3)


def test_batch_size_correction():
    # B_crit(L) = 2e8 / L^(1/0.21): 2e8 tokens at L = 1 nat, 2^(1/0.21) times fewer at L = 2.
    assert kaplan_b_crit(1.0) == pytest.approx(2e8)
    assert kaplan_b_crit(2.0) == pytest.approx(2e8 / 2 ** (1 / 0.21))
    assert c_min(1e20, batch_tokens=2e8, loss=1.0) == pytest.approx(5e19)  # B = B_crit halves C
    assert c_min(1e20, batch_tokens=1e6, loss=3.0, b_crit=1e6) == pytest.approx(5e19)  # a given B_crit
    assert c_min(1e20, batch_tokens=0, loss=3.0) == 1e20


def test_training_flops_modes(tmp_path):
    cfg = tiny_run(tmp_path).model_config(512, 0)
    n = count_params(cfg).active
    assert training_flops(cfg, 32, 1000, "paper") == pytest.approx(9.59 * n * 1000 + 2.3e8 * 1000)
    assert training_flops(cfg, 32, 1000) == pytest.approx(flops_per_token(cfg, 32) * 1000)


# ----- fitting -------------------------------------------------------------------------------
E, A, B, ALPHA, BETA = 1.69, 406.4, 410.7, 0.34, 0.28  # L(N, D) = E + A/N^alpha + B/D^beta


def true_n_opt(c: float) -> float:
    """argmin over N of L(N, C/(6N)): N_opt = G (C/6)^(beta/(alpha+beta)), G = (alpha A/(beta B))^(1/(alpha+beta))."""
    return (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA)) * (c / 6) ** (BETA / (ALPHA + BETA))


def synthetic_sweep(budgets, points=7, noise=5e-4, seed=0) -> list[Observation]:
    """Runs on a grid around a Chinchilla-style guess (not the true optimum), C = 6ND, noisy losses."""
    rng = np.random.default_rng(seed)
    out = []
    for c in budgets:
        guess = math.sqrt(c / (6 * 20))
        for n in guess * np.geomspace(1 / 4, 4, points):
            d = c / (6 * n)
            loss = (E + A / n**ALPHA + B / d**BETA) * (1 + noise * rng.standard_normal())
            out.append(Observation(c, n, d, loss))
    return out


def test_fit_recovers_a_known_law_within_5_percent():
    target = 1e22  # held out: ten times the largest budget fitted
    fit = fit_scaling(synthetic_sweep(np.geomspace(1e17, 1e21, 9)), target=target, bootstrap=200, seed=1)
    assert fit.n_law.exponent == pytest.approx(BETA / (ALPHA + BETA), rel=0.05)
    assert fit.d_law.exponent == pytest.approx(ALPHA / (ALPHA + BETA), rel=0.05)
    assert fit.n_at_target == pytest.approx(true_n_opt(target), rel=0.05)
    assert fit.d_at_target == pytest.approx(target / (6 * true_n_opt(target)), rel=0.05)
    for curve in fit.curves:  # each parabola's minimum is near the true one of its budget
        assert curve.n_opt == pytest.approx(true_n_opt(curve.budget), rel=0.1)
    lo, hi = fit.intervals["n_exponent"]
    assert lo < fit.n_law.exponent < hi and lo < BETA / (ALPHA + BETA) < hi
    assert fit.resamples + fit.discarded == 200


def test_curves_sit_at_c_min_of_their_optimal_loss():
    obs = [Observation(o.budget, o.n_active, o.tokens, o.loss, batch_tokens=1e6)
           for o in synthetic_sweep([1e18, 1e19])]
    for curve in fit_scaling(obs, bootstrap=0).curves:
        assert curve.c_min == pytest.approx(curve.budget / (1 + 1e6 / kaplan_b_crit(curve.loss_opt)))
    for curve in fit_scaling(obs, bootstrap=0, b_crit=1e6).curves:
        assert curve.c_min == pytest.approx(curve.budget / 2)


def test_bootstrap_is_seeded():
    obs = synthetic_sweep(np.geomspace(1e17, 1e19, 4), points=5, noise=2e-3)
    a, b = (fit_scaling(obs, target=1e20, bootstrap=50, seed=7) for _ in range(2))
    assert a.intervals == b.intervals
    assert fit_scaling(obs, target=1e20, bootstrap=50, seed=8).intervals != a.intervals


def test_fewer_than_three_points_on_a_curve_is_an_error():
    obs = synthetic_sweep([1e18, 1e19], points=5)
    obs = [o for o in obs if o.budget == 1e19 or o.n_active < math.sqrt(1e18 / 120)]  # 2 left at 1e18
    with pytest.raises(FitError, match=r"budget 1e\+18, loss vs N: 2 distinct size\(s\); .* at least 3"):
        fit_scaling(obs, bootstrap=0)


def test_non_convex_curve_is_an_error():
    obs = [Observation(1e18, n, 1e18 / (6 * n), loss) for n, loss in ((1e6, 3.0), (2e6, 3.3), (4e6, 3.2))]
    obs += synthetic_sweep([1e19])
    with pytest.raises(FitError, match="budget 1e\\+18, loss vs N: the curve is not convex"):
        fit_scaling(obs, bootstrap=0)


def test_minimum_outside_the_sampled_sizes_is_an_error():
    obs = [Observation(1e18, n, 1e18 / (6 * n), 3 + 0.01 * (math.log(n) - 20) ** 2)
           for n in (1e6, 2e6, 4e6)]  # convex, but its minimum is at N = e^20 = 4.9e8
    with pytest.raises(FitError, match="lies outside the sampled sizes"):
        fit_scaling(obs + synthetic_sweep([1e19]), bootstrap=0)


def test_one_budget_cannot_give_a_power_law():
    with pytest.raises(FitError, match="1 budget"):
        fit_scaling(synthetic_sweep([1e18]), bootstrap=0)


def test_fit_command_on_a_results_file(tmp_path, capsys):
    obs = synthetic_sweep(np.geomspace(1e17, 1e19, 3), points=5)
    records = [{"budget": o.budget, "n_active": o.n_active, "tokens": o.tokens, "loss": o.loss} for o in obs]
    records.append({"name": "broken", "status": "failed", "budget": 1e17})
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"points": records}))
    assert main(["scaling", "fit", str(path), "--bootstrap", "20", "--target", "1e20"]) == 0
    out = capsys.readouterr().out
    assert "left out 1 record(s) not ok: broken" in out
    saved = json.loads((tmp_path / "fit.json").read_text())
    assert saved["estimates"]["n_exponent"] == pytest.approx(BETA / (ALPHA + BETA), rel=0.05)
    for png in ("isoflop.png", "laws.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


def test_fit_command_errors(tmp_path, capsys):
    assert main(["scaling", "fit"]) == 2
    assert "needs a RESULTS file" in capsys.readouterr().err
    assert main(["scaling", "fit", str(tmp_path / "none.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ----- planning ------------------------------------------------------------------------------
def test_plan_hits_its_budgets_with_the_planned_models(tmp_path):
    base = tiny_run(tmp_path)
    budgets = [3e11, 1e12, 3e12]
    grid = GridSpec(points=5, spread=8, min_steps=40)  # whole steps: C within 1/40 of the budget
    plan = make_plan(budgets, base, TINY_SHAPE, grid)
    step_tokens = base.train.batch_size * base.data.seq_len
    assert plan.vocab_size == 640  # 600 ids padded to a multiple of 64, as the trainer pads
    for budget in budgets:
        curve = [p for p in plan.points if p.budget == budget]
        assert len(curve) >= 3
        sizes = [p.n_active for p in curve]
        assert sizes == sorted(set(sizes)) and sizes[-1] / sizes[0] > 3
        for p in curve:
            cfg = RunConfig.from_dict(p.run)
            model = cfg.model_config(plan.vocab_size, 0)
            assert count_params(model).active == p.n_active
            assert p.tokens == cfg.train.steps * step_tokens >= grid.min_steps * step_tokens
            assert flops_per_token(model, cfg.data.seq_len) * p.tokens == pytest.approx(budget, rel=0.03)
            assert cfg.train.warmup_steps < cfg.train.steps and cfg.train.eval_every == cfg.train.steps
        # the centre of the curve is the size whose D/N is nearest tokens_per_param
        mid = curve[len(curve) // 2]
        assert 20 / 4 < mid.tokens / mid.n_active < 20 * 4
    loaded = Plan.load(plan.save(tmp_path / "plan.json"))
    assert loaded == plan


def test_plan_in_paper_compute(tmp_path):
    # 2.3e8 FLOPs per token dwarf 9.59 N at this size: D is nearly the same for every model
    plan = make_plan([4e14], tiny_run(tmp_path), TINY_SHAPE, GridSpec(compute="paper", min_steps=40))
    for p in plan.points:
        assert 9.59 * p.n_active * p.tokens + 2.3e8 * p.tokens == pytest.approx(4e14, rel=0.03)


def test_shape_rule_builds_valid_models():
    rule = ShapeRule(head_dim=16, aspect=32, kv_group=4, num_experts=6, moe_topk=2, expert_ratio=2.0,
                     max_hidden=1024)
    base = RunConfig().model_config(512, 0)
    ladder = rule.ladder(base)
    assert [n for n, _ in ladder] == sorted(n for n, _ in ladder)  # bigger hidden, more parameters
    for _, cfg in ladder:
        assert cfg.head_dim == 16 and cfg.num_experts == 6 and cfg.moe_topk == 2
        assert cfg.num_hidden_layers == max(1, round(cfg.hidden_size / 32))
        assert cfg.num_attention_heads // cfg.num_key_value_heads >= min(4, cfg.num_attention_heads)
        assert cfg.intermediate_size == pytest.approx(2 * cfg.hidden_size, abs=4)


def test_budget_too_small_for_any_model(tmp_path):
    with pytest.raises(PlanError, match="budget 1e\\+06 FLOPs is too small for any configurable model"):
        make_plan([1e6], tiny_run(tmp_path), TINY_SHAPE)


def test_plan_command_writes_a_plan(tmp_path, capsys):
    base = tmp_path / "base.toml"
    base.write_text(tiny_run(tmp_path).to_toml())
    out = tmp_path / "sweep" / "plan.json"
    argv = ["scaling", "plan", "--budgets", "1e12", "3e12", "--base", str(base), "--out", str(out),
            "--head-dim", "16", "--aspect", "32", "--num-experts", "4", "--min-steps", "20"]
    assert main(argv) == 0
    plan = Plan.load(out)
    assert plan.budgets == [1e12, 3e12] and plan.shape.head_dim == 16 and plan.points
    assert main(argv[:4] + ["--points", "2"]) == 2
    assert "points must be >= 3" in capsys.readouterr().err


# ----- the sweep -----------------------------------------------------------------------------
def sweep_plan(tmp_path: Path, vocab: int, budget: float = 2e8) -> Path:
    """A deliberately under-trained grid (D/N ~ 0.5, 11-49 steps): seconds, not science."""
    base = tiny_run(tmp_path, log_every=5, save_every=1000, eval_tokens=128)
    base.tokenizer.vocab_size = vocab
    shape = ShapeRule(head_dim=8, aspect=16, kv_group=2, num_experts=4)
    grid = GridSpec(points=3, spread=4, tokens_per_param=0.5, min_steps=10)
    plan = make_plan([budget], base, shape, grid)
    return plan.save(tmp_path / "sweep" / "plan.json")


def test_sweep_runs_skips_finished_points_and_survives_a_failure(tmp_path):
    path = sweep_plan(tmp_path, vocab=480)  # this corpus has merges for 480 ids
    raw = json.loads(path.read_text())
    raw["points"][1]["run"]["data"]["sources"] = {"code": [str(tmp_path / "missing")]}
    path.write_text(json.dumps(raw))
    plan = Plan.load(path)

    results = run_sweep(path)
    assert [r.status for r in results] == ["ok", "failed", "ok"]
    assert "missing" in results[1].error
    for r, p in zip(results, plan.points):
        if r.ok:
            assert r.n_active == p.n_active and r.tokens == p.tokens  # what the trainer built and ran
            assert r.flops == pytest.approx(p.flops) and r.flops == pytest.approx(2e8, rel=1 / 10)
            assert 0 < r.loss < math.log(plan.vocab_size)  # trained, below a uniform guess
    sweep = path.parent
    assert (sweep / plan.points[2].name / "data").is_symlink()  # the corpus was tokenized once
    observations, skipped = load_observations(sweep / "results.json")
    assert len(observations) == 2 and skipped == [plan.points[1].name]

    metrics = sweep / plan.points[0].name / "metrics.jsonl"
    before = metrics.read_text()
    again = run_sweep(path)  # finished points are skipped, the failed one is retried (and fails again)
    assert metrics.read_text() == before
    assert [r.loss for r in again if r.ok] == [r.loss for r in results if r.ok]

    raw["points"][0]["run"]["train"]["lr"] = 1e-3  # a different plan in the same folder
    path.write_text(json.dumps(raw))
    with pytest.raises(SweepError, match="holds a run of a different plan"):
        run_sweep(path)


def test_sweep_checks_the_planned_vocabulary(tmp_path):
    path = sweep_plan(tmp_path, vocab=600, budget=1e9)  # the corpus runs out of merges at 497 ids
    with pytest.raises(SweepError, match="the plan assumed 640: the corpus ran out of merges"):
        run_sweep(path)
