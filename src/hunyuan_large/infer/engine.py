"""The generation engine: batched prefill and decode over the GQA + CLA KV cache, continuous batching.

Shapes: B rows of a forward, T tokens, D hidden, V vocabulary.

`step()` is one scheduling round: drop aborted requests, admit waiting ones into free cache slots
and prefill them together (prompts right-padded to the longest; each row's logits are taken at its
own last prompt token, and the padding's K/V lie beyond the row's length, where later steps mask
and then overwrite them), then decode one token for every running request. A request finishes on
a stop id, a stop string, `max_new_tokens` or a full context and leaves at once; the running ones
stay packed in slots 0..n-1 so every forward attends to views of the cache, never copies.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..accounting import kv_cache_bytes_per_token
from ..pretrained import load_pretrained
from ..errors import UserError
from ..model import HunyuanForCausalLM
from ..tokenizer import Tokenizer, has_tokenizer, load_tokenizer
from .decode_layout import prepare_for_decode
from .kv_cache import KVCache
from .sampling import SamplingParams, load_generation_defaults, sample, top_logprobs
from .text_stream import TextStream


@dataclass
class EngineConfig:
    """Capacity of an engine: sequence slots, context length and prefill batching."""

    max_batch: int = 8  # sequences decoded together (KV cache slots)
    max_len: int | None = None  # tokens per sequence; None: the model's context, capped by cache_memory
    cache_memory: int | None = None  # bytes for the KV cache; None: half the free GPU / a quarter of free RAM
    max_prefill_tokens: int = 4096  # padded tokens per batched prefill (a longer prompt runs alone)


@dataclass
class TokenLogprob:
    """A generated token's log-probability under the model and its most likely alternatives."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]]  # (token id, log-probability), most likely first


@dataclass
class StepOutput:
    """What one request got from one engine step."""

    request_id: str
    token_ids: list[int]  # new tokens (stop ids included)
    text: str  # new text (stop ids and stop strings excluded)
    logprobs: list[TokenLogprob] | None
    finished: bool
    finish_reason: str | None  # "stop", "length" or "abort" once finished
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Result:
    """A finished request (what `Engine.generate` returns)."""

    request_id: str
    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None


class _Sequence:
    """Engine-side state of one request."""

    def __init__(self, request_id: str, prompt: list[int], params: SamplingParams, limit: int,
                 tokenizer: Tokenizer | None, device: torch.device):
        self.request_id = request_id
        self.prompt = prompt
        self.params = params
        self.limit = limit  # max new tokens, context included
        self.output: list[int] = []
        self.text = TextStream(tokenizer, params.stop) if tokenizer is not None else None
        self.stop_ids = frozenset(params.stop_token_ids)
        self.generator = None
        if not params.greedy:
            self.generator = torch.Generator(device=device)
            if params.seed is None:
                self.generator.seed()  # a non-deterministic seed
            else:
                self.generator.manual_seed(params.seed)
        # Prompt + output ids for the repetition penalty, preallocated once.
        self.seen = None
        if params.repetition_penalty != 1.0:
            self.seen = torch.empty(len(prompt) + limit, dtype=torch.long, device=device)
            self.seen[: len(prompt)] = torch.tensor(prompt)
        self.aborted = False

    def seen_ids(self) -> torch.Tensor | None:
        """Prompt + output ids so far (only kept for a repetition penalty)."""
        return None if self.seen is None else self.seen[: len(self.prompt) + len(self.output)]

    def append(self, token: int) -> str | None:
        """Record a new token; returns the finish reason if this token ends the request."""
        if self.seen is not None:
            self.seen[len(self.prompt) + len(self.output)] = token
        self.output.append(token)
        if token in self.stop_ids:
            return "stop"
        if self.text is not None:
            self.text.add(token)
            if self.text.stopped:
                return "stop"
        return "length" if len(self.output) >= self.limit else None


