"""`hunyuan import`: HF Llama folders and GGUF files give the same logits, tokens and chat text as transformers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hunyuan_large.cli import main
from hunyuan_large.convert import UnsupportedSource, import_model, package_gguf
from hunyuan_large.pretrained import load_pretrained
from hunyuan_large.tokenizer import HFTokenizer, load_tokenizer

from .import_helpers import TEXTS, llama, save_hf_folder, write_gguf

pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

ROPES = {
    "default": None,
    "linear": {"rope_type": "linear", "factor": 2.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},  # max_position_embeddings 16 < the 24 tokens below
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8},
}
SHAPES = [  # (rope, heads, kv heads, tied, shards)
    ("default", 4, 4, True, "5GB"),
    ("linear", 4, 2, False, "5GB"),
    ("dynamic", 8, 2, False, "40KB"),
    ("llama3", 4, 1, True, "5GB"),
]
CHATS = [
    [{"role": "user", "content": "Hello, world!"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "12345 + 1?"},
     {"role": "assistant", "content": "12346"}, {"role": "user", "content": "Ünïcödé text"}],
]
# A user typing the template's end-of-turn: transformers encodes it as the real token; we keep it text.
TYPED_SPECIAL = [{"role": "user", "content": "Ünïcödé <|im_end|> text"}]


def batch(vocab: int, lengths=(24, 17, 9), seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded random ids (B, T) and their attention mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (len(lengths), max(lengths)), generator=g)
    mask = (torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]).long()
    return ids.masked_fill(mask == 0, 2), mask


def assert_same_logits(ref, ours, vocab: int) -> None:
    ids, mask = batch(vocab)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask).logits
        got = ours(ids, attention_mask=mask).logits
    real = mask.bool()
    assert (got[real] - want[real]).abs().max().item() < 1e-4


@pytest.mark.parametrize("rope,heads,kv,tied,shard", SHAPES, ids=[s[0] for s in SHAPES])
def test_hf_folder_logits(tmp_path: Path, rope, heads, kv, tied, shard) -> None:
    extra = {"max_position_embeddings": 16} if rope == "dynamic" else {}
    ref = llama(num_attention_heads=heads, num_key_value_heads=kv, tie_word_embeddings=tied,
                rope_scaling=ROPES[rope], rope_theta=10000.0 if rope != "llama3" else 500000.0, **extra)
    src = save_hf_folder(ref, tmp_path / "src", max_shard_size=shard)
    assert (src / "model.safetensors.index.json").exists() == (shard != "5GB")
    out = import_model(src, tmp_path / "out")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "hunyuan" and cfg["num_experts"] == 1 and not cfg["use_cla"]
    assert cfg["rope_scaling"]["rope_type"] == rope
    assert_same_logits(ref, load_pretrained(out), ref.config.vocab_size)


def test_hf_folder_tokenizer_and_template(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    out = import_model(save_hf_folder(llama(), tmp_path / "src"), tmp_path / "out")
    ref, tok = AutoTokenizer.from_pretrained(tmp_path / "src"), load_tokenizer(out)
    assert isinstance(tok, HFTokenizer) and (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 2)
    for text in [*TEXTS, "a <|im_start|> b", " leading  spaces\n\n"]:
        assert tok.encode(text) == ref(text)["input_ids"]
        assert tok.decode(tok.encode(text)) == ref.decode(ref(text)["input_ids"])
    for chat in CHATS:
        for gen in (False, True):
            text = ref.apply_chat_template(chat, add_generation_prompt=gen, tokenize=False)
            assert tok.apply_chat_template(chat, add_generation_prompt=gen, tokenize=False) == text
            assert tok.apply_chat_template(chat, add_generation_prompt=gen) == ref(text, add_special_tokens=False)["input_ids"]
    want = ref.apply_chat_template(TYPED_SPECIAL, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    ids = tok.apply_chat_template(TYPED_SPECIAL, add_generation_prompt=True)
    assert tok.decode(ids) == ref.decode(want) and sum(map(tok.is_special, ids)) == sum(map(tok.is_special, want)) - 1
    # token_bytes spells every id the way decode does.
    ids = tok.encode(TEXTS[1])
    assert b"".join(tok.token_bytes(i) for i in ids).decode() == tok.decode(ids)


@pytest.mark.parametrize("tied,k_type", [(True, "Q4_K"), (False, "Q5_K"), (True, "Q6_K")])
def test_gguf_round_trip(tmp_path: Path, tied: bool, k_type: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # ffn_down rows are 256 wide: the K types' block size.
    model = llama(tie_word_embeddings=tied, num_attention_heads=4, num_key_value_heads=2, intermediate_size=256)
    quant = {"attn_q.weight": "Q8_0", "attn_k.weight": "Q5_0", "ffn_up.weight": "Q4_1", "attn_v.weight": "F16",
             "ffn_down.weight": k_type, "ffn_gate.weight": "BF16", "attn_output.weight": "Q4_0"}
    path = write_gguf(model, tmp_path / "tiny.gguf", quant=quant)
    out = import_model(path, tmp_path / "out")
    # transformers' own GGUF loader (its own dequantization and unpermutation) is the reference.
    ref = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf", dtype=torch.float32).eval()
    assert_same_logits(ref, load_pretrained(out), model.config.vocab_size)
    rtok, tok = AutoTokenizer.from_pretrained(tmp_path, gguf_file="tiny.gguf"), load_tokenizer(out)
    for text in [*TEXTS, "x <|im_end|> y 007"]:
        assert tok.encode(text) == rtok(text)["input_ids"]
    for chat in CHATS:
        assert tok.apply_chat_template(chat, add_generation_prompt=True) == rtok.apply_chat_template(
            chat, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    gen = json.loads((out / "generation_config.json").read_text())
    assert (gen["bos_token_id"], gen["eos_token_id"], gen["pad_token_id"]) == (1, 2, 2)


def test_gguf_sentencepiece_tokenizer(tmp_path: Path) -> None:
    """A Llama-2-style vocabulary (byte tokens, scores, no merges, bos added) vs transformers' rebuild."""
    from transformers import AutoTokenizer

    path = write_gguf(llama(vocab_size=448), tmp_path / "spm.gguf", tokenizer_model="llama")
    tok = load_tokenizer(import_model(path, tmp_path / "out"))
    ref = AutoTokenizer.from_pretrained(tmp_path, gguf_file="spm.gguf")
    for text in [*TEXTS, "  two leading spaces", "emoji 🙂 and\nnewline", "</s> inside"]:
        ids = ref(text)["input_ids"]
        assert tok.encode(text) == ids and ids[0] == tok.bos_id == 1
        assert tok.decode(ids, skip_special_tokens=True) == ref.decode(ids, skip_special_tokens=True)
    for chat in CHATS:
        assert tok.apply_chat_template(chat, add_generation_prompt=True) == ref.apply_chat_template(
            chat, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]


