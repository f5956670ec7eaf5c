"""The shipped offline tasks: deterministic data, 100% for a model forced to answer right, and
`hunyuan eval --tasks hunyuan_suite` end to end on a tiny model against our own scoring."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("lm_eval")
from lm_eval.api.model import LM  # noqa: E402

from hunyuan_large import load_pretrained  # noqa: E402
from hunyuan_large.cli import main  # noqa: E402
from hunyuan_large.errors import UserError  # noqa: E402
from hunyuan_large.eval import offline  # noqa: E402
from hunyuan_large.eval.perplexity import text_perplexity  # noqa: E402
from hunyuan_large.eval.run import EvalRun, evaluate  # noqa: E402
from hunyuan_large.tokenizer import HunyuanTokenizer  # noqa: E402

from .infer_helpers import make_model_folder, one_thread  # noqa: F401,E402 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HUNYUAN_EVAL_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


def test_data_is_deterministic_and_right(data_dir):
    for task in offline.GENERATORS:
        for split in offline.SIZES:
            docs = offline.load_split(task, split)
            assert docs == offline.make_split(task, split) == offline.load_split(task, split)
            assert (data_dir / f"{task}-{split}-v{offline.VERSION}.jsonl").exists()
    for doc in offline.load_split("arithmetic", "test"):
        a, op, b = doc["question"].removeprefix("What is ").removesuffix("?").split()
        assert int(doc["answer"]) == {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
    for doc in offline.load_split("choice", "test"):
        assert len(set(doc["choices"])) == 4
        right = doc["choices"][doc["label"]]
        if doc["question"].startswith("Which number"):
            assert int(right) == max(map(int, doc["choices"]))
    test_texts = {d["text"] for d in offline.load_split("text", "test")}
    assert not test_texts & {d["text"] for d in offline.load_split("text", "train")}


class Oracle(LM):
    """Answers from each request's document: the right reply, the right choice, one bit per byte."""

    def loglikelihood(self, requests, disable_tqdm=False):
        return [(0.0 if r.args[1].strip() == r.doc["choices"][r.doc["label"]] else -5.0, True) for r in requests]

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        return [-len(r.args[0].encode()) * math.log(2) for r in requests]

    def generate_until(self, requests, disable_tqdm=False):
        return [f"So 12 and 3: the result is {r.doc['answer']}" for r in requests]


def test_a_model_forced_to_answer_right_scores_100_percent():
    results = evaluate(Oracle(), EvalRun(["hunyuan_suite"], limit=40))["results"]
    assert results["hunyuan_arithmetic"]["exact_match,final_number"] == 1.0
    assert results["hunyuan_choice"]["acc,none"] == results["hunyuan_choice"]["acc_norm,none"] == 1.0
    assert results["hunyuan_text"]["bits_per_byte,none"] == pytest.approx(1.0)
    assert results["hunyuan_text"]["byte_perplexity,none"] == pytest.approx(2.0)


@pytest.mark.slow  # an unknown name makes lm-eval index its own ~15k tasks (~40 s)
def test_unknown_task_is_one_line():
    with pytest.raises(UserError, match="unknown task 'no_such_task'"):
        evaluate(Oracle(), EvalRun(["no_such_task"], include_path=[offline.__file__.rsplit("/", 1)[0]]))


def test_hunyuan_eval_suite_end_to_end(tmp_path, capsys):
    folder = make_model_folder(tmp_path / "model", seed=2)
    out = tmp_path / "out"
    assert main(["eval", "--model", str(folder), "--tasks", "hunyuan_suite", "--limit", "4", "--batch-size", "3",
                 "--max-gen-toks", "8", "--output", str(out)]) == 0
    assert "hunyuan_choice" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())["results"]
    assert "| - hunyuan_text" in (out / "results.md").read_text()
    assert 0.0 <= results["hunyuan_arithmetic"]["exact_match,final_number"] <= 1.0

    # Our own scoring of the same first 4 documents with an independently loaded model.
    model, tok = load_pretrained(folder), HunyuanTokenizer.from_pretrained(folder)
    right = 0
    for doc in offline.load_split("choice", "test")[:4]:
        context = [tok.bos_id, *tok.encode(f"Question: {doc['question']}\nAnswer:", add_special_tokens=False)]
        scores = []
        for choice in doc["choices"]:
            ids = [tok.bos_id, *tok.encode(f"Question: {doc['question']}\nAnswer: {choice}", add_special_tokens=False)]
            with torch.no_grad():
                lp = model(torch.tensor([ids])).logits[0, :-1].log_softmax(-1)
            scores.append(lp.gather(1, torch.tensor(ids[1:])[:, None])[len(context) - 1:].sum().item())
        right += max(range(4), key=scores.__getitem__) == doc["label"]
    assert results["hunyuan_choice"]["acc,none"] == right / 4
    texts = [(str(i), d["text"]) for i, d in enumerate(offline.load_split("text", "test")[:4])]
    direct = text_perplexity(model, tok, texts, window=512, stride=512, progress=False)
    bpb = sum(r.nll for r in direct) / sum(r.bytes for r in direct) / math.log(2)
    assert results["hunyuan_text"]["bits_per_byte,none"] == pytest.approx(bpb, rel=1e-5)


def test_a_user_task_folder_with_local_data(tmp_path):
    docs = [{"question": f"Pick {i}", "choices": [str(i), str(i + 1), str(i + 2)], "label": i % 3} for i in range(6)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "my_task.yaml").write_text(
        "task: my_task\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {tmp_path / 'data.jsonl'}\noutput_type: multiple_choice\ntest_split: test\n"
        "doc_to_text: '{{question}}'\ndoc_to_choice: '{{choices}}'\ndoc_to_target: label\n"
        "metric_list:\n  - metric: acc\n")
    results = evaluate(Oracle(), EvalRun(["my_task", "hunyuan_choice"], include_path=[tmp_path], limit=6))["results"]
    assert results["my_task"]["acc,none"] == results["hunyuan_choice"]["acc,none"] == 1.0
