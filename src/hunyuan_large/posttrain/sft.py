"""`hunyuan sft`: supervised fine-tuning on conversations, loss only on what the assistant writes.

Conversations are rendered with the model folder's chat template, masked by `tokens_and_mask`
(assistant content and its end-of-turn token), packed best-fit-decreasing into rows of
`seq_len` and trained with a block-diagonal causal mask. The loss is the mean cross-entropy
over the step's assistant tokens, so packing does not change it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .chat_mask import tokens_and_mask
from .data import parse_sft, read_jsonl
from .loop import PostTrainer
from .packing import Example, Rows, pack


def example(ids: list[int], mask: list[bool], seq_len: int) -> Example:
    """Inputs ids[:-1] predicting ids[1:], learned where the assistant wrote the target; cut to seq_len."""
    targets = [i if m else -100 for i, m in zip(ids[1:], mask[1:])]
    return Example(ids[:-1][:seq_len], targets[:seq_len])


def sft_loss_sum(model, rows: Rows) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Summed cross-entropy over the rows' learned targets, and the router's aux loss (or None)."""
    out = model(input_ids=rows.input_ids, position_ids=rows.position_ids, segment_ids=rows.segment_ids)
    ce = F.cross_entropy(out.logits.flatten(0, 1), rows.targets.flatten(), ignore_index=-100, reduction="sum")
    return ce, out.aux_loss


class SFTTrainer(PostTrainer):
    name = "sft"
    distributed_ok = True

    def prepare(self) -> int:
        d = self.cfg.data
        tokenized = read_jsonl(d.train, lambda r: tokens_and_mask(self.tokenizer, parse_sft(r)), d.strict, self.report)
        examples, cut = [], 0
        for ids, mask in tokenized:
            cut += len(ids) - 1 > d.seq_len
            examples.append(example(ids, mask, d.seq_len))
        pad = self.tokenizer.pad_id if self.tokenizer.pad_id is not None else 0
        self.rows = pack(examples, d.seq_len, pad)
        learned = int((self.rows.targets != -100).sum())
        fill = float((self.rows.segment_ids >= 0).float().mean())
        self.console.print(f"sft: {len(examples)} conversations ({cut} cut to {d.seq_len} tokens) -> "
                           f"{len(self.rows)} packed rows, {fill:.0%} filled, {learned:,} assistant tokens")
        return len(self.rows)

    def step_losses(self, micro: list[torch.Tensor]) -> dict[str, float]:
        t = self.cfg.train
        batches = [self.rows.select(m, self.device) for m in micro]
        ctx = self.ctx
        # The mean over every rank's assistant tokens; FSDP averages the ranks' gradients, hence x world.
        learned = max(ctx.all_reduce(sum(int((b.targets != -100).sum()) for b in batches)), 1)
        total = 0.0
        for b in batches:
            with self.autocast:
                ce, aux = sft_loss_sum(self.model, b)
            loss = ce * ctx.world / learned
            if aux is not None:
                loss = loss + t.aux_loss_coef * aux / len(batches)
            loss.backward()
            total += float(ce.detach()) / learned
        tokens = ctx.all_reduce(sum(int((b.segment_ids >= 0).sum()) for b in batches))
        return {"loss": ctx.all_reduce(total), "tokens": tokens}