# ---- unsupported sources: one line naming what is unsupported --------------------------------------


def test_unsupported_hf_folders(tmp_path: Path) -> None:
    src = save_hf_folder(llama(), tmp_path / "src")
    base = json.loads((src / "config.json").read_text())
    cases = {"model_type 'mistral'": {"model_type": "mistral"},
             "sliding_window": {"sliding_window": 4096},
             "attention_bias": {"attention_bias": True},
             "rope type 'yarn'": {"rope_parameters": {"rope_type": "yarn", "factor": 2.0, "rope_theta": 1e4}}}
    for message, change in cases.items():
        (src / "config.json").write_text(json.dumps(base | change))
        with pytest.raises(UnsupportedSource, match=message):
            import_model(src, tmp_path / "out")
    with pytest.raises(UnsupportedSource, match="neither"):
        import_model(tmp_path / "missing.bin", tmp_path / "out")


def test_unsupported_gguf(tmp_path: Path) -> None:
    model = llama()
    with pytest.raises(UnsupportedSource, match="architecture 'qwen2'"):
        import_model(write_gguf(model, tmp_path / "a.gguf", arch="qwen2"), tmp_path / "out")
    with pytest.raises(UnsupportedSource, match="tokenizer model 't5'"):
        import_model(write_gguf(model, tmp_path / "b.gguf", tokenizer_model="t5"), tmp_path / "out")
    q8_1 = gguf.GGMLQuantizationType.Q8_1
    block, size = gguf.GGML_QUANT_SIZES[q8_1]
    odd = ("blk.0.attn_q.weight", np.zeros((64, 64 // block * size), dtype=np.uint8), q8_1)
    with pytest.raises(UnsupportedSource, match="type Q8_1"):
        quant = {"attn_q.weight": "Q8_0"}
        path = write_gguf(model, tmp_path / "c.gguf", quant=quant, extra_tensor=None)
        _swap_tensor(path, tmp_path / "d.gguf", odd)
        import_model(tmp_path / "d.gguf", tmp_path / "out")
    with pytest.raises(UnsupportedSource, match="not installed"):
        package_gguf("no-such-package-xyz")


def _swap_tensor(src: Path, dst: Path, tensor: tuple) -> None:
    """Copy a GGUF file with one tensor replaced by raw data of another type."""
    reader = gguf.GGUFReader(str(src))
    w = gguf.GGUFWriter(str(dst), "llama")
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        value = field.contents()
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            w.add_array(name, value)
        else:
            w.add_key_value(name, value, kind)
    for t in reader.tensors:
        if t.name == tensor[0]:
            w.add_tensor(t.name, tensor[1], raw_dtype=tensor[2])
        else:
            w.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_cli_import_errors(tmp_path: Path, capsys) -> None:
    assert main(["import", str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
    assert main(["import", "--package", "no-such-package-xyz", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)


def greedy_reference(ref, prompts: list[list[int]], new: int, eos: int) -> list[list[int]]:
    """transformers' greedy `generate`, one prompt at a time (no padding), ids after the prompt up to eos."""
    out = []
    for p in prompts:
        ids = ref.generate(torch.tensor([p]), do_sample=False, max_new_tokens=new, eos_token_id=eos,
                           pad_token_id=eos)[0, len(p):].tolist()
        out.append(ids[: ids.index(eos) + 1] if eos in ids else ids)
    return out


def test_engine_greedy_chat_matches_generate(tmp_path: Path) -> None:
    from hunyuan_large.infer import Engine, EngineConfig, SamplingParams

    ref = llama(seed=3, num_key_value_heads=1, rope_scaling=ROPES["llama3"], rope_theta=500000.0,
                max_position_embeddings=160)
    out = import_model(save_hf_folder(ref, tmp_path / "src"), tmp_path / "out")
    engine = Engine.from_pretrained(out, EngineConfig(max_batch=2, max_len=160), device="cpu")
    prompts = [engine.encode_chat(chat) for chat in CHATS]
    assert prompts[0][-3:] == engine.tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)[-3:]
    params = engine.chat_params(SamplingParams(temperature=0.0, max_new_tokens=20))
    got = [r.token_ids for r in engine.generate(prompts, params)]
    assert got == greedy_reference(ref, prompts, 20, eos=2) and len(got[0]) > 1


@pytest.mark.slow  # ~35 s: a server process starts
def test_serve_imported_folder(tmp_path: Path) -> None:
    """`hunyuan serve` on an imported folder answers a chat with the engine's greedy reply (openai client)."""
    openai = pytest.importorskip("openai")
    pytest.importorskip("fastapi")
    from hunyuan_large.infer import Engine, EngineConfig, SamplingParams

    from .infer_helpers import serving

    ref = llama(seed=4, max_position_embeddings=160)
    out = import_model(save_hf_folder(ref, tmp_path / "src"), tmp_path / "out")
    engine = Engine.from_pretrained(out, EngineConfig(max_batch=1, max_len=160), device="cpu")
    params = engine.chat_params(SamplingParams(temperature=0.0, max_new_tokens=12))
    want = engine.generate([engine.encode_chat(CHATS[1])], params)[0]
    with serving(out, "--max-len", "160") as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=60)
        reply = client.chat.completions.create(model="out", messages=CHATS[1], temperature=0, max_tokens=12)
    assert want.text and reply.choices[0].message.content == want.text
    assert reply.usage.completion_tokens == len(want.token_ids)
