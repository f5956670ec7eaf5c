"""Import an HF Llama folder: config.json + safetensors (one file or sharded) + tokenizer files.

Llama's tensor names are ours already (model.layers.N.self_attn.q_proj.weight, ...), so the weights
stream through pretrained.load_weights into a dense model of the mapped config.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..model import HunyuanForCausalLM
from ..pretrained import load_weights
from ..tokenizer.hf import HF_CONFIG_FILE, HF_TOKENIZER_FILE, TEMPLATE_FILE
from .llama_config import UnsupportedSource, llama_model_config

# What an HF folder's tokenizer consists of; copied verbatim when present.
TOKENIZER_FILES = (HF_TOKENIZER_FILE, HF_CONFIG_FILE, TEMPLATE_FILE, "special_tokens_map.json")


def read_hf_folder(src: Path) -> tuple[HunyuanForCausalLM, dict]:
    """The model of an HF Llama folder (fp32, weights loaded) and its config.json dict."""
    try:
        hf = json.loads((src / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UnsupportedSource(f"{src} has no readable config.json ({e})") from None
    dtype = hf.get("dtype") or hf.get("torch_dtype") or "float32"
    cfg = llama_model_config(hf, dtype if dtype in ("float32", "bfloat16", "float16") else "float32")
    if not (src / HF_TOKENIZER_FILE).is_file():
        raise UnsupportedSource(f"{src} has no {HF_TOKENIZER_FILE} (a sentencepiece-only tokenizer is not "
                                "supported; save the tokenizer with transformers first)")
    with torch.device("meta"):
        model = HunyuanForCausalLM(cfg)
    model.to_empty(device="cpu")
    model.tie_weights()
    load_weights(model, src)
    return model.eval(), hf


def copy_tokenizer(src: Path, out: Path) -> None:
    """Copy the folder's tokenizer files into `out`."""
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
