"""The synthetic data pipeline with a scripted fake backend: every stage, every drop reason, resume."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from hunyuan_large.errors import UserError
from hunyuan_large.synth.backends import Backend, Request
from hunyuan_large.synth.config import SynthConfig
from hunyuan_large.synth.pipeline import run_pipeline
from hunyuan_large.synth.stages import Stage, read_jsonl, run_stage

# Seed paragraphs; a marker word scripts what the fake model does with instructions made from it.
SEEDS = {
    "plain": ["alpha facts", "beta facts", "gamma facts", "delta facts"],
    "UNCHANGED": ["epsilon facts"],  # evolution returns it as it was
    "LEAK": ["zeta facts"],  # evolution leaks the template's words
    "REFUSE": ["eta facts"],  # evolution refuses
    "LONG": ["theta facts"],  # evolution writes too much
    "DUP": ["iota facts", "iota facts"],  # two identical seeds: the second is a near-duplicate
    "GARBAGE": ["kappa facts"],  # the critic's reply has no rating
    "LOW": ["lambda facts"],  # the critic rates it 2
    "TOOBIG": ["mu facts"],  # the responder refuses the prompt (too long for its context)
}
MATH = {"AGREE": ["one plus one"], "SPLIT": ["two plus two"]}  # 3 samples: all agree / all differ


class Scripted(Backend):
    """A fake model: answers by the kind of prompt and the marker it carries."""

    def __init__(self):
        self.name = "fake"
        self.calls = Counter()

    def generate(self, requests: list[Request]) -> list[str | None]:
        return [self.answer(r) for r in requests]

    def answer(self, r: Request) -> str | None:
        text = r.messages[-1]["content"]
        marker = next((m for m in [*SEEDS, *MATH] if m in text and m != "plain"), "")
        if text.startswith("Here is"):
            self.calls["generate"] += 1
            seed = re.search(r"\n\n(.*?)\n\n", text, re.S).group(1)
            return f"Explain {seed} please."
        if text.startswith("Rate the response"):
            self.calls["critique"] += 1
            return "hmm, hard to say" if "GARBAGE" in text else "Rating: 2" if "LOW" in text else \
                f"**Rating:** {5 + r.messages[0]['content'].count('sample')}/10 because."
        if "#Instruction#" in text:
            self.calls["evolve"] += 1
            instruction = text.split("#Instruction#\n")[1].split("\n\nReply")[0]
            return {"UNCHANGED": instruction, "LEAK": "#Rewritten Instruction#: " + instruction,
                    "REFUSE": "I'm sorry, I cannot do that.", "LONG": "x" * 500}.get(
                        marker, instruction + " Give three reasons.")
        self.calls["respond"] += 1
        if "TOOBIG" in text:
            return None
        if "SPLIT" in text:
            return f"The answer is {r.seed % 1000}."
        if "AGREE" in text:
            return f"Working it out{' carefully sample' * (self.calls['respond'] % 3)}: the answer is 2."
        return f"Here is an answer about {text[:40]}."


def _write_seeds(tmp_path):
    text = "\n\n".join(f"{m} {s}" for m, seeds in SEEDS.items() for s in seeds)
    (tmp_path / "seeds.txt").write_text(text)
    with open(tmp_path / "math.jsonl", "w") as f:
        for m, seeds in MATH.items():
            for s in seeds:
                f.write(json.dumps({"question": f"{m} {s}"}) + "\n")


def _config(tmp_path, **changes) -> SynthConfig:
    raw = {
        "run": {"out": str(tmp_path / "out"), "shard_size": 4},
        "seeds": [{"path": str(tmp_path / "seeds.txt")},
                  {"path": str(tmp_path / "math.jsonl"), "kind": "jsonl", "field": "question", "domain": "math"}],
        "backends": {"fake": {"kind": "openai", "model": "fake-model", "endpoints": ["http://unused"]}},
        "domains": {"math": {"extractor": "number"}},
        "generate": {"backend": "fake"},
        "evolve": {"backend": "fake", "max_chars": 300},
        "respond": {"backend": "fake", "samples": 3},
        "filter": {"critic": "fake", "min_rating": 4, "vote_share": 0.6, "dedup_threshold": 0.7},
    }
    for key, value in changes.items():
        section, name = key.split("__")
        raw[section][name] = value
    return SynthConfig.from_dict(raw)


@pytest.fixture
def seeds(tmp_path):
    _write_seeds(tmp_path)
    return tmp_path


def test_every_stage_and_drop_reason(seeds):
    fake = Scripted()
    results = run_pipeline(_config(seeds), backends={"fake": fake})
    by = {r.folder.name: r for r in results}
    n_seeds = sum(map(len, SEEDS.values())) + sum(map(len, MATH.values()))
    assert by["generate"].records_in == n_seeds and by["generate"].kept == n_seeds
    assert by["evolve"].dropped == Counter(evolve_unchanged=1, evolve_leaked_template=1, evolve_refusal=1,
                                           evolve_too_long=1)
    assert by["respond"].kept == n_seeds - 4
    assert by["filter"].dropped == Counter(unparsable_rating=1, low_rating=1, no_consensus=1,
                                            prompt_refused=1)
    assert by["filter"].events == Counter(unparsable_rating=3)  # 3 samples of the GARBAGE record
    assert by["dedup"].dropped == Counter(near_duplicate=1)
    out = seeds / "out"
    sft = read_jsonl(out / "sft.jsonl")
    assert len(sft) == n_seeds - 4 - 4 - 1
    assert all([m["role"] for m in r["messages"]] == ["user", "assistant"] for r in sft)
    # AGREE's samples rate 5, 6 or 7 by their text: chosen is the best, rejected the worst.
    dpo = read_jsonl(out / "dpo.jsonl")
    agree = [p for p in dpo if "AGREE" in p["prompt"][0]["content"]]
    assert len(agree) == 1 and agree[0]["chosen"].count("sample") > agree[0]["rejected"].count("sample")
    # Every dropped record keeps its reason; every record its provenance.
    dropped = read_jsonl(out / "evolve" / "dropped" / "shard-00001.jsonl")
    assert all(d["dropped"].startswith("evolve_") for d in dropped)
    rec = read_jsonl(out / "dedup" / "merged.jsonl")[0]
    assert [p["step"] for p in rec["provenance"]] == ["generate", "evolve", *["respond"] * 3, *["critique"] * 3]
    assert rec["provenance"][0]["model"] == "fake-model" and "temperature" in rec["provenance"][0]["sampling"]
    assert rec["seed"]["source"].endswith("seeds.txt#p0")
    summary = json.loads((out / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == ["generate", "evolve", "respond", "filter", "dedup"]


def test_rerun_skips_and_a_change_reruns_what_follows(seeds):
    fake = Scripted()
    run_pipeline(_config(seeds), backends={"fake": fake})
    first = dict(fake.calls)
    before = (seeds / "out" / "sft.jsonl").read_text()
    results = run_pipeline(_config(seeds), backends={"fake": fake})
    assert dict(fake.calls) == first  # nothing was asked again
    assert all(r.skipped == len(r.shards) for r in results)
    assert (seeds / "out" / "sft.jsonl").read_text() == before
    # A changed filter: generate, evolve and respond are reused; filter and dedup rerun.
    results = run_pipeline(_config(seeds, filter__min_rating=6), backends={"fake": fake})
    assert [r.skipped == len(r.shards) for r in results] == [True, True, True, False, False]
    assert fake.calls["generate"] == first["generate"] and fake.calls["critique"] == 2 * first["critique"]
    assert len(read_jsonl(seeds / "out" / "sft.jsonl")) < len(before.splitlines())


def test_interrupt_mid_stage_resumes_without_loss_or_duplicates(tmp_path):
    shards = {f"shard-{i:05d}": [{"id": f"{i}-{j}", "x": j} for j in range(3)] for i in range(4)}
    calls = []

    def work(records, fail_at=None):
        calls.append(records[0]["id"])
        if records[0]["id"] == fail_at:
            raise KeyboardInterrupt
        return [{**r, "y": r["x"] * 2} for r in records], [], Counter()

    with pytest.raises(KeyboardInterrupt):
        run_stage(Stage("double", {"k": 1}, lambda r: work(r, fail_at="2-0")), tmp_path, shards)
    assert calls == ["0-0", "1-0", "2-0"]
    result = run_stage(Stage("double", {"k": 1}, work), tmp_path, shards)
    assert calls[3:] == ["2-0", "3-0"] and result.skipped == 2  # the interrupted shard is redone
    assert [r["id"] for r in result.records()] == [r["id"] for s in shards.values() for r in s]
    assert not list(tmp_path.glob("double/*.tmp"))
    # A changed config clears the stage.
    result = run_stage(Stage("double", {"k": 2}, work), tmp_path, shards)
    assert result.skipped == 0 and len(calls) == 9


def test_config_errors_are_one_line(seeds):
    with pytest.raises(UserError, match="unknown backends"):
        _config(seeds, generate__backend="nope")
    with pytest.raises(UserError, match=r"\[evolve\]: unknown keys \['round'\]"):
        _config(seeds, evolve__round=2)
    with pytest.raises(UserError, match="unknown methods"):
        _config(seeds, evolve__methods=["shout"])


class Arithmetic(Scripted):
    """Answers 'What is a + b?' right on even sampling seeds, off by one on odd ones; always off by one with a Q."""

    def answer(self, r: Request) -> str | None:
        text = r.messages[-1]["content"]
        if text.startswith("Rate the response"):
            return "Rating: 8"
        a, b = map(int, re.findall(r"\d+", text)[:2])
        self.calls["respond"] += 1
        wrong = r.seed % 2 or "Q" in text
        return f"{a} + {b} = {a + b + (1 if wrong else 0)}"


def test_verbatim_seeds_with_references_measure_precision(tmp_path):
    # 4 questions with references: Q's samples all agree on a+b+1 (its reference), the last reference is wrong.
    rows = [("What is 1 + 2?", "3"), ("What is 10 + 20?", "30"), ("Q What is 5 + 5?", "11"), ("What is 7 + 8?", "0")]
    with open(tmp_path / "qa.jsonl", "w") as f:
        for q, a in rows:
            f.write(json.dumps({"q": q, "a": a}) + "\n")
    cfg = SynthConfig.from_dict({
        "run": {"out": str(tmp_path / "out"), "shard_size": 3},
        "seeds": [{"path": str(tmp_path / "qa.jsonl"), "kind": "jsonl", "field": "q", "answer_field": "a",
                   "domain": "math", "verbatim": True}],
        "backends": {"fake": {"kind": "openai", "model": "m", "endpoints": ["http://unused"]}},
        "domains": {"math": {"extractor": "number"}},
        "generate": {"backend": "fake"}, "evolve": {"backend": "fake", "rounds": 2},
        "respond": {"backend": "fake", "samples": 5}, "filter": {"critic": "fake", "vote_share": 0.5}})
    fake = Arithmetic()
    run_pipeline(cfg, backends={"fake": fake})
    assert "generate" not in fake.calls and "evolve" not in fake.calls  # verbatim: neither generated nor evolved
    out = tmp_path / "out"
    responded = read_jsonl(out / "respond" / "shard-00000.jsonl") + read_jsonl(out / "respond" / "shard-00001.jsonl")
    assert [r["instruction"] for r in responded] == [q for q, _ in rows]
    # Independent tally: the first sample is right iff its seed is even and the question has no Q;
    # the majority is right iff most of the 5 samples are.
    truth = {"What is 1 + 2?": 3, "What is 10 + 20?": 30, "Q What is 5 + 5?": 11, "What is 7 + 8?": 0}
    single = majority = 0
    for rec in responded:
        answers = [int(re.findall(r"-?\d+", s["text"])[-1]) for s in rec["responses"]]
        single += answers[0] == truth[rec["instruction"]]
        top = Counter(answers).most_common(1)[0]
        majority += top[1] / 5 >= 0.5 and top[0] == truth[rec["instruction"]]
    summary = json.loads((out / "summary.json").read_text())["reference_precision"]
    by = {row["selection"]: row for row in summary}
    assert by["one sample"]["kept"] == 4 and by["one sample"]["correct"] == single
    assert by["self-consistency"]["correct"] == majority
    assert by["pipeline output"]["correct"] == majority  # the critic keeps every voted record (rating 8)
    assert by["self-consistency"]["kept"] == by["pipeline output"]["kept"]


def test_wilson_interval_matches_the_textbook_value():
    from hunyuan_large.synth.verify import wilson

    low, high = wilson(8, 10)  # Wilson (1927); e.g. Newcombe (1998) gives 0.490-0.943 for 8/10
    assert abs(low - 0.4902) < 1e-3 and abs(high - 0.9433) < 1e-3
    assert wilson(0, 0) == (0.0, 1.0)
