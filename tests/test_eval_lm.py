"""The lm-eval model `hunyuan` against direct full forwards of an independently loaded copy of the model."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("lm_eval")
from lm_eval.api.instance import Instance  # noqa: E402

from hunyuan_large import load_pretrained  # noqa: E402
from hunyuan_large.convert import import_model  # noqa: E402
from hunyuan_large.tokenizer import load_tokenizer  # noqa: E402
from hunyuan_large.eval.lm import HunyuanLM  # noqa: E402

from .import_helpers import llama, save_hf_folder  # noqa: E402
from .infer_helpers import make_model_folder, one_thread  # noqa: F401,E402 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_model_folder(tmp_path_factory.mktemp("model"), seed=3)


@pytest.fixture(scope="module")
def reference(folder):
    """The same weights, loaded separately and never put in the engine's decode layout."""
    return load_pretrained(folder)


def token_logprobs(model, ids: list[int]) -> torch.Tensor:
    """(len(ids) - 1,) log p(ids[t] | ids[:t]) by one full forward."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1]
    return logits.log_softmax(-1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]


def test_loglikelihood_equals_full_forward(folder, reference):
    tok = load_tokenizer(folder)
    pairs = [("The quick brown", " fox jumps"), ("Hello, world! ", "How are you"), ("", "Numbers 12345"),
             ("alpha beta gamma delta. " * 6, " alpha"), ("I am fine,", " thank you.")]
    lm = HunyuanLM(folder, batch_size=2)  # 5 requests: 3 batches of different padded lengths
    got = lm.loglikelihood([Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)], disable_tqdm=True)
    for (context, continuation), (lp, greedy) in zip(pairs, got):
        # lm-eval's split: a context's trailing spaces belong to the continuation; the text follows bos.
        head = context.rstrip(" ")
        whole = [tok.bos_id, *tok.encode(context + continuation, add_special_tokens=False)]
        n_context = 1 + len(tok.encode(head, add_special_tokens=False)) if head else 1
        lps = token_logprobs(reference, whole)[n_context - 1:]
        assert lp == pytest.approx(lps.sum().item(), abs=1e-4)
        with torch.no_grad():
            argmax = reference(torch.tensor([whole])).logits[0, n_context - 1:-1].argmax(-1)
        assert greedy == (argmax == torch.tensor(whole[n_context:])).all().item()


def test_is_greedy_true_for_the_greedy_continuation(folder, reference):
    lm = HunyuanLM(folder, batch_size=4)
    ids = [lm.prefix_token_id, *lm.tok_encode("Hello, world!", add_special_tokens=False)]
    greedy = []
    for _ in range(4):
        with torch.no_grad():
            greedy.append(int(reference(torch.tensor([ids + greedy])).logits[0, -1].argmax()))
    other = greedy[:3] + [(greedy[3] + 1) % lm.tok.vocab_size]
    (lp, hit), (_, miss), empty = lm._loglikelihood_tokens(
        [((None, None), ids, greedy), ((None, None), ids, other), ((None, None), ids, [])])
    assert hit and not miss and empty == (0.0, True)
    assert lp == pytest.approx(token_logprobs(reference, ids + greedy)[-4:].sum().item(), abs=1e-4)


def test_rolling_scores_each_token_once_in_disjoint_windows(folder, reference):
    text = "The quick brown fox jumps over the lazy dog. Zebras vexed wizards; 90817 quirky jugs!"
    lm = HunyuanLM(folder, batch_size=3, max_length=8)
    ids = lm.tok_encode(text, add_special_tokens=False)
    assert len(ids) > 3 * 8
    # Disjoint chunks of 8 predicted tokens; each is scored by a forward over the 8 tokens before its
    # last one (bos first), i.e. a full chunk sees one earlier token and the shorter last chunk more.
    full, expected = [lm.prefix_token_id] + ids, 0.0
    for start in range(0, len(ids), 8):
        end = min(start + 8, len(ids)) + 1  # chunk = full[start + 1: end]
        expected += token_logprobs(reference, full[max(0, end - 9): end])[-(end - start - 1):].sum().item()
    got = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)], disable_tqdm=True)
    assert got[0] == pytest.approx(expected, abs=1e-3)
    # A text within the context: the total log-likelihood of the whole text after bos.
    short = HunyuanLM(folder)
    whole = short.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)], disable_tqdm=True)
    assert whole[0] == pytest.approx(token_logprobs(reference, [lm.prefix_token_id] + ids).sum().item(), abs=1e-4)


def test_generate_until_stops_at_the_stop_string(folder, reference):
    lm = HunyuanLM(folder, batch_size=2)
    prompts = ["Hello, world!", "The quick brown fox", "alpha beta"]
    full = lm.generate_until([Instance("generate_until", {}, (p, {"until": [], "max_gen_toks": 12}), i)
                              for i, p in enumerate(prompts)], disable_tqdm=True)
    for p, text in zip(prompts, full):  # greedy by full forwards, up to a stop id
        ids, out = lm.tok_encode(p), []
        for _ in range(12):
            with torch.no_grad():
                out.append(int(reference(torch.tensor([ids + out])).logits[0, -1].argmax()))
            if out[-1] in lm.stop_ids:
                out.pop()
                break
        assert text == lm.tok.decode(out)
    # Stop strings taken from inside each greedy text: the output is the text before their first occurrence.
    stops = [[t[len(t) // 2: len(t) // 2 + 2], "\n\n"] for t in full]
    cut = lm.generate_until([Instance("generate_until", {}, (p, {"until": s, "max_gen_toks": 12}), i)
                             for i, (p, s) in enumerate(zip(prompts, stops))], disable_tqdm=True)
    assert cut == [t.split(s[0])[0] for t, s in zip(full, stops)]
    assert all(len(c) < len(t) for c, t in zip(cut, full))


@pytest.fixture(scope="module")
def chatml_folder(tmp_path_factory):
    """An imported Llama folder whose ChatML template opens the assistant's turn only on request."""
    src = save_hf_folder(llama(), tmp_path_factory.mktemp("llama"))
    return import_model(src, tmp_path_factory.mktemp("chatml"))


