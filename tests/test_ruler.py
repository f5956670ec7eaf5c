"""RULER generators and scoring: token lengths, needle depths, recoverable answers, RULER's metric, the CLI."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import torch
from lm_eval.api.model import LM

from hunyuan_large import HunyuanForCausalLM, ModelConfig, save_pretrained
from hunyuan_large.cli import main
from hunyuan_large.errors import UserError
from hunyuan_large.eval.run import EvalRun, evaluate
from hunyuan_large.eval.ruler import TASKS, make_samples, string_match_all, string_match_part
from hunyuan_large.eval.ruler.fwe import zeta
from hunyuan_large.eval.ruler.haystack import NOISE, essay_text, sentences
from hunyuan_large.eval.ruler.niah import NEEDLE
from hunyuan_large.eval.ruler.prompt import prompt_ids
from hunyuan_large.eval.ruler.run import parse_lengths
from hunyuan_large.eval.ruler.tasks import select_tasks
from hunyuan_large.tokenizer import HFTokenizer, HunyuanTokenizer

from .import_helpers import tiny_hf_tokenizer, tokenizer_config
from .infer_helpers import one_thread  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def bpe() -> HunyuanTokenizer:
    """A release-style (tiktoken) BPE trained on the haystack texts, so words are real subwords."""
    return HunyuanTokenizer.train([essay_text(20000), NOISE * 50, " ".join(map(str, range(1000)))],
                                  vocab_size=1000, min_frequency=2)


@pytest.fixture(scope="module")
def hf(tmp_path_factory) -> HFTokenizer:
    """A tokenizer.json vocabulary with a chat template (SmolLM2's shape), mostly bytes."""
    folder = tmp_path_factory.mktemp("hf")
    tiny_hf_tokenizer().save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config()))
    return HFTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("vocab,chat", [("bpe", False), ("hf", False), ("hf", True)])
def test_prompts_fill_the_length_to_within_one_haystack_unit(vocab, chat, request):
    tok = request.getfixturevalue(vocab)
    length = 2048
    for task in TASKS.values():
        for s in make_samples(task, tok, length, 2, seed=3, chat=chat):
            assert s.ids == prompt_ids(tok, s.built, chat)
            assert len(s.ids) + s.max_new_tokens <= length, task.name
            # One more haystack unit would not fit: the prompt is as long as the length allows.
            bigger = prompt_ids(tok, task.builder.build(f"ruler-{task.name}-{length}-3-{s.index}", s.n + 1, s.depth,
                                                        length), chat)
            assert len(bigger) + s.max_new_tokens > length, task.name
            assert len(s.ids) + s.max_new_tokens > 0.8 * length, task.name


def _context(text: str) -> str:
    """The haystack of a niah prompt: between the instructions and the question."""
    return text[text.index("afterwards.\n") + len("afterwards.\n"):text.rindex("\nWhat ")]


@pytest.mark.parametrize("name", ["niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_2"])
def test_the_needle_sits_at_the_requested_depth(name, bpe):
    samples = make_samples(TASKS[name], bpe, 2048, 5, seed=1)
    assert [s.depth for s in samples] == [0, 25, 50, 75, 100]
    for s in samples:
        context = _context(s.built.text)
        needle = context.rindex("One of", 0, context.index(s.built.outputs[0]))
        before = len(bpe.encode_document(context[:needle]))
        total = len(bpe.encode_document(context))
        # Needles go between haystack units (essay sentences vary in length), so the needle may be
        # off its depth by about one unit plus the needle itself.
        unit = max(len(bpe.encode_document(u)) for u in re.split(r"\n|(?<=[.!?]) (?=\S)", context))
        assert abs(100 * before / total - s.depth) <= 100 * unit / total + 0.5, (s.depth, before, total)


def _assignments(text: str) -> dict[str, str]:
    """Variable -> what it is assigned (a number or another variable) in a vt context."""
    return dict(re.findall(r"^VAR ([A-Z]+) = (?:VAR )?(\w+)$", text, re.M))


def test_every_answer_is_recoverable_from_its_prompt(bpe):
    for task in TASKS.values():
        for s in make_samples(task, bpe, 2048, 2, seed=5):
            text, outputs = s.built.text, s.built.outputs
            question = text.rsplit("\n", 1)[-1]
            if task.name.startswith("niah"):
                values = re.findall(r"One of the special magic \w+ for (\S+) is: (\S+)\.", text)
                asked = {v for k, v in values if k in question}
                assert asked == set(outputs) and len(outputs) == task.builder.values * task.builder.queries
            elif task.name == "vt":
                main_part = text[text.rindex("Memorize and track"):]
                assigned = _assignments(main_part)
                value = re.search(r"assigned the value (\d+)", question).group(1)

                def resolve(v: str) -> str:
                    return v if v.isdigit() else resolve(assigned[v])

                assert {v for v in assigned if resolve(v) == value} == set(outputs) and len(outputs) == 5
            elif task.name == "cwe":
                question_list = text[text.rindex("Below is a numbered list"):].split("\nQuestion")[0]
                listed = re.findall(r"\d+\. (\S+)", question_list)
                counts = Counter(listed).most_common()
                assert {w for w, _ in counts[:10]} == set(outputs) and counts[9][1] > counts[10][1]
            else:  # fwe
                words = text[text.index("coded words. ") + 13:text.index("\nQuestion")].split()
                counts = Counter(words).most_common()
                assert counts[0][0] == "..."  # the noise word the question says to ignore
                assert [w for w, _ in counts[1:4]] == outputs and counts[3][1] > counts[4][1]


