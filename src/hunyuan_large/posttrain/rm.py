"""`hunyuan rm`: a Bradley-Terry reward model on preference pairs.

loss = mean[-log sigmoid(r_c - r_r)] + center_coef * mean((r_c + r_r)^2); the centering term
keeps scores near zero, where they are comparable across prompts. Logged: loss, accuracy
(share of pairs with r_c > r_r) and margin (mean r_c - r_r). RUN/model is a reward-model folder.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..tokenizer import Tokenizer
from .chat_mask import tokens_and_mask
from .data import BadRecord, Messages, parse_pair, read_jsonl
from .loop import PostTrainer
from .reward import RewardModel, save_reward_model


def scored_ids(tok: Tokenizer, prompt: Messages, response: Messages) -> list[int]:
    """prompt + response ids up to the response's last token (its end-of-turn token)."""
    ids, mask = tokens_and_mask(tok, prompt + response, len(prompt))
    return ids[: max(i for i, m in enumerate(mask) if m) + 1]


def score_batch(model: RewardModel, seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scores (B,) of right-padded sequences."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(s)
    last = torch.tensor([len(s) - 1 for s in seqs])
    return model(ids.to(device), last.to(device))


def bradley_terry(r_chosen: torch.Tensor, r_rejected: torch.Tensor, center_coef: float) -> torch.Tensor:
    """mean[-log sigmoid(r_c - r_r)] + center_coef * mean((r_c + r_r)^2)."""
    return -F.logsigmoid(r_chosen - r_rejected).mean() + center_coef * ((r_chosen + r_rejected) ** 2).mean()


class RMTrainer(PostTrainer):
    name = "rm"
    metric_names = ("accuracy", "margin")

    def prepare(self) -> int:
        d = self.cfg.data

        def parse(record) -> tuple[list[int], list[int]]:
            p = parse_pair(record)
            c, r = scored_ids(self.tokenizer, p.prompt, p.chosen), scored_ids(self.tokenizer, p.prompt, p.rejected)
            if max(len(c), len(r)) > d.seq_len:
                raise BadRecord(f"longer than data.seq_len = {d.seq_len} tokens")
            return c, r

        pairs = read_jsonl(d.train, parse, d.strict, self.report)
        self.chosen, self.rejected = [c for c, _ in pairs], [r for _, r in pairs]
        self.pad = self.tokenizer.pad_id if self.tokenizer.pad_id is not None else 0
        self.reward = RewardModel(self.model).to(self.device)
        return len(self.chosen)

    @property
    def trainable(self) -> nn.Module:
        return self.reward

    def save_model(self, folder: Path) -> None:
        save_reward_model(self.reward, folder)

    def step_losses(self, micro: list[torch.Tensor]) -> dict[str, float]:
        t = self.cfg.train
        sums = {"loss": 0.0, "accuracy": 0.0, "margin": 0.0, "tokens": 0.0}
        for idx in micro:
            seqs = [self.chosen[i] for i in idx] + [self.rejected[i] for i in idx]
            with self.autocast:
                scores, aux = score_batch(self.reward, seqs, self.pad, self.device)
            rc, rr = scores.float().chunk(2)
            loss = bradley_terry(rc, rr, self.cfg.rm.center_coef)
            ((loss + (t.aux_loss_coef * aux if aux is not None else 0.0)) / len(micro)).backward()
            sums["loss"] += float(loss.detach()) / len(micro)
            sums["accuracy"] += float((rc > rr).float().mean()) / len(micro)
            sums["margin"] += float((rc - rr).mean().detach()) / len(micro)
            sums["tokens"] += sum(len(s) for s in seqs)
        return sums



@torch.no_grad()
def score_pairs(model_dir: str, path: str, batch_size: int = 16) -> dict:
    """Scores of every pair of a jsonl file: per-pair (chosen, rejected), accuracy, mean margin."""
    from ..tokenizer import load_tokenizer
    from .data import Report
    from .reward import load_reward_model

    tok, model = load_tokenizer(model_dir), load_reward_model(model_dir)
    report = Report()
    pairs = read_jsonl([path], parse_pair, report=report)
    pad = tok.pad_id if tok.pad_id is not None else 0
    scores = []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        seqs = [scored_ids(tok, p.prompt, p.chosen) for p in chunk] + [scored_ids(tok, p.prompt, p.rejected) for p in chunk]
        rc, rr = score_batch(model, seqs, pad, "cpu")[0].chunk(2)
        scores += list(zip(rc.tolist(), rr.tolist()))
    margins = [c - r for c, r in scores]
    return {"pairs": len(scores), "accuracy": sum(m > 0 for m in margins) / len(scores),
            "margin": sum(margins) / len(scores), "bad_lines": report.bad, "scores": scores}
