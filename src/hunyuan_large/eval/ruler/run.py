"""One RULER run: samples for every task x length, greedy generation by the engine, RULER's scores."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from tqdm import tqdm

from ...errors import UserError
from ...infer import Engine, SamplingParams
from .metrics import postprocess, string_match_all
from .samples import Sample, make_samples
from .tasks import select_tasks


@dataclass
class RulerRun:
    """What to measure (the flags of `hunyuan eval ruler`)."""

    tasks: str | None = None  # comma-separated names; None: all
    lengths: tuple[int, ...] = (1024, 2048, 4096)
    samples: int = 4  # per task and length
    seed: int = 0
    chat: bool = False  # the prompt as a user turn of the model's chat template


def parse_lengths(text: str) -> tuple[int, ...]:
    """'1k,2k,512,4096' -> (512, 1024, 2048, 4096): k is 1024 tokens, m 1024k; sorted, distinct."""
    lengths = set()
    for part in (p.strip() for p in text.split(",") if p.strip()):
        m = re.fullmatch(r"(\d+)([kKmM]?)", part)
        if not m or int(m.group(1)) < 1:
            raise UserError(f"length {part!r} is not a token count like 512, 4096, 4k or 1m")
        lengths.add(int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2}[m.group(2).lower()])
    if not lengths:
        raise UserError(f"--lengths {text!r} names no length (e.g. 1k,2k,4k)")
    return tuple(sorted(lengths))


def build_samples(engine: Engine, run: RulerRun) -> list[Sample]:
    """Every task's samples at every length, sized with the engine's tokenizer."""
    if run.samples < 1:
        raise UserError(f"--samples must be >= 1, got {run.samples}")
    if max(run.lengths) > engine.max_len:
        raise UserError(f"length {max(run.lengths)} does not fit the engine's {engine.max_len}-token sequences "
                        f"(the model's context or the KV cache's memory)")
    tok = engine.require_tokenizer()
    return [s for task in select_tasks(run.tasks) for length in run.lengths
            for s in make_samples(task, tok, length, run.samples, run.seed, run.chat)]


def generate(engine: Engine, samples: list[Sample], progress: bool = True) -> list[str]:
    """Greedy replies to every sample, run together with continuous batching."""
    tok = engine.require_tokenizer()
    stops = tuple(i for i in dict.fromkeys((tok.eos_id, *tok.chat_stop_ids)) if i is not None)
    texts: dict[str, str] = {}
    for i, s in enumerate(samples):
        params = SamplingParams(max_new_tokens=s.max_new_tokens, temperature=0.0, stop_token_ids=stops)
        texts[engine.add_request(s.ids, params, request_id=str(i))] = ""
    new_tokens = 0
    with tqdm(total=len(samples), disable=not progress, desc="ruler", unit="sample") as bar:
        while engine.has_unfinished():
            for out in engine.step():
                texts[out.request_id] += out.text
                new_tokens += len(out.token_ids)
                bar.update(out.finished)
            bar.set_postfix_str(f"{new_tokens / max(bar.format_dict['elapsed'], 1e-9):.1f} tok/s", refresh=False)
    return [texts[str(i)] for i in range(len(samples))]


def score(samples: list[Sample], predictions: list[str]) -> dict[str, dict[str, float]]:
    """RULER's string_match_all per task and length ({task: {length: score}})."""
    groups: dict[tuple[str, int], list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault((s.task, s.length), []).append(i)
    table: dict[str, dict[str, float]] = {}
    for (task, length), idx in groups.items():
        table.setdefault(task, {})[str(length)] = string_match_all(
            [postprocess(predictions[i]) for i in idx], [samples[i].built.outputs for i in idx])
    return table


def evaluate(engine: Engine, run: RulerRun, progress: bool = True) -> dict:
    """The run's results: scores per task and length, their average per length, every sample."""
    start = time.perf_counter()
    samples = build_samples(engine, run)
    built = time.perf_counter()
    predictions = generate(engine, samples, progress)
    scores = score(samples, predictions)
    lengths = [str(n) for n in run.lengths]
    return {
        "tasks": list(scores), "lengths": list(run.lengths), "samples_per_task": run.samples, "seed": run.seed,
        "chat": run.chat, "scores": scores,
        "average": {n: round(sum(scores[t][n] for t in scores) / len(scores), 2) for n in lengths},
        "seconds": {"build": round(built - start, 2), "generate": round(time.perf_counter() - built, 2)},
        "samples": [{"task": s.task, "length": s.length, "index": s.index, "depth": s.depth,
                     "prompt_tokens": len(s.ids), "max_new_tokens": s.max_new_tokens, "haystack": s.n,
                     "outputs": s.built.outputs, "prediction": p,
                     "score": string_match_all([postprocess(p)], [s.built.outputs])}
                    for s, p in zip(samples, predictions)],
    }
