"""The lm-evaluation-harness model `hunyuan`: batched log-likelihoods by full forwards, generation by the engine.

Log-likelihood requests that share a context (multiple-choice answers) run it once
(shared_context.py); the others are scored whole, `batch_size` distinct inputs per forward
(scoring.py); the LM head runs only where a continuation token is predicted.
Generation requests all go to the engine at once; its continuous batching keeps `batch_size` of
them decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from ..errors import UserError
from ..infer import Engine, EngineConfig, SamplingParams
from ..model import HunyuanForCausalLM
from ..pretrained import load_pretrained
from ..tokenizer import Tokenizer, load_tokenizer
from .scoring import score
from .shared_context import score_shared

# lm-eval's token-level request: (strings, context ids, continuation ids)
Request = tuple[tuple[str | None, str | None], list[int], list[int]]


@register_model("hunyuan")
class HunyuanLM(TemplateLM):
    """Our model and tokenizer behind lm-eval's interface (`simple_evaluate(model=HunyuanLM(...))`)."""

    def __init__(self, pretrained: str | Path | None = None, *, model: HunyuanForCausalLM | None = None,
                 tokenizer: Tokenizer | None = None, batch_size: int | str = 16,
                 max_length: int | str | None = None, max_gen_toks: int | str = 256, device: str = "auto",
                 dtype: str | None = None, seed: int | str = 1234):
        """A model folder (`pretrained`), or a model and tokenizer already loaded."""
        super().__init__()
        if (pretrained is None) == (model is None):
            raise UserError("give either a model folder (pretrained=DIR) or a loaded model, not both")
        if pretrained is not None:
            model, tokenizer = load_pretrained(pretrained, device=device, dtype=dtype), load_tokenizer(pretrained)
        if tokenizer is None:
            raise UserError("evaluation needs a tokenizer; this model has none")
        self.batch_size, self.max_gen_toks, self.seed = _positive(batch_size, "batch_size"), _positive(
            max_gen_toks, "max_gen_toks"), int(seed)
        length = None if max_length is None else _positive(max_length, "max_length")
        self.engine = Engine(model, tokenizer, config=EngineConfig(max_batch=self.batch_size, max_len=length))
        self.model, self.tok = model, tokenizer
        self.max_length = self.engine.max_len  # the context, or less where the KV cache budget says so
        self._device = self.engine.device
        self._name = str(Path(pretrained).resolve()).replace("/", "__") if pretrained else "hunyuan"
        # Generation ends on end-of-text and on the chat template's end of turn.
        self.stop_ids = tuple(i for i in dict.fromkeys((tokenizer.eos_id, *tokenizer.chat_stop_ids)) if i is not None)
        self._bos_text = tokenizer.decode([tokenizer.bos_id]) if tokenizer.bos_id is not None else None

    # ----- tokens ----------------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tok.eos_id

    @property
    def prefix_token_id(self) -> int:
        """What an empty context and the first rolling window condition on: bos, else end-of-text (as
        lm-eval's hf model does)."""
        return self.tok.bos_id if self.tok.bos_id is not None else self.tok.eos_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        """Text -> ids; a document start (bos) is prepended unless told not to or already in the text."""
        ids = self.tok.encode(string, add_special_tokens=False)
        if self._bos_text is None or add_special_tokens is False or (
                add_special_tokens is None and string.startswith(self._bos_text)):
            return ids
        return [self.tok.bos_id, *ids]

    @property
    def tokenizer_name(self) -> str:
        return self._name

    def chat_template(self, chat_template: bool | str = False) -> str:
        """A sample conversation rendered by the template (lm-eval only records and hashes it)."""
        return self.tok.apply_chat_template([{"role": "user", "content": "{question}"},
                                             {"role": "assistant", "content": "{answer}"}], tokenize=False)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The prompt text of a conversation, opening the assistant's turn; without
        `add_generation_prompt` a final assistant message is prefilled: its turn is left open."""
        if not add_generation_prompt and chat_history and chat_history[-1]["role"] == "assistant":
            head = self.tok.apply_chat_template(chat_history[:-1], add_generation_prompt=True, tokenize=False)
            return head + chat_history[-1]["content"]
        return self.tok.apply_chat_template(chat_history, add_generation_prompt=add_generation_prompt, tokenize=False)

    # ----- scoring ---------------------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests: Sequence[Request], disable_tqdm: bool = False,
                              **kwargs) -> list[tuple[float, bool]]:
        """(sum of continuation log-probs, whether greedy decoding yields the continuation) per request.

        Requests that share a context longer than their continuations, and fit the window, run
        it once (shared_context.py);
        the others are scored whole, left-truncated to the window (scoring.py)."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (_, context, continuation) in enumerate(requests):
            if continuation and len(context) + len(continuation) <= self.max_length + 1:
                groups.setdefault(tuple(context), []).append(i)
        # Sharing pays when the context is the long part (a question and its answers), not for
        # rolling windows, whose context is one token.
        shared = [g for g in groups.values()
                  if len(g) > 1 and len(requests[g[0]][1]) >= max(len(requests[i][2]) for i in g)]
        in_shared = {i for g in shared for i in g}
        alone = [i for i in range(len(requests)) if i not in in_shared]
        results: list[tuple[float, bool]] = [(0.0, True)] * len(requests)
        scored = score_shared(self.model, [requests[g[0]][1] for g in shared],
                              [[requests[i][2] for i in g] for g in shared], self.batch_size, not disable_tqdm)
        for g, group_scores in zip(shared, scored):
            for i, result in zip(g, group_scores):
                results[i] = result
        inputs, targets = [], []
        for i in alone:
            _, context, continuation = requests[i]
            ids = (context + continuation)[-(self.max_length + 1):]  # left-truncated to the context
            n = min(len(continuation), len(ids) - 1)  # an empty continuation scores 0, greedy
            inputs.append(ids[:-1])
            targets.append(ids[len(ids) - n:])
        for i, result in zip(alone, score(self.model, inputs, targets, self.batch_size, progress=not disable_tqdm)):
            results[i] = result
        for (strings, _, _), scored in zip(requests, results):
            if strings[0] is not None:
                self.cache_hook.add_partial("loglikelihood", strings, scored)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Each text's total log-likelihood over lm-eval's disjoint windows (every token scored once)."""
        windows: list[Request] = []
        owner: list[int] = []
        for i, (text,) in enumerate(req.args for req in requests):
            ids = self.tok_encode(text, add_special_tokens=False)
            for context, pred in map(make_disjoint_window, get_rolling_token_windows(
                    ids, self.prefix_token_id, self.max_length, context_len=1)):
                windows.append(((None, None), context, pred))
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, (lp, _) in zip(owner, self._loglikelihood_tokens(windows, disable_tqdm)):
            totals[i] += lp
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # ----- generation ------------------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Continuations from the engine, cut at the first stop string as lm-eval's own backends do."""
        eos = self.tok.decode([self.eot_token_id])
        stops: dict[str, list[str]] = {}
        for i, req in enumerate(requests):
            context, gen_kwargs = req.args
            kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_gen = kwargs.pop("max_gen_toks")
            if max_gen >= self.max_length:
                raise UserError(f"max_gen_toks {max_gen} leaves no room for a prompt in the context of "
                                f"{self.max_length} tokens")
            params = SamplingParams(
                max_new_tokens=max_gen, stop=tuple(s for s in until if s), stop_token_ids=self.stop_ids,
                temperature=float(kwargs.get("temperature", 1.0)) if kwargs.get("do_sample") else 0.0,
                top_p=float(kwargs.get("top_p") or 1.0), top_k=int(kwargs.get("top_k") or 0), seed=self.seed + i)
            prompt = self.tok_encode(context)[-(self.max_length - max_gen):]  # left-truncated as in `hf`
            stops[self.engine.add_request(prompt, params, request_id=str(i))] = until
        tokens: dict[str, list[int]] = {rid: [] for rid in stops}
        with tqdm(total=len(requests), disable=disable_tqdm, desc="generate_until", unit="req") as bar:
            while self.engine.has_unfinished():
                for out in self.engine.step():
                    tokens[out.request_id] += out.token_ids
                    bar.update(out.finished)
        # The engine stopped at the first stop string; decoding the ids ourselves and cutting at it
        # gives exactly lm-eval's text (stop ids dropped, other special tokens kept as their text).
        results = [postprocess_generated_text(self.tok.decode([t for t in ids if t not in self.stop_ids]),
                                              stops[rid], None) for rid, ids in tokens.items()]
        for req, text in zip(requests, results):
            self.cache_hook.add_partial("generate_until", req.args, text)
        return results


def _positive(value: int | str, name: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise UserError(f"{name} must be an integer >= 1, got {value!r}")
    return n