def test_scoring_is_rulers_definition():
    preds = ["The numbers are 1234567 and 7654321.", "I do not know", "ABC-def and xyz"]
    refs = [["1234567", "7654321"], ["42"], ["abc-DEF", "uvw", "xyz", "nope"]]
    # string_match_all: per prediction the share of its references contained (case-insensitive), averaged, x100.
    assert string_match_all(preds, refs) == round((1 + 0 + 2 / 4) / 3 * 100, 2) == 50.0
    # string_match_part: per prediction 1 if any reference is contained.
    assert string_match_part(preds, refs) == round(2 / 3 * 100, 2) == 66.67
    assert string_match_all(["x"], [["X"]]) == string_match_part(["x"], [["X"]]) == 100.0
    assert zeta(2.0) == pytest.approx(3.141592653589793**2 / 6, abs=1e-9)


def test_same_seed_same_samples_other_seed_other_samples(bpe):
    for name in ("niah_single_2", "vt", "cwe", "fwe"):
        a, b = (make_samples(TASKS[name], bpe, 2048, 2, seed=7) for _ in range(2))
        c = make_samples(TASKS[name], bpe, 2048, 2, seed=8)
        assert [s.ids for s in a] == [s.ids for s in b]
        assert [s.built.outputs for s in a] != [s.built.outputs for s in c]


def test_bad_input_is_one_clear_line(bpe):
    assert parse_lengths("1k,512,2K,4096,1k") == (512, 1024, 2048, 4096)
    with pytest.raises(UserError, match="length '2x' is not a token count"):
        parse_lengths("1k,2x")
    with pytest.raises(UserError, match="unknown RULER task 'niah'; the tasks are: niah_single_1"):
        select_tasks("vt,niah")
    with pytest.raises(UserError, match="length 100 is too small for niah_single_1"):
        make_samples(TASKS["niah_single_1"], bpe, 100, 1)
    with pytest.raises(UserError, match=r"length 300 is too small for cwe: its template with 11 distinct word"):
        make_samples(TASKS["cwe"], bpe, 300, 1)
    assert sentences("A b. C d! E") == ["A b.", "C d!", "E"]


def test_eval_metadata_must_be_a_json_object(capsys):
    for bad, message in (("{nope", "--metadata is not JSON"), ("[1]", "--metadata must be a JSON object")):
        assert main(["eval", "--model", "unused", "--tasks", "hunyuan_ruler_vt", "--metadata", bad]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.usefixtures("one_thread")
def test_hunyuan_eval_ruler_end_to_end(tmp_path, capsys, bpe):
    folder = tmp_path / "model"  # the tiny preset (a 512-token context) with the haystack-trained vocabulary
    torch.manual_seed(4)
    save_pretrained(HunyuanForCausalLM(ModelConfig.from_preset("tiny", vocab_size=bpe.vocab_size)), folder)
    bpe.save(folder)
    out = tmp_path / "out"
    assert main(["eval", "ruler", "--model", str(folder), "--tasks", "niah_single_1,vt", "--lengths", "1k,2k",
                 "--samples", "1", "--batch-size", "4", "--device", "cpu", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| niah_single_1 |" in printed and "| **average** |" in printed
    assert "beyond the model's context of 512 tokens" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["lengths"] == [1024, 2048] and len(results["samples"]) == 2 * 2
    for s in results["samples"]:
        assert s["prompt_tokens"] + s["max_new_tokens"] <= s["length"]
    for task in ("niah_single_1", "vt"):
        for n in (1024, 2048):
            mine = [s for s in results["samples"] if s["task"] == task and s["length"] == n]
            assert results["scores"][task][str(n)] == pytest.approx(sum(s["score"] for s in mine) / len(mine), abs=0.01)
    assert "| vt |" in (out / "results.md").read_text()
    assert (out / "ruler.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class HalfRight(LM):
    """Replies with the first half of each document's answers (and the prompt seen, for checks)."""

    prompts: list[str] = []

    def loglikelihood(self, requests, disable_tqdm=False):
        raise NotImplementedError

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        raise NotImplementedError

    def generate_until(self, requests, disable_tqdm=False):
        HalfRight.prompts += [r.args[0] for r in requests]
        return [" and ".join(r.doc["outputs"][:max(1, len(r.doc["outputs"]) // 2)]).upper() for r in requests]


def test_lm_eval_tasks_generate_size_and_score_as_ruler(tmp_path, bpe):
    bpe.save(tmp_path)  # a folder with only a tokenizer is enough to size the documents
    meta = {"pretrained": str(tmp_path), "max_seq_lengths": [1024, 2048], "num_samples": 2}
    results = evaluate(HalfRight(), EvalRun(["hunyuan_ruler_niah_single_1", "hunyuan_ruler_vt"], metadata=meta))
    scores = results["results"]
    for task, expected in (("hunyuan_ruler_niah_single_1", 100.0), ("hunyuan_ruler_vt", 40.0)):  # vt: 2 of 5
        assert scores[task]["1024,none"] == scores[task]["2048,none"] == expected
        assert scores[task]["4096,none"] == -1  # not run
    # The prompts lm-eval built are the generator's text plus the answer prefix, within each length.
    niah = [p for p in HalfRight.prompts if p.startswith("A special magic number")]
    assert len(niah) == 4 and all(p.endswith("mentioned in the provided text is") for p in niah)
    assert all(len(bpe.encode_prompt(p)) + 128 <= n for p, n in zip(sorted(niah, key=len), (1024, 1024, 2048, 2048)))
