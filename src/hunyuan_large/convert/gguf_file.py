"""Import a llama-architecture GGUF file: metadata -> config, dequantized tensors -> weights.

llama.cpp's converter permutes the rows of Q and K (within each head, the two rotary halves are
interleaved for its rope layout); we undo it exactly as transformers' GGUF loader does. Any tensor
type the `gguf` package can dequantize is read (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K...).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..model import HunyuanForCausalLM
from ..pretrained import hf_tensors
from .gguf_reader import GGUFTensor, read_gguf_file
from .llama_config import UnsupportedSource, llama_model_config

_LAYER = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_GLOBAL = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
           "output.weight": "lm_head.weight"}
_BLOCK = re.compile(r"blk\.(\d+)\.(\w+)\.weight$")


def _gguf():
    try:
        import gguf
    except ModuleNotFoundError:
        raise UnsupportedSource("importing GGUF files needs the 'gguf' package (pip install gguf==0.19.0)") from None
    return gguf


def our_name(name: str) -> str:
    """GGUF tensor name -> ours (HF Llama's)."""
    if name in _GLOBAL:
        return _GLOBAL[name]
    m = _BLOCK.match(name)
    if m is None or m.group(2) not in _LAYER:
        raise UnsupportedSource(f"GGUF tensor {name!r} is not part of the llama architecture we import")
    return f"model.layers.{m.group(1)}.{_LAYER[m.group(2)]}.weight"


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation: rows (head, pair, 2) -> (head, 2, pair)."""
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def llama_config_dict(meta: dict[str, Any], has_output: bool) -> dict[str, Any]:
    """An HF Llama config.json dict from GGUF metadata."""
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise UnsupportedSource(f"GGUF architecture {arch!r} is not supported (only 'llama')")
    def key(name: str, default: Any = None) -> Any:
        return meta.get(f"llama.{name}", default)
    heads = key("attention.head_count")
    hidden = key("embedding_length")
    rope_dim = key("rope.dimension_count", hidden // heads)
    if rope_dim != hidden // heads:
        raise UnsupportedSource(f"llama.rope.dimension_count {rope_dim} != head dim {hidden // heads} "
                                "(partial rotary) is not supported")
    scaling = key("rope.scaling.type", "none")
    if scaling not in ("none", "linear"):
        raise UnsupportedSource(f"GGUF rope scaling {scaling!r} is not supported (none or linear)")
    rope = {"rope_type": "default"} if scaling == "none" else {"rope_type": "linear",
                                                               "factor": key("rope.scaling.factor")}
    if key("attention.sliding_window") is not None:
        raise UnsupportedSource("GGUF llama.attention.sliding_window is not supported (sliding-window attention)")
    tokens = meta.get("tokenizer.ggml.tokens") or []
    return {
        "model_type": "llama", "hidden_size": hidden, "num_hidden_layers": key("block_count"),
        "num_attention_heads": heads, "num_key_value_heads": key("attention.head_count_kv", heads),
        "intermediate_size": key("feed_forward_length"), "vocab_size": key("vocab_size", len(tokens)),
        "max_position_embeddings": key("context_length", 2048), "rope_theta": key("rope.freq_base", 10000.0),
        "rope_scaling": rope, "rms_norm_eps": key("attention.layer_norm_rms_epsilon", 1e-5),
        "tie_word_embeddings": not has_output,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": meta.get("tokenizer.ggml.padding_token_id"),
    }


def _dequantize(gguf: Any, tensor: GGUFTensor) -> np.ndarray:
    try:
        w = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        return np.require(w, dtype=np.float32, requirements="W")  # F32 tensors come as read-only memory maps
    except NotImplementedError:
        raise UnsupportedSource(f"GGUF tensor {tensor.name} has type {tensor.tensor_type.name}, "
                                "which the gguf package cannot dequantize") from None


@torch.no_grad()
def read_gguf(path: Path) -> tuple[HunyuanForCausalLM, dict[str, Any], dict[str, Any]]:
    """The model of a GGUF file (fp32, dequantized weights), its config dict and its metadata."""
    gguf = _gguf()
    meta, tensors = read_gguf_file(path)
    names = {t.name for t in tensors}
    if "rope_freqs.weight" in names:
        raise UnsupportedSource("GGUF rope_freqs (llama3 RoPE factors stored as a tensor) is not supported")
    hf = llama_config_dict(meta, has_output="output.weight" in names)
    cfg = llama_model_config(hf, "float32")
    with torch.device("meta"):
        model = HunyuanForCausalLM(cfg)
    targets = hf_tensors(model)  # meta tensors: names and shapes only
    state = {}
    for tensor in tensors:
        name = our_name(tensor.name)
        w = _dequantize(gguf, tensor)
        if name.endswith("q_proj.weight"):
            w = unpermute(w, cfg.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            w = unpermute(w, cfg.num_key_value_heads)
        if name not in targets or tuple(w.shape) != tuple(targets[name].shape):
            raise UnsupportedSource(f"GGUF tensor {tensor.name} has shape {list(w.shape)}, the config implies "
                                    f"{list(targets[name].shape) if name in targets else 'none (tied head)'}")
        state[name] = torch.from_numpy(np.ascontiguousarray(w))
    missing = sorted(set(targets) - set(state))
    if missing:
        raise UnsupportedSource(f"the GGUF file lacks {len(missing)} tensors, e.g. {missing[0]}")
    if cfg.tie_word_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    model.load_state_dict(state, assign=True)  # the dequantized arrays become the parameters: no copy
    model.tie_weights()
    return model.eval(), hf, meta
