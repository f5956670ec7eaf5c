"""Long-context retrieval accuracy by length: niah_single_1 and vt, greedy, exact match of the answer.

A small stand-in for `hunyuan eval ruler` (issue 17), self-contained so the proof in
docs/long-context.md can run before it lands: prompts from hunyuan_large.data.retrieval (RULER's
formats), sized with the model's tokenizer to the largest haystack that leaves room for the answer
within each length, needles at depths spread evenly over the context; the score is RULER's
string_match_all (share of the reference strings found in the output, x100), averaged over samples.
Models are `label=FOLDER` or `label=FOLDER:alpha=A` (the folder's weights with NTK-alpha A, zero-shot);
the first model is the same-run baseline.

Usage: python benchmarks/long_context.py before=runs/long_context/model-512 \
           ntk=runs/long_context/model-512:alpha=4 after=runs/long_context/model-2048 \
           [--lengths 512,1024,2048 --samples 40 --seed 0 --threads N]
"""

from __future__ import annotations

import argparse
import random
import time

from common import add_threads_arg, machine, print_json, print_table, set_up_process
from hunyuan_large.data.retrieval import Sample, niah, vt
from hunyuan_large.infer import Engine, EngineConfig, SamplingParams

TASKS = {"niah_single_1": (niah, 12), "vt": (vt, 32)}  # generator, tokens to generate


def sized_sample(task: str, tokenizer, length: int, seed: int, depth: float) -> Sample:
    """The sample with the most haystack lines whose prompt + answer budget fits `length` tokens."""
    make, budget = TASKS[task]

    def build(repeats: int) -> Sample:
        rng = random.Random(seed)  # the same key, value and names at every size
        return make(repeats, rng, depth) if task == "niah_single_1" else make(repeats, rng)

    lo, hi = 1, length
    while lo < hi:  # the largest repeats that fits
        mid = (lo + hi + 1) // 2
        if len(tokenizer.encode_prompt(build(mid).prompt)) + budget <= length:
            lo = mid
        else:
            hi = mid - 1
    return build(lo)


def score(output: str, answers: list[str]) -> float:
    """RULER's string_match_all for one sample: the share of references contained (case-insensitive)."""
    return sum(a.lower() in output.lower() for a in answers) / len(answers)


def evaluate(engine: Engine, task: str, length: int, samples: int, seed: int) -> float:
    """Mean string_match_all x 100 over `samples` prompts of `length` tokens."""
    prompts = [sized_sample(task, engine.tokenizer, length, seed * 100_003 + length * 1009 + i,
                            i / max(1, samples - 1)) for i in range(samples)]
    params = SamplingParams(max_new_tokens=TASKS[task][1], temperature=0.0)
    results = engine.generate([p.prompt for p in prompts], params)
    return 100 * sum(score(r.text.split("\n")[0], p.answers) for r, p in zip(results, prompts)) / samples


def load(spec: str, max_len: int) -> tuple[str, Engine]:
    """`label=FOLDER[:alpha=A]` -> (label, engine over the model, with alpha applied if given)."""
    label, _, rest = spec.partition("=")
    folder, _, alpha = rest.partition(":alpha=")
    engine = Engine.from_pretrained(folder, EngineConfig(max_batch=8, max_len=max_len), device="cpu")
    if alpha:
        cfg = engine.model.config
        engine.model.set_rope(cfg.rope_theta, {"type": "dynamic", "alpha": float(alpha), "factor": 1.0},
                              cfg.max_position_embeddings)
    return label, engine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="label=FOLDER or label=FOLDER:alpha=A; the first is the baseline")
    ap.add_argument("--lengths", default="512,1024,2048")
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    add_threads_arg(ap)
    args = ap.parse_args()
    set_up_process(args.threads)
    lengths = [int(x) for x in args.lengths.split(",")]
    t0 = time.perf_counter()
    table: dict[str, dict[str, float]] = {}
    for spec in args.models:
        label, engine = load(spec, max(lengths) + 64)
        for task in TASKS:
            for n in lengths:
                table.setdefault(f"{task} @ {n}", {})[label] = evaluate(engine, task, n, args.samples, args.seed)
    labels = [s.partition("=")[0] for s in args.models]
    print(f"machine: {machine()}; {args.samples} samples per cell; {time.perf_counter() - t0:.0f} s")
    print_table("accuracy (string_match_all x 100)", ["task @ length", *labels],
                [[k, *(f"{v[x]:.1f}" for x in labels)] for k, v in table.items()])
    print_json({"samples": args.samples, "accuracy": table})


if __name__ == "__main__":
    main()
