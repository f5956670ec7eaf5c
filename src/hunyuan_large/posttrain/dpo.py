"""`hunyuan dpo`: the paper's single-stage DPO on offline preference pairs (dpo_loss.py).

The reference is the initial policy: its log-probs of every pair are computed once, before the
first step, and cached in the run folder (`reference_logps.pt`). An EMA of the policy weights is
updated after every step and checkpointed with it; `dpo.export` picks which weights RUN/model
gets. Metrics carry TRL's names (rewards/chosen, rewards/margins, logps/chosen, nll, ...).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from torch import nn

from ..pretrained import save_pretrained
from .chat_mask import tokens_and_mask
from .data import BadRecord, Pair, parse_pair, parse_prompt, read_jsonl
from .dpo_loss import dpo_terms, response_logps
from .ema import PolicyWithEMA
from .loop import PostTrainer
from .packing import Example, Rows, pad_rows
from .sft import example

METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
           "logps/rejected", "nll")


def pair_examples(tok, pair: Pair, seq_len: int) -> tuple[Example, Example]:
    """(chosen, rejected) examples learning only the response after the prompt."""
    first = len(pair.prompt)
    return tuple(example(*tokens_and_mask(tok, pair.prompt + r, first), seq_len)
                 for r in (pair.chosen, pair.rejected))


def pair_rows(chosen: list[Example], rejected: list[Example], pad_id: int) -> Rows:
    """The chosen rows then the rejected rows, right-padded: one forward for both."""
    return pad_rows(chosen + rejected, pad_id)


def pair_logps(model: nn.Module, rows: Rows) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(summed response log-probs (2B,), response token counts (2B,), router aux loss or None)."""
    out = model(input_ids=rows.input_ids, position_ids=rows.position_ids, segment_ids=rows.segment_ids)
    logps, counts = response_logps(out.logits, rows.targets)
    return logps, counts, out.aux_loss


