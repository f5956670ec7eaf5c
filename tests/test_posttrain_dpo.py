"""DPO: loss and gradients against an independent per-pair implementation, EMA math, exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hunyuan_large.posttrain.data import parse_pair
from hunyuan_large.posttrain.dpo import DPOTrainer, pair_examples, pair_logps, pair_rows
from hunyuan_large.posttrain.dpo_loss import dpo_terms
from hunyuan_large.posttrain.ema import PolicyWithEMA
from hunyuan_large.posttrain.loop import load_policy
from hunyuan_large.tokenizer import load_tokenizer

from .posttrain_helpers import check_exact_resume, run_config, toy  # noqa: F401
from .test_posttrain_rm import _rule_pairs


def _independent_logp(model, tok, pair) -> tuple[torch.Tensor, int]:
    """Sum over the response's tokens of log p(token | everything before), one unpadded sequence."""
    prompt_ids = tok.apply_chat_template(pair.prompt, add_generation_prompt=True)
    full = tok.apply_chat_template(pair.prompt + pair.response)
    assert full[:len(prompt_ids)] == prompt_ids
    stop = next(i for i in range(len(prompt_ids), len(full)) if full[i] in tok.chat_stop_ids)
    logits = model(torch.tensor([full])).logits[0].float()
    total = sum(torch.log_softmax(logits[t - 1], -1)[full[t]] for t in range(len(prompt_ids), stop + 1))
    return total, stop + 1 - len(prompt_ids)


class _Side:
    def __init__(self, pair, response):
        self.prompt, self.response = pair.prompt, response


@pytest.mark.parametrize("kind,normalize", [("sigmoid", False), ("ipo", False), ("sigmoid", True)])
def test_dpo_loss_and_grads_match_the_formula(toy: Path, tmp_path: Path, kind: str, normalize: bool) -> None:  # noqa: F811
    cfg = run_config(toy, tmp_path, model={"attention_dropout": 0.0, "hidden_dropout": 0.0})
    tok = load_tokenizer(toy / "model")
    pairs = [parse_pair(json.loads(line)) for line in (toy / "pairs.jsonl").read_text().splitlines()[:3]]
    pairs[0].chosen = pairs[0].chosen + [{"role": "user", "content": "and?"}, {"role": "assistant", "content": "4."}]
    policy, reference = (load_policy(cfg.model.init, cfg).eval() for _ in range(2))
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.05 * torch.randn_like(p))
    beta, w = 0.3, 0.7

    # Ours: padded rows of chosen then rejected, one forward.
    examples = [pair_examples(tok, p, 1000) for p in pairs]
    rows = pair_rows([c for c, _ in examples], [r for _, r in examples], tok.pad_id)
    with torch.no_grad():
        ref, _, _ = pair_logps(reference, rows)
    logps, counts, _ = pair_logps(policy, rows)
    (pc, pr), (nc, nr), (rc, rr) = logps.chunk(2), counts.chunk(2), ref.chunk(2)
    ours = dpo_terms(pc, pr, rc, rr, nc, nr, beta, w, kind, normalize).loss
    ours_grads = torch.autograd.grad(ours, list(policy.parameters()))

    # Independent: the formula written out per pair (a multi-turn response counts every assistant turn).
    def side_logp(model, p, resp):
        if resp is p.chosen and len(resp) > 1:  # the multi-turn chosen: both assistant turns
            a, na = _independent_logp(model, tok, _Side(p, resp[:1]))
            first = p.prompt + resp[:2]
            b, nb = _independent_logp(model, tok, _Side(type("P", (), {"prompt": first})(), resp[2:]))
            return a + b, na + nb
        return _independent_logp(model, tok, _Side(p, resp))

    terms, nll_sum, nll_count = [], 0.0, 0
    for p in pairs:
        (a, na), (b, nb) = side_logp(policy, p, p.chosen), side_logp(policy, p, p.rejected)
        with torch.no_grad():
            (ra, _), (rb, _) = side_logp(reference, p, p.chosen), side_logp(reference, p, p.rejected)
        nll_sum, nll_count = nll_sum - a, nll_count + na
        sa, sb = (1 / na, 1 / nb) if normalize else (1, 1)
        delta = (a - ra) * sa - (b - rb) * sb
        terms.append((delta - 1 / (2 * beta)) ** 2 if kind == "ipo" else -torch.log(torch.sigmoid(beta * delta)))
    theirs = sum(terms) / len(terms) + w * nll_sum / nll_count
    theirs_grads = torch.autograd.grad(theirs, list(policy.parameters()))

    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    # fp32 (the logits are fp32 by design): padded batch vs one sequence sum in other orders, so
    # each gradient is compared relative to its own scale.
    for g, h in zip(ours_grads, theirs_grads):
        assert (g - h).abs().max() <= 1e-4 * h.abs().max() + 1e-9