class Engine:
    """Generates for many requests at once from one model and one preallocated KV cache.

    The engine owns the model: it puts it in eval mode and in the decode layout
    (decode_layout.prepare_for_decode: fused projections, lean MoE and attention kernels).
    """

    def __init__(self, model: HunyuanForCausalLM, tokenizer: Tokenizer | None = None,
                 defaults: SamplingParams | None = None, config: EngineConfig | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.defaults = defaults or SamplingParams(temperature=0.0)
        self.config = config = config or EngineConfig()
        cfg = model.config
        if tokenizer is not None and tokenizer.vocab_size > cfg.vocab_size:
            raise UserError(f"the tokenizer has {tokenizer.vocab_size} ids but the model only "
                            f"{cfg.vocab_size} embedding rows")
        weight = model.model.embed_tokens.weight
        self.device, self.dtype = weight.device, weight.dtype
        prepare_for_decode(model)
        max_len = config.max_len or default_max_len(model, config.max_batch, config.cache_memory)
        self.cache = KVCache(cfg, config.max_batch, max_len, self.dtype, self.device)
        self.waiting: deque[_Sequence] = deque()
        self.running: list[_Sequence] = []  # running[i] occupies cache slot i
        self._ids = itertools.count()

    @classmethod
    def from_pretrained(cls, folder: str | Path, config: EngineConfig | None = None,
                        device: str | torch.device = "auto", dtype: torch.dtype | str | None = None) -> "Engine":
        """An engine over a model folder: weights, its tokenizer if present, generation defaults."""
        folder = Path(folder)
        model = load_pretrained(folder, device=device, dtype=dtype)
        tokenizer = load_tokenizer(folder) if has_tokenizer(folder) else None
        return cls(model, tokenizer, load_generation_defaults(folder), config)

    @property
    def max_len(self) -> int:
        """Tokens one sequence may hold: prompt + generated."""
        return self.cache.max_len

    # ----- prompts -------------------------------------------------------------------------------
    def require_tokenizer(self) -> Tokenizer:
        """The tokenizer, or a UserError saying the model folder has none."""
        if self.tokenizer is None:
            raise UserError("this model folder has no tokenizer (hy.tiktoken or tokenizer.json), which text prompts and chat need")
        return self.tokenizer

    def encode_prompt(self, text: str) -> list[int]:
        """A completion prompt: the text as the tokenizer starts a document (no end, since we continue it)."""
        return self.require_tokenizer().encode_prompt(text)

    def encode_chat(self, messages: Sequence[dict]) -> list[int]:
        """A conversation in the model's chat template, with the generation prompt; the reply follows."""
        return self.require_tokenizer().apply_chat_template(messages, add_generation_prompt=True)

    def chat_params(self, params: SamplingParams | None = None) -> SamplingParams:
        """`params` (default: the engine's defaults) that also stop on the tokenizer's chat stop ids."""
        params = params or self.defaults
        stops = tuple(dict.fromkeys((*params.stop_token_ids, *self.require_tokenizer().chat_stop_ids)))
        return params.replace(stop_token_ids=stops)

    # ----- requests -----------------------------------------------------------------------------
    def add_request(self, prompt: str | Sequence[int], params: SamplingParams | None = None,
                    request_id: str | None = None) -> str:
        """Queue a prompt (text or ids); returns its request id. It joins at the next step."""
        ids = self.encode_prompt(prompt) if isinstance(prompt, str) else [int(i) for i in prompt]
        self.check_prompt(ids)
        params = params or self.defaults
        room = self.max_len - len(ids)
        limit = room if params.max_new_tokens is None else min(params.max_new_tokens, room)
        request_id = request_id or f"req-{next(self._ids)}"
        self.waiting.append(_Sequence(request_id, ids, params, limit, self.tokenizer, self.device))
        return request_id

    def check_prompt(self, ids: Sequence[int]) -> None:
        """Raise UserError unless `ids` is a non-empty prompt of valid ids that leaves room to generate."""
        if not ids:
            raise UserError("the prompt is empty")
        vocab = self.model.config.vocab_size
        bad = next((i for i in ids if not 0 <= i < vocab), None)
        if bad is not None:
            raise UserError(f"prompt token id {bad} is outside the vocabulary (0..{vocab - 1})")
        if len(ids) >= self.max_len:
            raise UserError(f"the prompt has {len(ids)} tokens; the context holds {self.max_len} "
                            f"(prompt + at least one new token)")

    def abort(self, request_id: str) -> None:
        """Stop a request; its slot is freed at the next step."""
        for seq in itertools.chain(self.waiting, self.running):
            if seq.request_id == request_id:
                seq.aborted = True

    def has_unfinished(self) -> bool:
        """Whether any request is waiting or running."""
        return bool(self.waiting or self.running)

    # ----- one scheduling round ----------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> list[StepOutput]:
        """Admit and prefill waiting requests, then decode one token for all running ones."""
        outputs = self._drop_aborted()
        if self.waiting and len(self.running) < self.cache.max_batch:
            outputs += self._prefill(self._admit())
        if self.running:
            outputs += self._decode()
        return outputs

    def _drop_aborted(self) -> list[StepOutput]:
        outputs = [self._output(s, [], "abort") for s in self.waiting if s.aborted]
        self.waiting = deque(s for s in self.waiting if not s.aborted)
        gone = [i for i, s in enumerate(self.running) if s.aborted]
        outputs += [self._output(self.running[i], [], "abort") for i in gone]
        self._release(gone)
        return outputs

    def _admit(self) -> list[_Sequence]:
        """Waiting requests for one batched prefill: free slots, padded tokens within budget."""
        batch: list[_Sequence] = []
        longest = 0
        while self.waiting and len(self.running) + len(batch) < self.cache.max_batch:
            n = max(longest, len(self.waiting[0].prompt))
            if batch and n * (len(batch) + 1) > self.config.max_prefill_tokens:
                break
            batch.append(self.waiting.popleft())
            longest = n
        return batch

    def _prefill(self, batch: list[_Sequence]) -> list[StepOutput]:
        start, lengths = len(self.running), [len(s.prompt) for s in batch]
        ids = torch.zeros(len(batch), max(lengths), dtype=torch.long)  # (B, T) right-padded with id 0
        for row, seq in enumerate(batch):
            ids[row, : len(seq.prompt)] = torch.tensor(seq.prompt)
        view = self.cache.batch(start, [0] * len(batch), ids.shape[1])
        hidden = self.model.model(ids.to(self.device), cache=view).last_hidden_state  # (B, T, D)
        last = hidden[torch.arange(len(batch)), torch.tensor(lengths) - 1]  # (B, D): each prompt's end
        logits = self.model.lm_head(last).float()  # (B, V)
        self.cache.advance(start, lengths)
        self.running += batch
        return self._emit(start, logits)

    def _decode(self) -> list[StepOutput]:
        n = len(self.running)
        ids = torch.tensor([[s.output[-1]] for s in self.running], device=self.device)  # (B, 1)
        view = self.cache.batch(0, self.cache.lengths[:n], 1)
        out = self.model(ids, attention_mask=view.attention_mask(), position_ids=view.position_ids(),
                         cache=view, past_length=view.past_length, logits_to_keep=1)
        self.cache.advance(0, [1] * n)
        return self._emit(0, out.logits[:, -1])

    def _emit(self, start: int, logits: torch.Tensor) -> list[StepOutput]:
        """Pick the next token of running rows start.. from their logits (B, V); finish and release."""
        rows = self.running[start:]
        tokens = logits.argmax(-1).tolist()
        for i, seq in enumerate(rows):
            if not seq.params.greedy or seq.seen is not None:
                tokens[i] = sample(logits[i], seq.params, seq.seen_ids(), seq.generator)
        outputs, done = [], []
        for i, (seq, token) in enumerate(zip(rows, tokens)):
            reason = seq.append(token)
            if reason is None and len(seq.prompt) + len(seq.output) >= self.max_len:
                reason = "length"
            logprobs = None
            if seq.params.logprobs is not None:
                lp, top = top_logprobs(logits[i], token, seq.params.logprobs)
                logprobs = [TokenLogprob(token, lp, top)]
            outputs.append(self._output(seq, [token], reason, logprobs))
            if reason is not None:
                done.append(start + i)
        self._release(done)
        return outputs

    def _output(self, seq: _Sequence, tokens: list[int], reason: str | None,
                logprobs: list[TokenLogprob] | None = None) -> StepOutput:
        text = seq.text.take(final=reason is not None) if seq.text is not None else ""
        return StepOutput(seq.request_id, tokens, text, logprobs, reason is not None, reason,
                          len(seq.prompt), len(seq.output))

    def _release(self, rows: list[int]) -> None:
        """Free finished rows, moving the last running row into each hole (highest rows first)."""
        for row in sorted(rows, reverse=True):
            last = len(self.running) - 1
            if row != last:
                self.cache.move(last, row)
                self.running[row] = self.running[last]
            self.cache.clear(last)
            self.running.pop()

    # ----- convenience drivers -------------------------------------------------------------------
    def generate(self, prompts: Sequence[str | Sequence[int]], params: SamplingParams | None = None) -> list[Result]:
        """Run prompts (texts or id lists) to completion; results in prompt order."""
        results = {}
        for p in prompts:
            ids = self.encode_prompt(p) if isinstance(p, str) else list(p)
            rid = self.add_request(ids, params)
            results[rid] = Result(rid, ids)
        while self.has_unfinished():
            for out in self.step():
                r = results[out.request_id]
                r.token_ids += out.token_ids
                r.text += out.text
                if out.logprobs is not None:
                    r.logprobs = (r.logprobs or []) + out.logprobs
                r.finish_reason = out.finish_reason
        return list(results.values())

    def stream(self, prompt: str | Sequence[int], params: SamplingParams | None = None) -> Iterator[StepOutput]:
        """Generate for one prompt, yielding its outputs step by step (the engine must be idle)."""
        if self.has_unfinished():
            raise RuntimeError("stream() needs an idle engine; use add_request/step to share it")
        rid = self.add_request(prompt, params)
        try:
            while self.has_unfinished():
                for out in self.step():
                    if out.request_id == rid:
                        yield out
        finally:  # the consumer stopped early: free the slot
            self.abort(rid)
            self._drop_aborted()


def default_cache_budget(device: torch.device) -> int:
    """Bytes the KV cache may take: half the free GPU memory, or a quarter of the available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    try:
        with open("/proc/meminfo") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        return kib * 1024 // 4
    except (OSError, StopIteration):
        return 4 << 30


def default_max_len(model: HunyuanForCausalLM, max_batch: int, budget: int | None) -> int:
    """The model's context (max_position_embeddings), capped so max_batch sequences fit the budget."""
    cfg = model.config
    weight = model.model.embed_tokens.weight
    budget = budget if budget is not None else default_cache_budget(weight.device)
    per_seq_token = kv_cache_bytes_per_token(cfg, weight.element_size())["as_built"] * max_batch
    max_len = min(cfg.max_position_embeddings, budget // per_seq_token)
    if max_len < 2:
        raise UserError(f"a KV cache budget of {budget} bytes does not fit {max_batch} sequences "
                        f"({per_seq_token} bytes per token across them)")
    return max_len