class DPOTrainer(PostTrainer):
    name = "dpo"
    metric_names = ("rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected", "logps/chosen",
                    "nll", "online/reward_mean", "online/reward_best", "online/reward_worst", "objective/kl",
                    "online/share")

    def prepare(self) -> int:
        d = self.cfg.data

        def parse(record) -> tuple[Example, Example]:
            c, r = pair_examples(self.tokenizer, parse_pair(record), d.seq_len)
            if not any(t != -100 for t in c.targets) or not any(t != -100 for t in r.targets):
                raise BadRecord(f"a response is cut away by data.seq_len = {d.seq_len}")
            return c, r

        examples = read_jsonl(d.train, parse, d.strict, self.report)
        self.chosen, self.rejected = [c for c, _ in examples], [r for _, r in examples]
        self.pad = self.tokenizer.pad_id if self.tokenizer.pad_id is not None else 0
        self.ref = self._reference_logps(Path(self.cfg.run_dir) / "reference_logps.pt")
        self.both = PolicyWithEMA(self.model, self.cfg.dpo.ema_decay)
        self.pool: list[tuple[Example, Example, float, float]] = []  # the latest online round's pairs
        if self.cfg.dpo.online_every:
            self._prepare_online()
        return len(self.chosen)

    def _prepare_online(self) -> None:
        from .online import OnlineSampler
        from .reward import load_reward_model

        d = self.cfg.dpo
        self.prompts = read_jsonl(d.online_prompts_file, parse_prompt, self.cfg.data.strict, self.report)
        # Online pairs need the reference live: a frozen copy of the initial policy.
        self.reference = copy.deepcopy(self.model).eval().requires_grad_(False)
        reward = load_reward_model(d.reward_model, str(self.device))
        self.sampler = OnlineSampler(self.model, self.tokenizer, reward, d, self.cfg.data.seq_len)

    def before_step(self, step: int) -> dict | None:
        self.step = step
        d = self.cfg.dpo
        if not d.online_every or step % d.online_every:
            return None
        self.sampler.sync(self.both.ema if d.sample_from == "ema" else self.model)
        r = step // d.online_every
        prompts = [self.prompts[(r * d.online_prompts + j) % len(self.prompts)] for j in range(d.online_prompts)]
        t0 = time.perf_counter()
        rnd = self.sampler.round(prompts, self.cfg.train.seed * 7919 + step)
        examples = [pair_examples(self.tokenizer, p, self.cfg.data.seq_len) for p in rnd.pairs]
        examples = [(c, rj) for c, rj in examples if any(t != -100 for t in c.targets) and any(t != -100 for t in rj.targets)]
        note = {"online/reward_mean": sum(map(sum, rnd.rewards)) / sum(map(len, rnd.rewards)),
                "online/reward_best": sum(map(max, rnd.rewards)) / len(rnd.rewards),
                "online/reward_worst": sum(map(min, rnd.rewards)) / len(rnd.rewards),
                "online/pairs": len(examples), "online/skipped": rnd.skipped,
                "online/sample_s": time.perf_counter() - t0, "online/sample_tokens": rnd.tokens}
        if not examples:
            return note  # keep the previous round's pairs
        rows = pair_rows([c for c, _ in examples], [rj for _, rj in examples], self.pad).to(self.device)
        with torch.no_grad(), self.autocast:
            ref, _, _ = pair_logps(self.reference, rows)
            self.model.eval()
            pol, _, _ = pair_logps(self.model, rows)
            self.model.train()
        ref = ref.float().cpu()
        note["objective/kl"] = float((pol.float().cpu() - ref).mean())  # sampled responses: E[log pi - log pi_ref]
        rc, rr = ref.chunk(2)
        self.pool = [(c, rj, float(a), float(b)) for (c, rj), a, b in zip(examples, rc, rr)]
        return note

    def extra_state(self) -> dict:
        return {"pool": [[c.inputs, c.targets, r.inputs, r.targets, a, b] for c, r, a, b in self.pool]}

    def load_extra_state(self, state: dict) -> None:
        self.pool = [(Example(ci, ct), Example(ri, rt), a, b) for ci, ct, ri, rt, a, b in state.get("pool", [])]

    @torch.no_grad()
    def _reference_logps(self, cache: Path) -> torch.Tensor:
        """(N, 2) summed log-probs of chosen and rejected under the initial policy (no dropout)."""
        if cache.is_file():
            ref = torch.load(cache, weights_only=True)
            if ref.shape == (len(self.chosen), 2):
                return ref
        self.model.eval()
        out, b = [], self.cfg.train.batch_size
        for i in range(0, len(self.chosen), b):
            rows = pair_rows(self.chosen[i:i + b], self.rejected[i:i + b], self.pad).to(self.device)
            with self.autocast:
                logps, _, _ = pair_logps(self.model, rows)
            out.append(torch.stack(logps.float().cpu().chunk(2), 1))
        self.model.train()
        ref = torch.cat(out)
        torch.save(ref, cache)
        return ref

    @property
    def state_module(self) -> nn.Module:
        return self.both

    def after_step(self) -> None:
        self.both.update()

    def save_model(self, folder: Path) -> None:
        save_pretrained(self.both.ema if self.cfg.dpo.export == "ema" else self.model, folder)

    def step_losses(self, micro: list[torch.Tensor]) -> dict[str, float]:
        d, t = self.cfg.dpo, self.cfg.train
        sums = dict.fromkeys(("loss", *METRICS, "online/share", "tokens"), 0.0)
        for m, idx in enumerate(micro):
            k = round(d.online_fraction * len(idx)) if self.pool else 0
            start = (self.step * len(micro) + m) * len(idx)
            online = [self.pool[(start + j) % len(self.pool)] for j in range(k)]
            idx = idx[: len(idx) - k]
            chosen = [self.chosen[i] for i in idx] + [c for c, _, _, _ in online]
            rejected = [self.rejected[i] for i in idx] + [r for _, r, _, _ in online]
            rows = pair_rows(chosen, rejected, self.pad).to(self.device)
            ref = torch.cat([self.ref[idx], torch.tensor([[a, b] for _, _, a, b in online]).view(-1, 2)]).to(self.device)
            sums["online/share"] += k / (len(idx) + k) / len(micro)
            with self.autocast:
                logps, counts, aux = pair_logps(self.model, rows)
            (pc, pr), (nc, nr) = logps.chunk(2), counts.chunk(2)
            terms = dpo_terms(pc, pr, ref[:, 0], ref[:, 1], nc, nr, d.beta, d.nll_weight, d.loss, d.length_normalize)
            loss = terms.loss + (t.aux_loss_coef * aux if aux is not None else 0.0)
            (loss / len(micro)).backward()
            margins = terms.chosen_rewards - terms.rejected_rewards
            values = {"loss": terms.loss, "rewards/chosen": terms.chosen_rewards.mean(),
                      "rewards/rejected": terms.rejected_rewards.mean(), "rewards/margins": margins.mean(),
                      "rewards/accuracies": (margins > 0).float().mean(), "logps/chosen": pc.mean(),
                      "logps/rejected": pr.mean(), "nll": terms.nll}
            for k, v in values.items():
                sums[k] += float(v.detach()) / len(micro)
            sums["tokens"] += int((rows.segment_ids >= 0).sum())
        return sums