@pytest.mark.parametrize("which", ["release", "chatml"])
def test_chat_template_opens_or_prefills_the_reply(which, folder, chatml_folder):
    lm = HunyuanLM(folder if which == "release" else chatml_folder)
    chat = [{"role": "user", "content": "What is 2 + 2?"}]
    prompt = lm.apply_chat_template(chat)
    assert prompt == lm.tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    if which == "chatml":  # lm-eval generates right after this: the reply's header must be there
        assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert lm.apply_chat_template(chat + [{"role": "assistant", "content": "It is"}], False) == prompt + "It is"
    assert lm.tok_encode(prompt) == lm.tok.encode(prompt, add_special_tokens=False)  # bos already in the text


def test_shared_contexts_equal_full_forwards(folder, reference):
    """Answers after one context (run once, its K/V reused) score as each (context, answer) run whole."""
    lm = HunyuanLM(folder, batch_size=2)
    gen = torch.Generator().manual_seed(7)

    def ids(n):
        return torch.randint(3, lm.tok.vocab_size, (n,), generator=gen).tolist()

    contexts = [ids(n) for n in (3, 17, 9)]
    requests = [((None, None), c, ids(k)) for c in contexts for k in (1, 4, 2)]  # groups of 3 answers
    requests.append(((None, None), ids(5), ids(3)))  # alone
    got = lm._loglikelihood_tokens(requests, disable_tqdm=True)
    for (_, context, continuation), (lp, _) in zip(requests, got):
        expected = token_logprobs(reference, context + continuation)[-len(continuation):].sum().item()
        assert lp == pytest.approx(expected, abs=1e-4)
