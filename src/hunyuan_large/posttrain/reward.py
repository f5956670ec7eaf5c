"""A reward model: the causal LM's backbone and a scalar head read at the last token.

Saved as a model folder whose config.json has `"reward_model": true`, the backbone's weights as
usual and the head in `reward_head.safetensors`; `load_reward_model` reads it back.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import ModelConfig
from ..errors import UserError
from ..model import HunyuanForCausalLM
from ..pretrained import load_pretrained, save_pretrained

HEAD_FILE = "reward_head.safetensors"


class RewardModel(nn.Module):
    """r(x) = w . h_last(x): one score per sequence."""

    def __init__(self, backbone: HunyuanForCausalLM):
        super().__init__()
        self.backbone = backbone
        self.config = backbone.config
        self.head = nn.Linear(backbone.config.hidden_size, 1, bias=False)
        nn.init.zeros_(self.head.weight)  # every response starts equally good

    def forward(self, input_ids: torch.Tensor, last: torch.Tensor, position_ids: torch.Tensor | None = None,
                segment_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scores (B,) at positions `last` (B,) of input_ids (B, T); and the router's aux loss."""
        out = self.backbone.model(input_ids, position_ids=position_ids, segment_ids=segment_ids)
        h = out.last_hidden_state[torch.arange(len(last), device=last.device), last]  # (B, D)
        return self.head(h.float() if self.head.weight.dtype == torch.float32 else h)[:, 0], out.aux_loss


def save_reward_model(model: RewardModel, folder: str | Path) -> None:
    """The backbone as a model folder marked `reward_model`, plus the head's weights."""
    folder = Path(folder)
    save_pretrained(model.backbone, folder)
    cfg = ModelConfig.load(folder)
    cfg.extra["reward_model"] = True
    cfg.save(folder)
    save_file({"weight": model.head.weight.detach().cpu().contiguous()}, folder / HEAD_FILE)


def load_reward_model(folder: str | Path, device: str = "cpu") -> RewardModel:
    """A reward-model folder written by `hunyuan rm`."""
    folder = Path(folder)
    if not ModelConfig.load(folder).extra.get("reward_model") or not (folder / HEAD_FILE).is_file():
        raise UserError(f"{folder} is not a reward model (config.json lacks reward_model = true or {HEAD_FILE})")
    model = RewardModel(load_pretrained(folder, device=device, dtype=torch.float32))
    model.head.weight.data.copy_(load_file(folder / HEAD_FILE)["weight"])
    return model.to(device).eval()