def test_ema_is_the_exponential_average() -> None:
    policy = torch.nn.Linear(3, 2, bias=False)
    policy.config = None
    both = PolicyWithEMA(policy, decay=0.8)
    history = [policy.weight.detach().clone()]
    for _ in range(4):
        with torch.no_grad():
            policy.weight.add_(torch.randn_like(policy.weight))
        both.update()
        history.append(policy.weight.detach().clone())
    # ema_n = d^n w_0 + sum_k (1 - d) d^(n-k) w_k
    d, n = 0.8, 4
    want = d**n * history[0] + sum((1 - d) * d ** (n - k) * history[k] for k in range(1, n + 1))
    torch.testing.assert_close(both.ema.weight, want)
    assert not both.ema.weight.requires_grad


def test_ema_counts_a_tied_weight_once(toy: Path, tmp_path: Path) -> None:  # noqa: F811
    policy = load_policy(str(toy / "model"), run_config(toy, tmp_path))
    both = PolicyWithEMA(policy, decay=0.5)
    with torch.no_grad():
        policy.lm_head.weight.add_(1.0)
    before = both.ema.lm_head.weight.clone()
    both.update()
    torch.testing.assert_close(both.ema.lm_head.weight, before + 0.5)
    assert both.ema.lm_head.weight is both.ema.model.embed_tokens.weight


def test_dpo_exact_resume(toy: Path, tmp_path: Path) -> None:  # noqa: F811
    cfg = run_config(toy, tmp_path / "run", "pairs.jsonl", train={"batch_size": 8}, dpo={"ema_decay": 0.5})
    check_exact_resume(lambda: DPOTrainer(cfg), tmp_path / "run")


@torch.no_grad()
def _prefers(model_dir: Path, cfg, path: Path) -> float:
    """Share of pairs whose chosen response the model finds more likely than the rejected one."""
    tok = load_tokenizer(model_dir)
    model = load_policy(str(model_dir), cfg).eval()
    pairs = [parse_pair(json.loads(line)) for line in path.read_text().splitlines()]
    examples = [pair_examples(tok, p, 1000) for p in pairs]
    logps, _, _ = pair_logps(model, pair_rows([c for c, _ in examples], [r for _, r in examples], tok.pad_id))
    chosen, rejected = logps.chunk(2)
    return float((chosen > rejected).float().mean())


def test_dpo_teaches_a_preferred_form(toy: Path, tmp_path: Path) -> None:  # noqa: F811
    """The toy rule: the question echoed back over a plain (shorter, so likelier) answer; held out,
    the policy comes to prefer it."""
    train = _rule_pairs(tmp_path / "train.jsonl", 64, 1, prefer_echo=True)
    held_out = _rule_pairs(tmp_path / "test.jsonl", 40, 2, prefer_echo=True)
    cfg = run_config(toy, tmp_path / "run", str(train), model={"attention_dropout": 0.0, "hidden_dropout": 0.0},
                     train={"epochs": 2, "batch_size": 8, "lr": 2e-3, "save_every": 100},
                     dpo={"beta": 0.1, "nll_weight": 0.0, "ema_decay": 0.5})
    start = _prefers(toy / "model", cfg, held_out)
    DPOTrainer(cfg).run()
    after = _prefers(tmp_path / "run" / "model", cfg, held_out)
    assert start <= 0.1 and after >= 0.95, (start, after)
