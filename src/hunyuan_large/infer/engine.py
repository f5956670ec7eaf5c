"""The generation engine: batched prefill and decode over the paged GQA + CLA KV cache, continuous batching.

Shapes: B rows of a forward, T tokens, D hidden, V vocabulary.

`step()` is one scheduling round: drop aborted requests, admit waiting ones while cache blocks and
batch seats last and prefill them together, then decode one token for every running sequence.
A step prefills at most `prefill_chunk` prompt tokens: a longer prompt is admitted alone, with
blocks for all of it, and prefilled one chunk per step (its full blocks enter the prefix cache as
each chunk completes), so the running sequences keep decoding while it arrives; it joins their
decode batch once its last chunk gives it a first token. A prefill chunk attends to the cached
chunks before it without a (T, S) mask (model/attention.causal_after_past), so its extra memory
grows with the chunk, not the prompt.
Admission first looks the prompt up in the prefix cache (blocks.py): cached full blocks are shared,
not computed, and the rows of one prefill share the cached length (prompts right-padded to the
longest; each row's logits are taken at its own last token, the padding's K/V go to a scratch
block). A request with `n` samples is prefilled once and then forked: the samples share its full
blocks and copy its last partial one. Before a decode step every row that starts a new block gets
one; when none is left, the most recently admitted sequence is preempted (a partly prefilled one
first): its blocks are released (the full ones stay in the prefix cache) and it waits at the front
of the queue to be recomputed, prompt and output so far, as a prefill that starts from those
blocks. Nothing fails for lack of memory. A sequence finishes on a stop id, a stop string,
`max_new_tokens` or a full context and leaves at once.
"""

from __future__ import annotations

import itertools
import time
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
from .blocks import ROOT, BlockManager
from .decode_layout import prepare_for_decode
from .kv_cache import KVCache
from .metrics import EngineMetrics
from .sampling import SamplingParams, load_generation_defaults, sample, top_logprobs
from .text_stream import TextStream


@dataclass
class EngineConfig:
    """Capacity of an engine: batch seats, KV-cache blocks, context length and prefill batching."""

    max_batch: int = 8  # sequences decoded together
    max_len: int | None = None  # tokens per sequence; None: the model's context, capped by the cache
    cache_memory: int | None = None  # bytes for the KV cache; None: half the free GPU / a quarter of free RAM
    block_size: int = 16  # tokens per KV-cache block
    num_blocks: int | None = None  # None: what cache_memory holds, at most max_batch full sequences
    prefix_caching: bool = True  # share cached prompt blocks between requests
    max_prefill_tokens: int = 4096  # padded tokens per batched prefill (a longer prompt runs alone)
    prefill_chunk: int | None = 512  # prompt tokens prefilled per step (0 or None: whole prompts at once)


