"""The release's tiktoken-format tokenizer, byte-level BPE training, and the Instruct chat template.

A vocabulary is a list of byte strings whose rank is their line number in `hy.tiktoken`, then 209
special tokens numbered from the number of ranks upward (SPEC §4). Encoding NFC-normalises the
text and pre-tokenises it with the release's regex (digits one at a time) before tiktoken's
rank-based BPE (a lone surrogate, which has no UTF-8, becomes U+FFFD). Training builds the same
kind of vocabulary at any size with HF `tokenizers`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal, overload

import tiktoken
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from .errors import UserError
from .generation_config import eos_token_ids, read_generation_config

VOCAB_FILE = "hy.tiktoken"
CONFIG_FILE = "tokenizer_config.json"

# The release's pre-tokenisation: cl100k's alternatives, except one digit per piece (`\p{N}`).
PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
    r"|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+"
    r"|\s+(?!\S)"
    r"|\s+"
)

ENDOFTEXT, STARTOFTEXT, BOS, EOS, PAD = "<|endoftext|>", "<|startoftext|>", "<|bos|>", "<|eos|>", "<|pad|>"
SPECIAL_TOKENS: tuple[str, ...] = (ENDOFTEXT, STARTOFTEXT, BOS, EOS, PAD) + tuple(
    f"<|extra_{n}|>" for n in range(204)
)
EXTRA_0, EXTRA_4, EXTRA_5 = "<|extra_0|>", "<|extra_4|>", "<|extra_5|>"
# The Instruct model ends a turn with <|eos|>; the release also stops on <|extra_5|>.
DEFAULT_CHAT_STOP = (EOS, EXTRA_5)
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)

# The release's tokenizer_config.json, written verbatim so HF users of a saved folder get the same
# template. Its `context.update` branch fails under HF's sandbox; `render_chat` documents ours.
CHAT_TEMPLATE = (
    "{% set context = {'has_head': true} %}{% set loop_messages = messages %}"
    "{% for message in loop_messages %}{% set content = message['content'] %}"
    "{% if loop.index0 == 0 %}{% if content == '' %}{% set _ = context.update({'has_head': false}) %}"
    "{% elif message['role'] == 'system' %}{% set content = '<|startoftext|>' + content + '<|extra_4|>' %}"
    "{% endif %}{% endif %}{% if message['role'] == 'user' %}"
    "{% if loop.index0 == 1 and not context.has_head %}{% set content = '<|startoftext|>' + content %}{% endif %}"
    "{% if loop.index0 == 1 and context.has_head %}{% set content = content + '<|extra_0|>' %}"
    "{% else %}{% set content = '<|startoftext|>' + content + '<|extra_0|>' %}{% endif %}"
    "{% elif message['role'] == 'assistant' %}{% set content = content + '<|eos|>' %}{% endif %}"
    "{{ content }}{% endfor %}"
)
_CONFIG = {
    "model_max_length": 1048576,
    "tokenizer_class": "HYTokenizer",
    "auto_map": {"AutoTokenizer": ["tokenization_hy.HYTokenizer", None]},
    "additional_special_tokens": [STARTOFTEXT, EXTRA_0, EXTRA_4, EXTRA_5, EOS],
    "chat_template": CHAT_TEMPLATE,
}
ROLES = ("system", "user", "assistant")
Messages = Sequence[Mapping[str, str]]  # [{"role": "user", "content": "..."}, ...]


class TokenizerError(UserError):
    """A bad vocabulary file or folder, training request, text, id or chat message."""


def _nfc(text: str) -> str:
    # CPython's normalize() runs the NFC quick check first and returns already-NFC text as is,
    # so this costs ~1 ms per MB on typical corpora.
    return unicodedata.normalize("NFC", text)


def read_ranks(path: str | os.PathLike[str]) -> dict[bytes, int]:
    """Token bytes -> rank from a `hy.tiktoken` file: rank = line order (as the release's code).

    The number column must equal that rank: the release's file satisfies it, and a missing,
    duplicated or reordered line would otherwise shift every later token silently.
    """
    path = Path(path)
    try:
        lines = path.read_bytes().splitlines()
    except OSError as e:
        raise TokenizerError(f"cannot read vocabulary {path}: {e.strerror}") from None
    ranks: dict[bytes, int] = {}
    first_line: dict[bytes, int] = {}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise TokenizerError(f"{path} line {lineno}: expected 'base64 number', got {line[:60]!r}")
        try:
            token = base64.b64decode(fields[0], validate=True)
        except binascii.Error:
            raise TokenizerError(f"{path} line {lineno}: {fields[0][:60]!r} is not base64") from None
        if token in ranks:
            raise TokenizerError(
                f"{path} line {lineno}: duplicate token {token!r} (first on line {first_line[token]})"
            )
        if fields[1] != str(len(ranks)).encode():
            raise TokenizerError(
                f"{path} line {lineno}: rank column is {fields[1][:20].decode(errors='replace')!r} but the line "
                f"is rank {len(ranks)} (a line is missing or out of order)"
            )
        ranks[token] = len(ranks)
        first_line[token] = lineno
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise TokenizerError(f"{path} lacks {len(missing)} single-byte tokens (e.g. {bytes([missing[0]])!r})")
    return ranks


class HunyuanTokenizer:
    """A tiktoken-format vocabulary (the release's `hy.tiktoken` or a trained one) + the 209 specials."""

    def __init__(self, ranks: Mapping[bytes, int], chat_stop_ids: Sequence[int] | None = None):
        """`ranks` must be 0..n-1; specials take ids n..n+208; stop ids default to <|eos|>, <|extra_5|>."""
        if sorted(ranks.values()) != list(range(len(ranks))):
            raise TokenizerError("vocabulary ranks must be exactly 0..n-1, each once")
        self.n_ranks = len(ranks)
        self.special_ids = {tok: self.n_ranks + i for i, tok in enumerate(SPECIAL_TOKENS)}
        self._enc = tiktoken.Encoding(
            "hunyuan",
            pat_str=PATTERN,
            mergeable_ranks=dict(ranks),
            special_tokens=self.special_ids,
            explicit_n_vocab=self.n_ranks + len(SPECIAL_TOKENS),
        )
        stops = tuple(chat_stop_ids) if chat_stop_ids is not None else tuple(map(self.token_id, DEFAULT_CHAT_STOP))
        bad = [i for i in stops if not 0 <= i < self.vocab_size]
        if bad:
            raise TokenizerError(f"stop id {bad[0]} is outside the vocabulary (0..{self.vocab_size - 1})")
        self.chat_stop_ids = stops

    # ---- loading and saving -------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> HunyuanTokenizer:
        """Load a `hy.tiktoken` file (default chat stop ids)."""
        return cls(read_ranks(path))

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str]) -> HunyuanTokenizer:
        """Load a model folder: `hy.tiktoken`, and the stop ids of `generation_config.json` if present."""
        folder = Path(folder)
        if not (folder / VOCAB_FILE).is_file():
            raise TokenizerError(f"{folder} has no {VOCAB_FILE} (a tokenizer folder holds {VOCAB_FILE})")
        stops = eos_token_ids(read_generation_config(folder) or {}, folder)
        return cls(read_ranks(folder / VOCAB_FILE), stops or None)  # none: the release's chat stops

    def save(self, folder: str | os.PathLike[str]) -> None:
        """Write `hy.tiktoken` and `tokenizer_config.json` as in the release's model folders."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        lines = (f"{base64.b64encode(self.token_bytes(rank)).decode()} {rank}\n" for rank in range(self.n_ranks))
        (folder / VOCAB_FILE).write_text("".join(lines), encoding="utf-8")
        (folder / CONFIG_FILE).write_text(json.dumps(_CONFIG, indent=2, ensure_ascii=False) + "\n")

    # ---- ids -----------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Ranks + specials (128166 for the release); embedding tables may be larger."""
        return self._enc.n_vocab

    def token_id(self, name: str) -> int:
        """The id of a special token by its text, e.g. token_id('<|eos|>')."""
        if name not in self.special_ids:
            raise TokenizerError(f"{name!r} is not a special token (use <|endoftext|>, <|eos|>, <|extra_N|>, ...)")
        return self.special_ids[name]

    @property
    def bos_id(self) -> int:
        """<|startoftext|>, the beginning-of-document token the release adds."""
        return self.special_ids[STARTOFTEXT]

    bod_id = bos_id

    @property
    def eos_id(self) -> int:
        """<|endoftext|>, the end-of-document token the release adds."""
        return self.special_ids[ENDOFTEXT]

    eod_id = eos_id

    @property
    def pad_id(self) -> int:
        """<|pad|>."""
        return self.special_ids[PAD]

    @property
    def chat_eos_id(self) -> int:
        """<|eos|> (127960 in the release): ends an assistant turn in the Instruct template."""
        return self.special_ids[EOS]

    @property
    def extra_0_id(self) -> int:
        """<|extra_0|>: ends a user turn in the Instruct template."""
        return self.special_ids[EXTRA_0]

    @property
    def extra_4_id(self) -> int:
        """<|extra_4|>: ends the system prompt in the Instruct template."""
        return self.special_ids[EXTRA_4]

    @property
    def extra_5_id(self) -> int:
        """<|extra_5|>: a stop token of the release's generation_config.json."""
        return self.special_ids[EXTRA_5]

    # ---- encoding and decoding -----------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """NFC text -> ids, special-token text recognised; wrapped in <|startoftext|>...<|endoftext|>."""
        if not isinstance(text, str):
            raise TokenizerError(f"text to encode must be a str, got {type(text).__name__}")
        ids = self._enc.encode(_nfc(text), allowed_special="all")
        return [self.bos_id, *ids, self.eos_id] if add_special_tokens else ids

    def encode_document(self, text: str) -> list[int]:
        """Raw corpus text -> ids: NFC, nothing added, special-token text encoded as ordinary text."""
        if not isinstance(text, str):
            raise TokenizerError(f"text to encode must be a str, got {type(text).__name__}")
        return self._enc.encode_ordinary(_nfc(text))

    def encode_batch(self, texts: Sequence[str], num_threads: int | None = None) -> list[list[int]]:
        """`encode_document` of each text, in parallel threads (tiktoken releases the GIL)."""
        bad = next((t for t in texts if not isinstance(t, str)), None)
        if bad is not None:
            raise TokenizerError(f"texts to encode must be str, got {type(bad).__name__}")
        threads = num_threads or os.cpu_count() or 1
        return self._enc.encode_ordinary_batch([_nfc(t) for t in texts], num_threads=threads)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (a special token's text in UTF-8), e.g. for streaming decode."""
        if not 0 <= token_id < self.vocab_size:
            raise TokenizerError(f"token id {token_id} is outside the vocabulary (0..{self.vocab_size - 1})")
        return self._enc.decode_single_token_bytes(token_id)

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False, errors: str = "replace") -> str:
        """Ids -> text; skip_special_tokens drops every id >= n_ranks; bad UTF-8 per `errors`."""
        ids = [int(i) for i in ids]
        if ids and not 0 <= min(ids) <= max(ids) < self.vocab_size:
            bad = next(i for i in ids if not 0 <= i < self.vocab_size)
            raise TokenizerError(f"token id {bad} is outside the vocabulary (0..{self.vocab_size - 1})")
        if skip_special_tokens:
            ids = [i for i in ids if i < self.n_ranks]
        return self._enc.decode(ids, errors=errors)

    # ---- chat ------------------------------------------------------------------------------------

    @overload
    def apply_chat_template(self, messages: Messages, tokenize: Literal[True] = ...) -> list[int]: ...
    @overload
    def apply_chat_template(self, messages: Messages, tokenize: Literal[False]) -> str: ...

    def apply_chat_template(self, messages: Messages, tokenize: bool = True) -> list[int] | str:
        """The Instruct prompt of a conversation (no generation prompt): ids, or the text if not tokenize.

        Tokenising recognises special-token text (as the release does) and adds no bos/eos.
        """
        text = render_chat(messages)
        return self.encode(text, add_special_tokens=False) if tokenize else text

    # ---- training --------------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        texts_or_files: Iterable[str | os.PathLike[str]],
        vocab_size: int,
        *,
        min_frequency: int = 2,
        show_progress: bool = False,
    ) -> HunyuanTokenizer:
        """Train a byte-level BPE vocabulary; str items are texts, path objects are UTF-8 files.

        `vocab_size` counts the ranks and the 209 specials; the result is smaller when the text
        runs out of pairs seen `min_frequency` times.
        """
        if vocab_size < MIN_VOCAB_SIZE:
            raise TokenizerError(
                f"vocab_size {vocab_size} is too small: it must be >= {MIN_VOCAB_SIZE} "
                f"(256 byte tokens + {len(SPECIAL_TOKENS)} special tokens)"
            )
        bpe = train_bpe(texts_or_files, vocab_size - len(SPECIAL_TOKENS), min_frequency, show_progress)
        return cls(ranks_from_bpe(bpe))


