"""The verifiable arithmetic data of the post-training proof: disjoint from the eval task, checked by program."""

import json
import re

from hunyuan_large.eval.offline import make_split
from hunyuan_large.infer.engine import Engine, EngineConfig
from hunyuan_large.posttrain import arithmetic
from hunyuan_large.synth.parsing import final_number

from .infer_helpers import make_model_folder, one_thread  # noqa: F401 (fixture)


def test_questions_avoid_the_test_split_and_answers_are_right():
    test = {d["question"] for d in make_split("arithmetic", "test")}
    docs = arithmetic.fresh_questions(3000, seed=0)
    assert len({d["question"] for d in docs}) == 3000 and not test & {d["question"] for d in docs}
    for d in docs[:200]:
        a, op, b = re.fullmatch(r"What is (\d+) ([-+*]) (\d+)\?", d["question"]).groups()
        value = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
        assert d["answer"] == str(value)
        assert final_number(arithmetic.worked_answer(d["question"], d["answer"])) == d["answer"]


def test_sampled_pairs_prefer_a_right_answer_over_a_wrong_one(tmp_path, one_thread):  # noqa: F811
    engine = Engine.from_pretrained(make_model_folder(tmp_path / "model"), EngineConfig(max_batch=16))
    docs = arithmetic.fresh_questions(6, seed=1)
    pairs, tally = arithmetic.sample_pairs(engine, docs, n=3, max_new_tokens=6, seed=0)
    assert tally["correct"] + tally["wrong"] == 18
    assert 1 <= len(pairs) <= 6
    answers = {arithmetic.user_turn(d["question"])[0]["content"]: d["answer"] for d in docs}
    for p in pairs:
        answer = answers[p["prompt"][0]["content"]]
        assert final_number(p["chosen"]) == answer and final_number(p["rejected"]) != answer
    again, _ = arithmetic.sample_pairs(engine, docs, n=3, max_new_tokens=6, seed=0)
    assert again == pairs  # seeded sampling


def test_cli_writes_the_files_of_the_post_training_formats(tmp_path):
    arithmetic.main([str(tmp_path / "out"), "--sft", "5", "--prompts", "3", "--pairs", "0"])
    sft = [json.loads(x) for x in (tmp_path / "out" / "sft.jsonl").read_text().splitlines()]
    prompts = [json.loads(x) for x in (tmp_path / "out" / "prompts.jsonl").read_text().splitlines()]
    assert len(sft) == 5 and len(prompts) == 3
    assert [m["role"] for m in sft[0]["messages"]] == ["user", "assistant"]
    assert prompts[0]["prompt"][0]["content"].startswith("Question: What is ")
