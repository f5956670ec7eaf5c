"""Rebuild an HF tokenizer from GGUF metadata: tokens, merges, token types, special ids, chat template.

As transformers' GGUF loader rebuilds it:
- `gpt2` model (byte-level BPE, e.g. SmolLM2, Llama 3): tokens respelled in the byte-level
  alphabet, the file's merges, the split regex of the named pre-tokenizer where one is known
  (GPT-2's otherwise);
- `llama` model (sentencepiece BPE, Llama 1/2): byte fallback, '▁' for spaces (prepended to the
  first word), merges from the file or derived from the piece scores;
control tokens become special tokens and user-defined ones plain added tokens.
"""

from __future__ import annotations

from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from ..tokenizer import HFTokenizer
from ..tokenizer.bpe import byte_to_char
from .llama_config import UnsupportedSource

CONTROL, USER_DEFINED = 3, 4  # llama.cpp's token types

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPLITS = {name: _LLAMA3_SPLIT for name in ("llama3", "llama-v3", "llama-bpe", "smaug-bpe", "dbrx")}


def _pre_tokenizer(pre: str | None) -> Any:
    split = SPLITS.get(pre)
    if split is None:  # GPT-2's own regex inside ByteLevel
        return pre_tokenizers.ByteLevel(add_prefix_space=False)
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def _byte_level(meta: dict[str, Any], tokens: list[str], types: list[int]) -> Tokenizer:
    """`gpt2` model: byte-level BPE with the file's merges."""
    to_char = byte_to_char()
    alphabet = set(to_char.values())
    vocab = {t if set(t) <= alphabet else "".join(to_char[b] for b in t.encode()): i for i, t in enumerate(tokens)}
    merges = [tuple(m.split(" ")) for m in meta.get("tokenizer.ggml.merges") or []]
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                                   end_of_word_suffix="", fuse_unk=False))
    backend.pre_tokenizer = _pre_tokenizer(meta.get("tokenizer.ggml.pre"))
    backend.decoder = decoders.ByteLevel()
    # A control token outside the byte alphabet is a llama.cpp mislabel; adding it would grow the vocabulary.
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True)
                                for t, k in zip(tokens, types) if k == CONTROL and set(t) <= alphabet])
    backend.add_tokens([AddedToken(t, normalized=False, special=False)
                        for t, k in zip(tokens, types) if k == USER_DEFINED and t in vocab])
    return backend


def merges_from_scores(vocab: dict[str, int], scores: dict[str, float]) -> list[tuple[str, str]]:
    """A sentencepiece vocabulary's BPE merges: every split of a piece into two vocabulary pieces,
    best piece score first (ties: longer left, then longer right), as transformers' generate_merges."""
    merges = []
    for piece, score in scores.items():
        local = [(piece[:i], piece[i:], score) for i in range(1, len(piece))
                 if piece[:i] in vocab and piece[i:] in vocab]
        merges += sorted(local, key=lambda m: (vocab[m[0]], vocab[m[1]]))
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(left, right) for left, right, _ in merges]


def _sentencepiece(meta: dict[str, Any], tokens: list[str], types: list[int]) -> Tokenizer:
    """`llama` model (Llama 1/2 era): sentencepiece BPE with byte fallback, '▁' for spaces."""
    vocab = {t: i for i, t in enumerate(tokens)}
    if meta.get("tokenizer.ggml.merges"):
        merges = [tuple(m.split(" ")) for m in meta["tokenizer.ggml.merges"]]
    else:
        merges = merges_from_scores(vocab, dict(zip(tokens, meta.get("tokenizer.ggml.scores") or [0.0] * len(tokens))))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, fuse_unk=True, byte_fallback=True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(content=" ", left=1)])
    unk = meta.get("tokenizer.ggml.unknown_token_id")
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True)
                                for i, (t, k) in enumerate(zip(tokens, types)) if k == CONTROL or i == unk])
    backend.add_tokens([AddedToken(t, normalized=False, special=False)
                        for t, k in zip(tokens, types) if k == USER_DEFINED])
    return backend


BUILDERS = {"gpt2": _byte_level, "llama": _sentencepiece}
# Whether the tokenizer adds a bos when the file does not say (llama.cpp's defaults).
ADD_BOS = {"gpt2": False, "llama": True}


def gguf_tokenizer(meta: dict[str, Any]) -> HFTokenizer:
    """The tokenizer a GGUF file describes, with its tokenizer_config (bos/eos/pad/unk, chat template)."""
    kind = meta.get("tokenizer.ggml.model")
    if kind not in BUILDERS:
        raise UnsupportedSource(f"GGUF tokenizer model {kind!r} is not supported "
                                f"(supported: {', '.join(BUILDERS)})")
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    types: list[int] = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    backend = BUILDERS[kind](meta, tokens, types)
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False}
    for name, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                      ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id")):
        token_id = meta.get(f"tokenizer.ggml.{key}")
        if token_id is not None:
            config[name] = tokens[token_id]
    if meta.get("tokenizer.ggml.add_bos_token", ADD_BOS[kind]) and "bos_token" in config:
        bos, bos_id = config["bos_token"], meta["tokenizer.ggml.bos_token_id"]
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])
    if meta.get("tokenizer.chat_template"):
        config["chat_template"] = meta["tokenizer.chat_template"]
    return HFTokenizer(backend, config)