def render_chat(messages: Messages) -> str:
    """The release's Instruct template in Python, byte for byte (SPEC §4).

    - a first system message: <|startoftext|>{sys}<|extra_4|>
    - a user message: <|startoftext|>{user}<|extra_0|>, except the message at index 1, which is
      {user}<|extra_0|> (the template's "user right after the system prompt" rule)
    - an assistant message: {reply}<|eos|>
    An empty first message switches that header off: it renders as nothing if it is a system
    message, and every user message is then wrapped in full. (The Jinja template's `dict.update`
    is refused by HF's sandbox, and outside it would give index 1 two <|startoftext|>; we give one,
    so an empty system prompt renders exactly like no system prompt.) A system message anywhere
    but first is refused: the template would paste it in unmarked.
    """
    _check_messages(messages)
    has_head = messages[0]["content"] != ""
    parts = []
    for index, message in enumerate(messages):
        role, content = message["role"], message["content"]
        if role == "system":
            parts.append(f"{STARTOFTEXT}{content}{EXTRA_4}" if content else "")
        elif role == "user":
            head = "" if index == 1 and has_head else STARTOFTEXT
            parts.append(f"{head}{content}{EXTRA_0}")
        else:
            parts.append(f"{content}{EOS}")
    return "".join(parts)


def _check_messages(messages: Messages) -> None:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise TokenizerError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise TokenizerError(f"message {index} must be a dict with 'role' and 'content', got {message!r:.80}")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise TokenizerError(f"message {index} has role {role!r}; allowed: {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise TokenizerError(f"message {index} content must be a str, got {type(content).__name__}")
        if role == "system" and index > 0:
            raise TokenizerError(f"message {index} is a system message; only the first message may be one")


# ---- byte-level BPE training with HF tokenizers ----------------------------------------------------


def _byte_to_char() -> dict[int, str]:
    """The byte-level alphabet of HF's ByteLevel (GPT-2's): printable bytes map to themselves,
    the others to chr(256 + n) in byte order, so every byte is one visible character."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = (b for b in range(256) if b not in keep)
    table = {b: chr(b) for b in keep}
    table.update({b: chr(256 + n) for n, b in enumerate(shifted)})
    return table


def _training_texts(items: Iterable[str | os.PathLike[str]], seen: list[int]) -> Iterator[str]:
    """Texts as given; files read whole as UTF-8 (one document each). Counts characters in `seen`."""
    for item in items:
        if isinstance(item, str):
            text = item
        elif isinstance(item, os.PathLike):
            try:
                text = Path(item).read_text(encoding="utf-8")
            except OSError as e:
                raise TokenizerError(f"cannot read training file {item}: {e.strerror}") from None
            except UnicodeDecodeError as e:
                raise TokenizerError(f"training file {item} is not UTF-8 (byte {e.start})") from None
        else:
            raise TokenizerError(f"training items must be str texts or paths, got {type(item).__name__}")
        seen[0] += len(text)
        yield text


def train_bpe(
    texts_or_files: Iterable[str | os.PathLike[str]],
    n_ranks: int,
    min_frequency: int = 2,
    show_progress: bool = False,
) -> Tokenizer:
    """An HF byte-level BPE tokenizer of up to `n_ranks` tokens that splits text exactly as ours does.

    NFC, then the release's regex (isolated pieces), then ByteLevel without its own regex.
    `ignore_merges` makes a piece that is already a token encode as that token, as tiktoken does.
    """
    bpe = Tokenizer(models.BPE(ignore_merges=True))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=n_ranks,
        min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    seen = [0]
    bpe.train_from_iterator(_training_texts(texts_or_files, seen), trainer)
    if seen[0] == 0:
        raise TokenizerError("no training text: every text and file given was empty")
    return bpe


def ranks_from_bpe(bpe: Tokenizer) -> dict[bytes, int]:
    """Tiktoken ranks of a trained byte-level BPE: the 256 bytes in byte order, then each merged
    token in creation order, so merging the lowest-ranked pair replays the training merges."""
    char_to_byte = {c: b for b, c in _byte_to_char().items()}
    ranks = {bytes([b]): b for b in range(256)}
    for token, _ in sorted(bpe.get_vocab().items(), key=lambda kv: kv[1]):
        data = bytes(char_to_byte[c] for c in token)
        if data not in ranks:
            ranks[data] = len(ranks)
    return ranks
