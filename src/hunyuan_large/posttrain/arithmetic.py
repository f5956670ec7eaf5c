"""Verifiable post-training data: arithmetic in the chat form of the `hunyuan_arithmetic` eval task.

`python -m hunyuan_large.posttrain.arithmetic OUT [--sample-from MODEL]` writes, from questions that
never occur in the task's held-out test split:
- OUT/sft.jsonl: conversations answered by program ("47 - 18 = 29.");
- OUT/pairs.jsonl: the model's own samples checked by program, chosen a correct one (the program's
  answer when none is) and rejected a wrong one, for the reward model and offline DPO;
- OUT/prompts.jsonl: further questions for online DPO.
The user turn is the task's prompt ("Question: What is 47 - 18?\nAnswer:"), so accuracy before and
after training is `hunyuan eval --tasks hunyuan_arithmetic --apply-chat-template`.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from ..eval.offline import arithmetic_doc, make_split
from ..infer.engine import Engine, EngineConfig
from ..infer.sampling import SamplingParams
from ..synth.parsing import final_number
from ..synth.stages import write_jsonl


def user_turn(question: str) -> list[dict[str, str]]:
    """The eval task's prompt as a user message."""
    return [{"role": "user", "content": f"Question: {question}\nAnswer:"}]


def worked_answer(question: str, answer: str) -> str:
    """The program's reply: the expression restated, then its value."""
    return f"{question.removeprefix('What is ').removesuffix('?')} = {answer}."


def fresh_questions(n: int, seed: int) -> list[dict]:
    """n distinct arithmetic questions, none of them in the eval task's test split."""
    taken = {d["question"] for d in make_split("arithmetic", "test")}
    rng, docs = random.Random(f"posttrain-arithmetic-{seed}"), []
    while len(docs) < n:
        d = arithmetic_doc(rng)
        if d["question"] not in taken:
            taken.add(d["question"])
            docs.append(d)
    return docs


def sample_pairs(engine: Engine, docs: list[dict], n: int, max_new_tokens: int, seed: int) -> tuple[list[dict], Counter]:
    """n samples per question; a pair per question that has a wrong sample, and the tallies."""
    params = engine.chat_params(SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0, n=n, seed=seed))
    rids = [engine.add_request(engine.encode_chat(user_turn(d["question"])), params) for d in docs]
    text = {(rid, k): "" for rid in rids for k in range(n)}
    with tqdm(total=len(text), desc="sampling", unit="sample") as bar:
        while engine.has_unfinished():
            for out in engine.step():
                text[out.request_id, out.index] += out.text
                bar.update(out.finished)
    texts = [[text[rid, k] for k in range(n)] for rid in rids]
    pairs, tally = [], Counter()
    for i, d in enumerate(docs):
        right = [t for t in texts[i] if final_number(t) == d["answer"]]
        wrong = [t for t in texts[i] if final_number(t) != d["answer"]]
        tally["correct"] += len(right)
        tally["wrong"] += len(wrong)
        if wrong:
            chosen = right[0] if right else worked_answer(d["question"], d["answer"])
            pairs.append({"prompt": user_turn(d["question"]), "chosen": chosen, "rejected": wrong[0]})
    return pairs, tally


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="output folder")
    p.add_argument("--sample-from", metavar="MODEL", help="model folder whose samples make the pairs (none: no pairs)")
    p.add_argument("--sft", type=int, default=1000, help="SFT conversations")
    p.add_argument("--pairs", type=int, default=300, help="questions sampled for preference pairs")
    p.add_argument("--prompts", type=int, default=300, help="online DPO prompts")
    p.add_argument("--samples", type=int, default=4, help="samples per pair question")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    docs = fresh_questions(a.sft + a.pairs + a.prompts, a.seed)
    sft, pair_docs, prompt_docs = docs[:a.sft], docs[a.sft:a.sft + a.pairs], docs[a.sft + a.pairs:]
    write_jsonl(out / "sft.jsonl", [{"messages": user_turn(d["question"]) + [
        {"role": "assistant", "content": worked_answer(d["question"], d["answer"])}]} for d in sft])
    write_jsonl(out / "prompts.jsonl", [{"prompt": user_turn(d["question"])} for d in prompt_docs])
    print(f"{out}: {len(sft)} SFT conversations, {len(prompt_docs)} online prompts")
    if a.sample_from:
        engine = Engine.from_pretrained(a.sample_from, EngineConfig(max_batch=64))
        pairs, tally = sample_pairs(engine, pair_docs, a.samples, a.max_new_tokens, a.seed)
        write_jsonl(out / "pairs.jsonl", pairs)
        print(f"{out}: {len(pairs)} pairs from {len(pair_docs)} questions x {a.samples} samples of "
              f"{a.sample_from} ({tally['correct']}/{tally['correct'] + tally['wrong']} samples correct)")


if __name__ == "__main__":
    main()
