"""Online preference pairs: the policy (or its EMA) samples, a reward model ranks.

Every `online_every` steps, for each of `online_prompts` prompts the engine samples `online_n`
responses in one batched generation from a copy of the sampling weights (synced by
`load_state_dict`: the decode layout keeps the state dict's names and values); the reward model
scores them; the best becomes chosen and the worst rejected, unless their score gap is below
`online_min_gap`. Sampling seeds derive from the step, so a resumed run draws the same pairs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..infer.engine import Engine, EngineConfig
from ..infer.sampling import SamplingParams
from ..model import HunyuanForCausalLM
from ..tokenizer import Tokenizer
from .config import DPOSection
from .data import Messages, Pair
from .reward import RewardModel
from .rm import score_batch, scored_ids


@dataclass
class OnlineRound:
    """One round's pairs and what is logged of it."""

    pairs: list[Pair]
    rewards: list[list[float]]  # per prompt, the score of each sample
    skipped: int  # prompts whose best-worst gap was below the threshold
    tokens: int  # generated tokens


class OnlineSampler:
    """An engine over a private copy of the policy, and the reward model that ranks its samples."""

    def __init__(self, policy: HunyuanForCausalLM, tok: Tokenizer, reward: RewardModel, d: DPOSection, max_len: int):
        self.tok, self.reward, self.d = tok, reward, d
        self.engine = Engine(copy.deepcopy(policy), tok, config=EngineConfig(max_batch=d.online_n * d.online_prompts,
                                                                              max_len=max_len))

    @torch.no_grad()
    def sync(self, source: nn.Module) -> None:
        """Copy the sampling weights (policy or EMA) into the engine's model."""
        self.engine.model.load_state_dict(source.state_dict())

    @torch.no_grad()
    def round(self, prompts: list[Messages], seed: int) -> OnlineRound:
        """Sample, score and pair: one chosen/rejected pair per prompt with a large enough gap."""
        d, n = self.d, self.d.online_n
        base = self.engine.chat_params(SamplingParams(max_new_tokens=d.online_max_new_tokens,
                                                      temperature=d.online_temperature))
        order = []  # every sample of the round is queued first, so the engine decodes them as one batch
        for i, p in enumerate(prompts):
            ids = self.engine.encode_chat(p)
            for k in range(n):
                order.append(self.engine.add_request(ids, base.replace(seed=seed * 100003 + i * n + k)))
        text, tokens = dict.fromkeys(order, ""), 0
        while self.engine.has_unfinished():
            for out in self.engine.step():
                text[out.request_id] += out.text
                tokens += len(out.token_ids)
        texts = [[text[order[i * n + k]] for k in range(n)] for i in range(len(prompts))]
        seqs = [scored_ids(self.tok, p, [{"role": "assistant", "content": t}]) for p, ts in zip(prompts, texts) for t in ts]
        device = next(self.reward.parameters()).device
        scores = score_batch(self.reward, seqs, self.tok.pad_id or 0, device)[0].float().cpu().view(len(prompts), n)
        pairs, skipped = [], 0
        for p, ts, s in zip(prompts, texts, scores):
            best, worst = int(s.argmax()), int(s.argmin())
            if float(s[best] - s[worst]) < max(d.online_min_gap, 1e-12):
                skipped += 1
                continue
            pairs.append(Pair(p, [{"role": "assistant", "content": ts[best]}], [{"role": "assistant", "content": ts[worst]}]))
        return OnlineRound(pairs, scores.tolist(), skipped, tokens)
