"""Online DPO pairs: engine weight sync, a round's pairing, and an online run that resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hunyuan_large.posttrain.config import DPOSection
from hunyuan_large.posttrain.dpo import DPOTrainer
from hunyuan_large.posttrain.loop import load_policy
from hunyuan_large.posttrain.online import OnlineSampler
from hunyuan_large.posttrain.reward import RewardModel
from hunyuan_large.posttrain.rm import RMTrainer
from hunyuan_large.tokenizer import load_tokenizer

from .posttrain_helpers import check_exact_resume, run_config, toy  # noqa: F401
from .test_posttrain_rm import _rule_pairs

PROMPT = [{"role": "user", "content": "What is 3 plus 4?"}]


def _greedy(model, ids: list[int], n: int) -> list[int]:
    out = list(ids)
    for _ in range(n):
        out.append(int(model(torch.tensor([out])).logits[0, -1].argmax()))
    return out[len(ids):]


def test_sync_gives_the_engine_the_policy_weights(toy: Path, tmp_path: Path) -> None:  # noqa: F811
    cfg = run_config(toy, tmp_path, model={"attention_dropout": 0.0, "hidden_dropout": 0.0})
    policy, tok = load_policy(cfg.model.init, cfg).eval(), load_tokenizer(toy / "model")
    d = DPOSection(online_n=2, online_prompts=1, online_max_new_tokens=6, online_temperature=0.0)
    sampler = OnlineSampler(policy, tok, RewardModel(load_policy(cfg.model.init, cfg)), d, 64)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.3 * torch.randn_like(p))  # the engine's copy is now stale
        sampler.sync(policy)
        ids = tok.apply_chat_template(PROMPT, add_generation_prompt=True)
        want = _greedy(policy, ids, 6)
    got = sampler.engine.generate([ids], sampler.engine.chat_params(
        sampler.engine.defaults.replace(max_new_tokens=6)))[0].token_ids
    assert got == want[: len(got)] and len(got) >= 1


@pytest.fixture
def reward_dir(toy: Path, tmp_path: Path) -> Path:  # noqa: F811
    """A reward model trained to prefer answers over echoed questions."""
    cfg = run_config(toy, tmp_path / "rm", str(_rule_pairs(tmp_path / "rule.jsonl", 32, 1)),
                     train={"epochs": 1, "batch_size": 8, "lr": 3e-3, "save_every": 100})
    RMTrainer(cfg).run()
    return tmp_path / "rm" / "model"


def test_online_round_pairs_best_over_worst(toy: Path, tmp_path: Path, reward_dir: Path) -> None:  # noqa: F811
    from hunyuan_large.posttrain.reward import load_reward_model
    from hunyuan_large.posttrain.rm import score_batch, scored_ids

    cfg = run_config(toy, tmp_path / "x")
    tok, reward = load_tokenizer(toy / "model"), load_reward_model(reward_dir)
    d = DPOSection(online_n=4, online_prompts=2, online_max_new_tokens=8)
    sampler = OnlineSampler(load_policy(cfg.model.init, cfg), tok, reward, d, 64)
    rnd = sampler.round([PROMPT, [{"role": "user", "content": "What is 9 plus 1?"}]], seed=5)
    assert len(rnd.pairs) + rnd.skipped == 2 and all(len(r) == 4 for r in rnd.rewards)
    for pair, scores in zip(rnd.pairs, rnd.rewards):
        seqs = [scored_ids(tok, pair.prompt, pair.chosen), scored_ids(tok, pair.prompt, pair.rejected)]
        with torch.no_grad():
            c, r = score_batch(reward, seqs, tok.pad_id, "cpu")[0].tolist()
        assert c == pytest.approx(max(scores), abs=1e-5) and r == pytest.approx(min(scores), abs=1e-5)
    again = sampler.round([PROMPT, [{"role": "user", "content": "What is 9 plus 1?"}]], seed=5)
    assert again.rewards == rnd.rewards  # seeded: a resumed run draws the same samples


def test_online_dpo_logs_and_resumes_exactly(toy: Path, tmp_path: Path, reward_dir: Path) -> None:  # noqa: F811
    cfg = run_config(toy, tmp_path / "run", "pairs.jsonl", train={"batch_size": 8},
                     dpo={"online_every": 2, "online_prompts_file": [str(toy / "pairs.jsonl")], "online_prompts": 2,
                          "online_n": 3, "online_max_new_tokens": 6, "reward_model": str(reward_dir),
                          "online_fraction": 0.25})
    check_exact_resume(lambda: DPOTrainer(cfg), tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rounds = [r for r in records if "online/reward_mean" in r]
    assert [r["step"] for r in rounds] == [0, 2, 4]
    assert all(r["online/reward_best"] >= r["online/reward_mean"] >= r["online/reward_worst"] for r in rounds)
    assert any(r.get("online/share", 0) > 0 for r in records)
    assert all(r["online/sample_tokens"] > 0 and r["online/sample_s"] > 0 for r in rounds)
