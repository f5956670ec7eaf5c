"""Shared by the import tests: tiny random Llama checkpoints built with transformers, as HF folders and GGUF files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tokenizers import AddedToken, SentencePieceBPETokenizer, Tokenizer, models

from hunyuan_large.tokenizer import train_bpe

TEXTS = ["The quick brown fox jumps over the lazy dog. Numbers 12345 and words: alpha beta gamma. " * 10,
         "Hello, world! How are you today? I am fine, thank you. Ünïcödé text too. " * 10]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# SmolLM2's template shape: a default system prompt, then <|im_start|>role\ncontent<|im_end|>\n turns.
TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_hf_tokenizer() -> Tokenizer:
    """A byte-level BPE tokenizers.Tokenizer of ~300 ids whose first ids are SPECIALS (control tokens)."""
    tok = train_bpe(TEXTS, 300, min_frequency=1)
    vocab = tok.get_vocab()
    merges = json.loads(tok.to_str())["model"]["merges"]
    # Renumber so the specials come first, as in SmolLM2 (0..2).
    order = SPECIALS + sorted(vocab, key=vocab.get)
    bpe = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(order)},
                               merges=[tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in merges]))
    bpe.normalizer, bpe.pre_tokenizer, bpe.decoder = tok.normalizer, tok.pre_tokenizer, tok.decoder
    bpe.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIALS])
    return bpe


def tokenizer_config() -> dict:
    return {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>",
            "unk_token": "<|endoftext|>", "chat_template": TEMPLATE, "tokenizer_class": "PreTrainedTokenizerFast",
            "clean_up_tokenization_spaces": False}


def sentencepiece_vocab() -> tuple[list[str], list[int], list[float]]:
    """A Llama-2-style vocabulary: <unk> <s> </s>, 256 byte tokens, then ▁-pieces by merge rank (score = -rank)."""
    sp = SentencePieceBPETokenizer()
    sp.train_from_iterator(TEXTS, vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    vocab = sp.get_vocab()
    pieces = sorted(vocab, key=vocab.get)
    tokens = pieces[:3] + [f"<0x{b:02X}>" for b in range(256)] + pieces[3:]
    types = [2, 3, 3] + [6] * 256 + [1] * (len(pieces) - 3)  # unknown, control, byte, normal
    return tokens, types, [0.0] * 259 + [-float(i) for i in range(len(pieces) - 3)]


def llama(seed: int = 0, **config):
    """A random transformers LlamaForCausalLM (fp32) with perturbed norms, so a misplaced norm shows."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    base = dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, initializer_range=0.1,
                bos_token_id=1, eos_token_id=2, pad_token_id=2)
    model = LlamaForCausalLM(LlamaConfig(**(base | config))).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
    return model


def save_hf_folder(model, folder: Path, max_shard_size: str = "5GB") -> Path:
    """The model's HF folder (safetensors) with the tiny tokenizer and its chat template."""
    model.save_pretrained(folder, max_shard_size=max_shard_size)
    tiny_hf_tokenizer().save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config()))
    return folder


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of Q/K rows (the forward direction)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


GGUF_NAMES = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
              "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
              "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


# Byte offsets of the fp16 scale fields in one 256-element block of each K type (ggml-common.h).
K_SCALES = {"Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}


def k_blocks(qtype, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Random K-quant blocks (rows, bytes) whose fp16 super-block scales are 1e-4 (weights ~0.1)."""
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = np.random.default_rng(seed).integers(0, 256, (shape[0], shape[1] // block, size), dtype=np.uint8)
    for offset in K_SCALES[qtype.name]:
        raw[..., offset:offset + 2] = np.frombuffer(np.float16(1e-4).tobytes(), dtype=np.uint8)
    return raw.reshape(shape[0], -1)


def write_gguf(model, path: Path, quant: dict[str, str] | None = None, arch: str = "llama",
               tokenizer_model: str = "gpt2", extra_tensor: tuple[str, np.ndarray, object] | None = None) -> Path:
    """`model` as a llama GGUF written with gguf.GGUFWriter; `quant` maps GGUF tensor-name suffixes to types."""
    import gguf

    cfg = model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_vocab_size(cfg.vocab_size)
    if tokenizer_model == "llama":
        tokens, types, scores = sentencepiece_vocab()
        w.add_token_scores(scores)
    else:
        spec = json.loads(tiny_hf_tokenizer().to_str())
        vocab = spec["model"]["vocab"]
        tokens = sorted(vocab, key=vocab.get)
        tokens += [f"[PAD{i}]" for i in range(len(tokens), cfg.vocab_size)]
        types = [3 if t in SPECIALS else 1 for t in tokens]
        w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in spec["model"]["merges"]])
    w.add_tokenizer_model(tokenizer_model)
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_add_bos_token(tokenizer_model == "llama")  # what Llama 2 era files say
    w.add_chat_template(TEMPLATE)
    tensors = {"token_embd.weight": model.model.embed_tokens.weight, "output_norm.weight": model.model.norm.weight}
    if not cfg.tie_word_embeddings:
        tensors["output.weight"] = model.lm_head.weight
    for i, layer in enumerate(model.model.layers):
        for ours, theirs in GGUF_NAMES.items():
            tensors[f"blk.{i}.{theirs}.weight"] = layer.get_submodule(ours).weight
    for name, t in tensors.items():
        data = t.detach().numpy().astype(np.float32)
        if name.endswith("attn_q.weight"):
            data = permute(data, cfg.num_attention_heads)
        elif name.endswith("attn_k.weight"):
            data = permute(data, cfg.num_key_value_heads)
        qtype = next((gguf.GGMLQuantizationType[q] for s, q in (quant or {}).items() if name.endswith(s)), None)
        if qtype is None or data.ndim == 1:
            w.add_tensor(name, data)
        elif qtype in (gguf.GGMLQuantizationType.F16,):
            w.add_tensor(name, data.astype(np.float16))
        elif qtype.name in K_SCALES:  # gguf-py cannot quantize to K types: random blocks, sane scales
            w.add_tensor(name, k_blocks(qtype, data.shape), raw_dtype=qtype)
        else:
            w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    if extra_tensor is not None:
        w.add_tensor(extra_tensor[0], extra_tensor[1], raw_dtype=extra_tensor[2])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
