"""Post-training data: jsonl formats with bad-line reporting, the assistant-token mask, packing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hunyuan_large.posttrain.chat_mask import tokens_and_mask
from hunyuan_large.posttrain.data import PostDataError, Report, parse_pair, parse_sft, read_jsonl
from hunyuan_large.tokenizer import HunyuanTokenizer, load_tokenizer

from .import_helpers import TEXTS, tiny_hf_tokenizer, tokenizer_config

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "The quick fox?"},
    {"role": "assistant", "content": "Hello, world!"},
    {"role": "user", "content": "Numbers 12345"},
    {"role": "assistant", "content": "alpha beta gamma"},
]


def _hand(pieces: list[tuple[list[int], bool]]) -> tuple[list[int], list[bool]]:
    ids = [i for p, _ in pieces for i in p]
    return ids, [m for p, m in pieces for _ in p]


def test_release_template_mask_is_assistant_content_and_eos() -> None:
    tok = HunyuanTokenizer.train(TEXTS, vocab_size=600, min_frequency=1)
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    sot, ex4, ex0, eos = (tok.token_id(n) for n in ("<|startoftext|>", "<|extra_4|>", "<|extra_0|>", "<|eos|>"))
    c = [m["content"] for m in CONVERSATION]
    # SPEC §4: <|startoftext|>sys<|extra_4|> user1<|extra_0|> reply<|eos|> <|startoftext|>user2<|extra_0|> reply<|eos|>
    want = _hand([([sot, *enc(c[0]), ex4, *enc(c[1]), ex0], False), ([*enc(c[2]), eos], True),
                  ([sot, *enc(c[3]), ex0], False), ([*enc(c[4]), eos], True)])
    assert tokens_and_mask(tok, CONVERSATION) == want


def test_chatml_template_mask_stops_at_im_end(tmp_path: Path) -> None:
    tiny_hf_tokenizer().save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config()))
    tok = load_tokenizer(tmp_path)
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    start, end = enc("<|im_start|>") + enc("<|im_end|>")
    c = [m["content"] for m in CONVERSATION]
    turn = lambda role, text: [start, *enc(f"{role}\n{text}"), end, *enc("\n")]  # noqa: E731
    # The template's newline after <|im_end|> and the next "<|im_start|>assistant\n" are not the assistant's.
    want = _hand([(turn("system", c[0]) + turn("user", c[1]) + [start, *enc("assistant\n")], False),
                  ([*enc(c[2]), end], True), (enc("\n") + turn("user", c[3]) + [start, *enc("assistant\n")], False),
                  ([*enc(c[4]), end], True), (enc("\n"), False)])
    assert tokens_and_mask(tok, CONVERSATION) == want


def test_bad_lines_are_reported_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "sft.jsonl"
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path.write_text("\n".join([json.dumps(good), "{not json", json.dumps({"messages": [{"role": "user", "content": "q"}]}),
                               json.dumps({"messages": [{"role": "bot", "content": "x"}]}), json.dumps(good)]) + "\n")
    report = Report()
    assert len(read_jsonl([str(path)], parse_sft, report=report)) == 2
    assert report.bad == 3
    assert [m.split(": ")[0] for m in report.messages] == [f"{path}:{n}" for n in (2, 3, 4)]
    assert "not valid JSON" in report.messages[0] and "no assistant message" in report.messages[1]
    assert "'bot'" in report.messages[2]
    with pytest.raises(PostDataError, match=f"{path}:2: "):
        read_jsonl([str(path)], parse_sft, strict=True)


def test_pair_formats() -> None:
    prompt = [{"role": "user", "content": "q"}]
    a = parse_pair({"prompt": prompt, "chosen": "yes", "rejected": [{"role": "assistant", "content": "no"}]})
    assert a.chosen == [{"role": "assistant", "content": "yes"}] and a.rejected[0]["content"] == "no"
    for bad in ({"prompt": prompt, "chosen": "x"}, {"prompt": [{"role": "assistant", "content": "x"}], "chosen": "a",
                                                      "rejected": "b"}):
        with pytest.raises(ValueError):
            parse_pair(bad)


def test_a_conversation_the_template_refuses_is_a_bad_line(tmp_path: Path) -> None:
    tok = HunyuanTokenizer.train(TEXTS, vocab_size=600, min_frequency=1)  # refuses a late system message
    path = tmp_path / "sft.jsonl"
    late = [{"role": "user", "content": "q"}, {"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]
    ok = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    path.write_text(json.dumps({"messages": ok}) + "\n" + json.dumps({"messages": late}) + "\n")
    report = Report()
    got = read_jsonl([str(path)], lambda r: tokens_and_mask(tok, parse_sft(r)), report=report)
    assert got == [tokens_and_mask(tok, ok)]
    assert report.bad == 1 and report.messages[0].startswith(f"{path}:2: message 1 is a system message")
