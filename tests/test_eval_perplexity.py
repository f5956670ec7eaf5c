"""`hunyuan eval perplexity`: sliding windows score every token once; results match direct forwards."""

from __future__ import annotations

import json
import math

import pytest
import torch

from hunyuan_large import load_pretrained
from hunyuan_large.cli import main
from hunyuan_large.errors import UserError
from hunyuan_large.eval.perplexity import sliding_windows, text_perplexity
from hunyuan_large.tokenizer import HunyuanTokenizer

from .infer_helpers import make_model_folder, one_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
TEXT = "The quick brown fox jumps over the lazy dog. Zebras vexed wizards; 90817 quirky jugs! Hello, world."


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = make_model_folder(tmp_path_factory.mktemp("model"), seed=4)
    tok = HunyuanTokenizer.from_pretrained(folder)
    ids = [tok.bos_id, *tok.encode(TEXT, add_special_tokens=False)]
    return folder, load_pretrained(folder), tok, ids


def logprobs(model, ids: list[int]) -> torch.Tensor:
    """(len(ids) - 1,) log p(ids[t] | ids[:t]) by one forward."""
    with torch.no_grad():
        lp = model(torch.tensor([ids])).logits[0, :-1].log_softmax(-1)
    return lp.gather(1, torch.tensor(ids[1:])[:, None])[:, 0]


@pytest.mark.parametrize("n,window,stride", [(50, 8, 8), (50, 8, 3), (9, 8, 1), (5, 8, 4), (40, 16, 16)])
def test_windows_score_each_token_once_with_enough_context(n, window, stride):
    scored = []
    for begin, end, k in sliding_windows(n, window, stride):
        assert end - 1 - begin <= window  # inputs per forward
        first = end - k
        scored += range(first, end)
        assert first == 1 or first - begin >= window - stride  # context of the first new token
    assert scored == list(range(1, n))


def test_stride_equal_to_window_is_disjoint_chunks(setup):
    _, model, tok, ids = setup
    assert len(ids) > 3 * 8
    got = text_perplexity(model, tok, [("t", TEXT)], window=8, stride=8, batch_size=3, progress=False)[0]
    # Chunks ids[1:9], ids[9:17], ...: each predicted from the token before it onwards.
    expected = -sum(logprobs(model, ids[s - 1: s + 8]).sum().item() for s in range(1, len(ids), 8))
    assert got.nll == pytest.approx(expected, abs=1e-3)
    assert got.tokens == len(ids) - 1 and got.bytes == len(TEXT.encode())
    assert got.bits_per_byte == pytest.approx(expected / got.bytes / math.log(2))
    assert got.perplexity == pytest.approx(math.exp(expected / got.tokens))


def test_sliding_window_matches_each_token_scored_alone(setup):
    _, model, tok, ids = setup
    window, stride = 8, 3
    got = text_perplexity(model, tok, [("t", TEXT)], window, stride, batch_size=4, progress=False)[0]
    # Token p is predicted by the first window whose end passes it: window w starts at w * stride and
    # covers inputs up to w * stride + window - 1; so its context starts at that w * stride.
    expected = 0.0
    for p in range(1, len(ids)):
        w = max(0, -(-(p - window) // stride))  # smallest w with w * stride + window >= p
        expected -= logprobs(model, ids[w * stride: p + 1])[-1].item()
    assert got.nll == pytest.approx(expected, abs=1e-3)


def test_text_within_the_window_is_one_forward(setup):
    _, model, tok, ids = setup
    got = text_perplexity(model, tok, [("t", TEXT)], window=len(ids), stride=1, progress=False)[0]
    assert got.nll == pytest.approx(-logprobs(model, ids).sum().item(), abs=1e-4)


def test_cli_json_and_bad_stride(setup, tmp_path, capsys):
    folder, model, tok, ids = setup
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(TEXT)
    b.write_text("Hello, world!")
    assert main(["eval", "perplexity", "--model", str(folder), str(a), str(b), "--window", "8", "--stride", "8",
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    direct = text_perplexity(model, tok, [("a", TEXT), ("b", "Hello, world!")], 8, 8, progress=False)
    assert [r["name"] for r in rows] == [str(a), str(b), "total"]
    assert rows[0]["mean_nll"] == pytest.approx(direct[0].mean_nll, abs=1e-5)
    total_nll = direct[0].nll + direct[1].nll
    assert rows[2]["bits_per_byte"] == pytest.approx(total_nll / (direct[0].bytes + direct[1].bytes) / math.log(2),
                                                     abs=1e-5)
    with pytest.raises(UserError, match="stride"):
        text_perplexity(model, tok, [("a", TEXT)], window=8, stride=9)
    assert main(["eval", "perplexity", "--model", str(folder), str(tmp_path / "missing.txt")]) == 2