@dataclass
class TokenLogprob:
    """A generated token's log-probability under the model and its most likely alternatives."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]]  # (token id, log-probability), most likely first


@dataclass
class StepOutput:
    """What one sample of a request got from one engine step."""

    request_id: str
    token_ids: list[int]  # new tokens (stop ids included)
    text: str  # new text (stop ids and stop strings excluded)
    logprobs: list[TokenLogprob] | None
    finished: bool
    finish_reason: str | None  # "stop", "length" or "abort" once finished
    prompt_tokens: int
    completion_tokens: int
    index: int = 0  # which of the request's n samples


@dataclass
class Result:
    """A finished sample of a request (what `Engine.generate` returns)."""

    request_id: str
    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    index: int = 0  # which of the request's n samples


class _Sequence:
    """Engine-side state of one sample of a request, and its place in the KV cache."""

    def __init__(self, request_id: str, prompt: list[int], params: SamplingParams, limit: int,
                 tokenizer: Tokenizer | None, device: torch.device, index: int = 0,
                 arrival: float | None = None):
        self.request_id, self.index = request_id, index
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
            else:  # sample i of a seeded request draws from seed + i
                self.generator.manual_seed((params.seed + index) % 2**63)
        # Prompt + output ids for the repetition penalty, preallocated once.
        self.seen = None
        if params.repetition_penalty != 1.0:
            self.seen = torch.empty(len(prompt) + limit, dtype=torch.long, device=device)
            self.seen[: len(prompt)] = torch.tensor(prompt)
        self.aborted = False
        self.forks = params.n - 1 if index == 0 else 0  # samples still to fork off after the prefill
        self.arrival = time.perf_counter() if arrival is None else arrival
        self.last_token_time = 0.0
        # KV cache: blocks, tokens cached (all but the last sampled one while running), blocks
        # registered in the prefix cache and the id the next one's key names.
        self.blocks: list[int] = []
        self.fork_blocks: list[int] = []  # one per fork when the prompt ends in a partial block
        self.cached = 0
        self.registered = 0
        self.parent = ROOT

    def tokens(self) -> list[int]:
        """Prompt + output ids."""
        return self.prompt + self.output

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
    """Generates for many requests at once from one model and one paged KV cache.

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
        if config.max_batch < 1 or config.block_size < 1:
            raise UserError(f"max_batch and block_size must be >= 1, got {config.max_batch} and {config.block_size}")
        if config.prefill_chunk is not None and config.prefill_chunk < 0:
            raise UserError(f"prefill_chunk must be >= 0 (0: whole prompts), got {config.prefill_chunk}")
        weight = model.model.embed_tokens.weight
        self.device, self.dtype = weight.device, weight.dtype
        prepare_for_decode(model)
        context = config.max_len or cfg.max_position_embeddings
        num_blocks = config.num_blocks or default_num_blocks(model, config.max_batch, context, config.block_size,
                                                             config.cache_memory)
        self.max_len = min(context, num_blocks * config.block_size)  # one sequence always fits alone
        if self.max_len < 2:
            raise UserError(f"a KV cache of {num_blocks} blocks of {config.block_size} tokens holds no sequence "
                            f"(prompt + one new token)")
        self.cache = KVCache(cfg, num_blocks, config.block_size, self.dtype, self.device)
        self.blocks = BlockManager(num_blocks, config.block_size, config.prefix_caching)
        self.metrics = EngineMetrics()
        self.waiting: deque[_Sequence] = deque()
        self.running: list[_Sequence] = []  # in admission order: the last is preempted first
        self.prefilling: _Sequence | None = None  # the last of `running` while its prompt is part-prefilled
        self._ids = itertools.count()

    @classmethod
    def from_pretrained(cls, folder: str | Path, config: EngineConfig | None = None,
                        device: str | torch.device = "auto", dtype: torch.dtype | str | None = None) -> "Engine":
        """An engine over a model folder: weights, its tokenizer if present, generation defaults."""
        folder = Path(folder)
        model = load_pretrained(folder, device=device, dtype=dtype)
        tokenizer = load_tokenizer(folder) if has_tokenizer(folder) else None
        return cls(model, tokenizer, load_generation_defaults(folder), config)

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
        """Queue a prompt (text or ids) for `params.n` samples; returns its request id. It joins at the next step."""
        ids = self.encode_prompt(prompt) if isinstance(prompt, str) else [int(i) for i in prompt]
        self.check_prompt(ids)
        params = params or self.defaults
        self.check_samples(len(ids), params.n)
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

    def check_samples(self, prompt_tokens: int, n: int) -> None:
        """Raise UserError unless n samples of a prompt can run together (batch seats and blocks)."""
        if n > self.config.max_batch:
            raise UserError(f"n={n} samples exceed the engine's max_batch {self.config.max_batch}")
        bs = self.cache.block_size
        if -(-prompt_tokens // bs) + (n - 1) * (prompt_tokens % bs > 0) > self.cache.num_blocks:
            raise UserError(f"{n} samples of a {prompt_tokens}-token prompt do not fit the KV cache's "
                            f"{self.cache.num_blocks} blocks")

    def abort(self, request_id: str) -> None:
        """Stop a request (all its samples); their blocks are freed at the next step."""
        for seq in itertools.chain(self.waiting, self.running):
            if seq.request_id == request_id:
                seq.aborted = True

    def has_unfinished(self) -> bool:
        """Whether any request is waiting or running."""
        return bool(self.waiting or self.running)

    # ----- one scheduling round ----------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> list[StepOutput]:
        """Prefill the next chunk of a long prompt, or admit and prefill waiting requests; then
        decode one token for all running ones."""
        outputs = self._drop_aborted()
        if self.prefilling is not None:
            outputs += self._prefill([self.prefilling], self.prefilling.cached)
        elif self.waiting and len(self.running) < self.config.max_batch:
            batch, past = self._admit()
            if batch:
                outputs += self._prefill(batch, past)
        if any(s is not self.prefilling for s in self.running):
            outputs += self._decode()
        return outputs

    def _drop_aborted(self) -> list[StepOutput]:
        waiting = [s for s in self.waiting if s.aborted]
        running = [s for s in self.running if s.aborted]
        outputs = [self._output(s, [], "abort") for s in waiting + running] + [  # + samples not forked off yet
            StepOutput(s.request_id, [], "", None, True, "abort", len(s.prompt), 0, i)
            for s in waiting + running for i in range(1, 1 + s.forks)]
        self.waiting = deque(s for s in self.waiting if not s.aborted)
        self._finish(running)
        return outputs

    def _admit(self) -> tuple[list[_Sequence], int]:
        """Waiting sequences for one batched prefill, their blocks taken, and their common cached length.

        In queue order while batch seats, free blocks and the padded-token budget last; the rows
        share the number of tokens found in the prefix cache (a prefill has one causal past). A
        first sequence over the budget comes alone (and is prefilled in chunks).
        """
        batch: list[_Sequence] = []
        past = longest = 0
        seats = self.config.max_batch - len(self.running)
        bs = self.cache.block_size
        budget = min(self.config.max_prefill_tokens, self.config.prefill_chunk or self.config.max_prefill_tokens)
        while self.waiting:
            seq = self.waiting[0]
            tokens = seq.tokens()
            hits = self.blocks.lookup(tokens[:-1])  # the last token is always computed: its logits pick the next
            hit = len(hits) * bs
            width = max(longest, len(tokens) - hit)
            if batch and (hit != past or width * (len(batch) + 1) > budget):
                break
            partial = len(tokens) % bs > 0
            new_blocks = -(-len(tokens) // bs) - len(hits)
            need = new_blocks + seq.forks * partial
            free = self.blocks.available() - sum(self.blocks.refs[b] == 0 for b in hits)
            # Keep a block for each sequence already in, which its next token may need: admitting
            # into the last blocks would only have the next decode step preempt the newcomer.
            if 1 + seq.forks > seats or need > free - len(self.running) - len(batch):
                break
            self.waiting.popleft()
            self.blocks.acquire(hits)
            seq.blocks = hits + [self.blocks.allocate() for _ in range(new_blocks)]
            seq.fork_blocks = [self.blocks.allocate() for _ in range(seq.forks * partial)]
            seq.cached, seq.registered = hit, len(hits)
            seq.parent = self.blocks.uid[hits[-1]] if hits else ROOT
            self.blocks.queried_tokens += len(tokens)
            self.blocks.hit_tokens += hit
            batch.append(seq)
            past, longest, seats = hit, width, seats - 1 - seq.forks
        return batch, past

    def _prefill(self, batch: list[_Sequence], past: int) -> list[StepOutput]:
        """Compute the rows' tokens after `past` (a lone row: at most one chunk of them); rows done
        get their first token and join the decode batch with their forked samples."""
        tokens = [s.tokens() for s in batch]
        new = [len(t) - past for t in tokens]
        if self.config.prefill_chunk and len(batch) == 1:  # _admit batches only rows within a chunk
            new[0] = min(new[0], self.config.prefill_chunk)
        ids = torch.zeros(len(batch), max(new), dtype=torch.long)  # (B, T) right-padded with id 0
        for row, t in enumerate(tokens):
            ids[row, : new[row]] = torch.tensor(t[past : past + new[row]])
        view = self.cache.batch([s.blocks for s in batch], [past] * len(batch), new)
        hidden = self.model.model(ids.to(self.device), cache=view, past_length=past).last_hidden_state  # (B, T, D)
        for seq, t, n in zip(batch, tokens, new):
            seq.cached = past + n
            self._register_full_blocks(seq, t)
        if batch[0].cached < len(tokens[0]):  # a chunk of a long prompt: a seat now, a token later
            if self.prefilling is None:
                self.prefilling = batch[0]
                self.running.append(batch[0])
            return []
        if self.prefilling is not None:
            self.running.remove(self.prefilling)
            self.prefilling = None
        last = hidden[torch.arange(len(batch)), torch.tensor(new) - 1]  # (B, D): each row's last token
        logits = self.model.lm_head(last).float()  # (B, V)
        rows, logit_rows = [], []
        for row, (seq, t) in enumerate(zip(batch, tokens)):
            self.metrics.prompt_tokens += len(t) if not seq.output else 0
            for s in [seq, *self._fork(seq)]:
                rows.append(s)
                logit_rows.append(row)
        self.running += rows
        return self._emit(rows, logits[logit_rows])

    def _fork(self, seq: _Sequence) -> list[_Sequence]:
        """The request's other samples, sharing `seq`'s full prompt blocks and copying its partial one."""
        full = seq.cached // self.cache.block_size
        children = []
        for index in range(1, 1 + seq.forks):
            child = _Sequence(seq.request_id, seq.prompt, seq.params, seq.limit, self.tokenizer, self.device,
                              index, seq.arrival)
            self.blocks.acquire(seq.blocks[:full])
            child.blocks = seq.blocks[:full]
            if seq.fork_blocks:
                block = seq.fork_blocks.pop()
                self.cache.copy_block(seq.blocks[full], block)
                child.blocks = child.blocks + [block]
            child.cached, child.registered, child.parent = seq.cached, seq.registered, seq.parent
            children.append(child)
        seq.forks = 0
        return children

    def _register_full_blocks(self, seq: _Sequence, tokens: list[int]) -> None:
        """Enter `seq`'s newly filled blocks into the prefix cache."""
        bs = self.cache.block_size
        while seq.registered < seq.cached // bs:
            i = seq.registered
            seq.parent = self.blocks.register(seq.blocks[i], seq.parent, tokens[i * bs : (i + 1) * bs])
            seq.registered += 1

    def _decode(self) -> list[StepOutput]:
        self._reserve_slots()
        rows = [s for s in self.running if s is not self.prefilling]
        if not rows:
            return []
        ids = torch.tensor([[s.output[-1]] for s in rows], device=self.device)  # (B, 1)
        view = self.cache.batch([s.blocks for s in rows], [s.cached for s in rows], [1] * len(rows),
                                share_prefix=True)  # the model is in the decode layout, which takes PrefixKV
        out = self.model(ids, attention_mask=view.attention_mask(), position_ids=view.position_ids(),
                         cache=view, past_length=view.past_length, logits_to_keep=1)
        for seq in rows:
            seq.cached += 1
            if seq.cached % self.cache.block_size == 0:
                self._register_full_blocks(seq, seq.tokens())
        return self._emit(rows, out.logits[:, -1])

    def _reserve_slots(self) -> None:
        """Give every running sequence whose next token starts a block a new block, preempting the
        most recently admitted sequences while none is left (a part-prefilled one never needs one:
        it got blocks for its whole prompt)."""
        i = 0
        while i < len(self.running):
            seq = self.running[i]
            if seq.cached == len(seq.blocks) * self.cache.block_size:
                block = self.blocks.allocate()
                while block is None and self.running[-1] is not seq:
                    self._preempt(self.running.pop())
                    block = self.blocks.allocate()
                if block is None:  # seq is the last one left wanting: it waits itself
                    self._preempt(self.running.pop())
                    return
                seq.blocks.append(block)
            i += 1

    def _preempt(self, seq: _Sequence) -> None:
        """Free a running sequence's blocks and queue it first, to be recomputed (prompt + output)."""
        self._release(seq)
        seq.cached, seq.registered, seq.parent = 0, 0, ROOT
        self.waiting.appendleft(seq)
        self.metrics.preemptions += 1

    def _emit(self, rows: list[_Sequence], logits: torch.Tensor) -> list[StepOutput]:
        """Pick each row's next token from its logits (B, V); finish and release what ended."""
        tokens = logits.argmax(-1).tolist()
        for i, seq in enumerate(rows):
            if not seq.params.greedy or seq.seen is not None:
                tokens[i] = sample(logits[i], seq.params, seq.seen_ids(), seq.generator)
        now = time.perf_counter()
        outputs, done = [], []
        for i, (seq, token) in enumerate(zip(rows, tokens)):
            if seq.output:
                self.metrics.inter_token_latency.observe(now - seq.last_token_time)
            else:
                self.metrics.time_to_first_token.observe(now - seq.arrival)
            seq.last_token_time = now
            reason = seq.append(token)
            if reason is None and len(seq.prompt) + len(seq.output) >= self.max_len:
                reason = "length"
            logprobs = None
            if seq.params.logprobs is not None:
                lp, top = top_logprobs(logits[i], token, seq.params.logprobs)
                logprobs = [TokenLogprob(token, lp, top)]
            outputs.append(self._output(seq, [token], reason, logprobs))
            if reason is not None:
                done.append(seq)
        self.metrics.generated_tokens += len(rows)
        self._finish(done)
        return outputs

    def _output(self, seq: _Sequence, tokens: list[int], reason: str | None,
                logprobs: list[TokenLogprob] | None = None) -> StepOutput:
        text = seq.text.take(final=reason is not None) if seq.text is not None else ""
        return StepOutput(seq.request_id, tokens, text, logprobs, reason is not None, reason,
                          len(seq.prompt), len(seq.output), seq.index)

    def _finish(self, seqs: list[_Sequence]) -> None:
        """Remove finished sequences from the batch and release their blocks."""
        if not seqs:
            return
        for seq in seqs:
            self._release(seq)
        gone = set(map(id, seqs))
        self.running = [s for s in self.running if id(s) not in gone]
        self.metrics.finished_sequences += len(seqs)

    def _release(self, seq: _Sequence) -> None:
        """Drop `seq`'s blocks (and those kept for samples not forked off yet); it leaves `prefilling`."""
        self.blocks.release(seq.blocks + seq.fork_blocks)
        seq.blocks, seq.fork_blocks = [], []
        if seq is self.prefilling:
            self.prefilling = None

    # ----- convenience drivers -------------------------------------------------------------------
    def generate(self, prompts: Sequence[str | Sequence[int]], params: SamplingParams | None = None) -> list[Result]:
        """Run prompts (texts or id lists) to completion; results in prompt order, each prompt's
        `params.n` samples in index order (requests queued by others run along, unreported)."""
        n = (params or self.defaults).n
        results = {}
        for p in prompts:
            ids = self.encode_prompt(p) if isinstance(p, str) else list(p)
            rid = self.add_request(ids, params)
            results |= {(rid, i): Result(rid, ids, index=i) for i in range(n)}
        while self.has_unfinished():
            for out in self.step():
                r = results.get((out.request_id, out.index))
                if r is None:
                    continue
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
        finally:  # the consumer stopped early: free its blocks
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


def default_num_blocks(model: HunyuanForCausalLM, max_batch: int, context: int, block_size: int,
                       budget: int | None) -> int:
    """KV-cache blocks: as many as the budget holds, but no more than max_batch full contexts need."""
    weight = model.model.embed_tokens.weight
    budget = budget if budget is not None else default_cache_budget(weight.device)
    per_block = kv_cache_bytes_per_token(model.config, weight.element_size())["as_built"] * block_size
    blocks = min(budget // per_block, -(-max_batch * context // block_size))
    if blocks < 1:
        raise UserError(f"a KV cache budget of {budget} bytes does not hold one block of {block_size} tokens "
                        f"({per_block} bytes)")
    return blocks
