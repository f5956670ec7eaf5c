"""Our lm-eval model against lm-eval's own `hf` backend (transformers) on the same weights.

Two shapes where transformers runs exactly our math: a dense Llama (no QK-norm, no CLA, untied
head) and a Hunyuan MoE with top-2 routing and CLA off (transformers' `hunyuan_v1_moe`
renormalises the top-k weights, which the release's top-1 does not: top-1 is not comparable).
RoPE is the fp32 variant (alpha 1 = plain RoPE in fp32; without rope_scaling the release rounds
inv_freq to bf16, which transformers does not). Requests are compared at the token level, the
level both backends share, so the two tokenizers play no part.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("lm_eval")
transformers = pytest.importorskip("transformers")
from lm_eval.models.huggingface import HFLM  # noqa: E402
from tokenizers import Tokenizer, models  # noqa: E402

from hunyuan_large import HunyuanForCausalLM, ModelConfig  # noqa: E402
from hunyuan_large.eval.lm import HunyuanLM  # noqa: E402
from hunyuan_large.tokenizer import HunyuanTokenizer  # noqa: E402

from .infer_helpers import TEXTS, one_thread  # noqa: F401,E402 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
FP32_ROPE = {"type": "dynamic", "alpha": 1.0, "factor": 1.0}
MAX_LENGTH = 48


def twins(kind: str, vocab: int) -> tuple[HunyuanForCausalLM, torch.nn.Module]:
    """Our model and transformers' with the same random weights."""
    torch.manual_seed(0)
    common = dict(vocab_size=vocab, use_cla=False, rope_scaling=FP32_ROPE, initializer_range=0.1)
    if kind == "llama":
        cfg = ModelConfig.from_preset("tiny", num_experts=1, use_qk_norm=False, tie_word_embeddings=False, **common)
    else:
        cfg = ModelConfig.from_preset("tiny", num_experts=4, moe_topk=2, **common)
    ours = HunyuanForCausalLM(cfg).eval()
    shape = dict(vocab_size=vocab, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                 num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
                 num_key_value_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim, rms_norm_eps=cfg.rms_norm_eps,
                 max_position_embeddings=cfg.max_position_embeddings, tie_word_embeddings=cfg.tie_word_embeddings,
                 rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta}, pad_token_id=0,
                 bos_token_id=None, eos_token_id=None)
    if kind == "llama":
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**shape))
    else:
        hf = transformers.HunYuanMoEV1ForCausalLM(transformers.HunYuanMoEV1Config(
            num_experts=cfg.num_experts, moe_topk=cfg.moe_topk, **shape))
    hf.load_state_dict(ours.state_dict(), strict=True)
    return ours, hf.eval()


def requests(hf, vocab: int) -> tuple[list, list[list[int]]]:
    """Random (context, continuation) id pairs, greedy continuations, and four-way choice groups."""
    gen = torch.Generator().manual_seed(1)

    def ids(n):
        return torch.randint(3, vocab, (n,), generator=gen).tolist()

    reqs = [((None, None), ids(int(c)), ids(int(k))) for c, k in zip(torch.randint(1, 40, (10,), generator=gen),
                                                                     torch.randint(1, 7, (10,), generator=gen))]
    reqs.append(((None, None), ids(70), ids(3)))  # longer than the context: left-truncated
    for n in (4, 17):  # the model's own greedy continuation: is_greedy must be True
        context, cont = ids(n), []
        for _ in range(3):
            with torch.no_grad():
                cont.append(int(hf(torch.tensor([context + cont])).logits[0, -1].argmax()))
        reqs.append(((None, None), context, cont))
    groups = []
    for n in (5, 12, 23, 30):  # multiple choice: one context, four continuations (1-token and longer)
        context = ids(n)
        groups.append(list(range(len(reqs), len(reqs) + 4)))
        reqs += [((None, None), context, ids(1 if n < 20 else 2)) for _ in range(4)]
    return reqs, groups


@pytest.mark.parametrize("kind", ["llama", "hunyuan_moe_top2"])
def test_loglikelihoods_and_accuracies_equal_the_hf_backend(kind):
    tok = HunyuanTokenizer.train(TEXTS, vocab_size=600, min_frequency=1)
    ours, hf = twins(kind, tok.vocab_size)
    reqs, groups = requests(hf, tok.vocab_size)
    hf_tok = transformers.PreTrainedTokenizerFast(  # ids only: token-level requests never read it
        tokenizer_object=Tokenizer(models.WordLevel({f"t{i}": i for i in range(tok.vocab_size)}, unk_token="t0")),
        pad_token="t0", eos_token="t1")
    theirs = HFLM(pretrained=hf, tokenizer=hf_tok, batch_size=4, max_length=MAX_LENGTH)._loglikelihood_tokens(
        reqs, disable_tqdm=True)
    got = HunyuanLM(model=ours, tokenizer=tok, batch_size=3, max_length=MAX_LENGTH)._loglikelihood_tokens(
        reqs, disable_tqdm=True)
    assert max(abs(a[0] - b[0]) for a, b in zip(got, theirs)) <= 1e-4
    assert [g for _, g in got] == [g for _, g in theirs]
    assert any(g for _, g in got)  # the greedy continuations
    for group in groups:  # the choice each backend picks
        assert max(group, key=lambda i: got[i][0]) == max(group, key=lambda i: theirs[i][0])
