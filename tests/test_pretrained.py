"""HF-format load/save: layouts, exact round trips, streaming from meta, clear errors."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from hunyuan_large.errors import UserError
from hunyuan_large.pretrained import CheckpointError, hf_tensors, load_pretrained, save_pretrained
from hunyuan_large.runtime import parse_size

from .conftest import make_model


def _official_names(folder):
    if (folder / "model.safetensors").exists():
        return set(load_file(folder / "model.safetensors"))
    return set(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"])


def test_round_trip_of_reference_is_bit_exact_with_official_names(tiny_ref, tmp_path):
    model = load_pretrained(tiny_ref)
    save_pretrained(model, tmp_path)
    assert _official_names(tmp_path) == set(load_file(tiny_ref / "model.safetensors"))
    saved, original = load_file(tmp_path / "model.safetensors"), load_file(tiny_ref / "model.safetensors")
    assert all(torch.equal(saved[k], original[k]) for k in original)
    written = json.loads((tmp_path / "config.json").read_text())
    assert set(written) == set(json.loads((tiny_ref / "config.json").read_text()))
    again = load_pretrained(tmp_path)
    for (n, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), n


@pytest.mark.parametrize("overrides", [{}, {"tie_word_embeddings": False}, {"num_experts": 1}])
def test_sharded_save_and_load(tmp_path, overrides):
    model = make_model(**overrides)
    save_pretrained(model, tmp_path, max_shard_size="100KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1 and all((tmp_path / s).exists() for s in shards)
    assert ("lm_head.weight" in index["weight_map"]) == (not model.config.tie_word_embeddings)
    again = load_pretrained(tmp_path)
    ids = torch.randint(0, 256, (1, 7))
    assert torch.equal(model(ids).logits, again(ids).logits)
    # A later single-file save replaces the shards instead of being shadowed by them.
    save_pretrained(model, tmp_path)
    assert not (tmp_path / "model.safetensors.index.json").exists()
    assert not list(tmp_path.glob("model-*-of-*.safetensors"))


def test_legacy_bin_shards_with_index(tmp_path):
    model = make_model(seed=5)
    save_pretrained(model, tmp_path / "src")
    tensors = load_file(tmp_path / "src" / "model.safetensors")
    names = sorted(tensors)
    half = len(names) // 2
    out = tmp_path / "bin"
    out.mkdir()
    (out / "config.json").write_text((tmp_path / "src" / "config.json").read_text())
    weight_map = {}
    for i, part in enumerate((names[:half], names[half:])):
        fname = f"pytorch_model-0000{i + 1}-of-00002.bin"
        torch.save({n: tensors[n].to(torch.bfloat16) for n in part}, out / fname)
        weight_map.update({n: fname for n in part})
    (out / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    loaded = load_pretrained(out)
    for name, t in hf_tensors(loaded).items():
        assert torch.equal(t, tensors[name].to(torch.bfloat16).float()), name


def test_ignores_rotary_buffers_and_tied_lm_head(tiny_ref, tmp_path):
    tensors = load_file(tiny_ref / "model.safetensors")
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    save_file(tensors, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((tiny_ref / "config.json").read_text())
    model = load_pretrained(tmp_path)
    assert torch.equal(model.lm_head.weight, tensors["model.embed_tokens.weight"])


def _write(tmp_path, tensors, config_from):
    save_file(tensors, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((config_from / "config.json").read_text())


def test_errors_name_missing_unexpected_and_misshaped_tensors(tiny_ref, tmp_path):
    base = load_file(tiny_ref / "model.safetensors")
    missing = dict(base)
    del missing["model.layers.2.mlp.experts.3.up_proj.weight"]
    _write(tmp_path, missing, tiny_ref)
    with pytest.raises(CheckpointError, match=r"lacks 1 tensors: model\.layers\.2\.mlp\.experts\.3\.up_proj"):
        load_pretrained(tmp_path)
    extra = dict(base, **{"model.layers.1.self_attn.k_proj.weight": torch.zeros(32, 64)})
    _write(tmp_path, extra, tiny_ref)
    with pytest.raises(CheckpointError, match=r"unexpected tensors: model\.layers\.1\.self_attn\.k_proj"):
        load_pretrained(tmp_path)
    bad = dict(base, **{"model.norm.weight": torch.ones(65)})
    _write(tmp_path, bad, tiny_ref)
    with pytest.raises(CheckpointError, match=r"model\.norm\.weight has shape \[65\].*expects \[64\]"):
        load_pretrained(tmp_path)


def test_missing_folder_or_weights_is_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pretrained(tmp_path / "nope")
    make_model().config.save(tmp_path)
    with pytest.raises(CheckpointError, match="no weights in"):
        load_pretrained(tmp_path)


def test_meta_build_reads_no_weights(tiny_ref):
    model = load_pretrained(tiny_ref, device="meta")
    assert all(p.is_meta for p in model.parameters())


def test_bf16_save_keeps_router_fp32_in_memory(tmp_path):
    model = make_model()
    save_pretrained(model, tmp_path, dtype="bfloat16")
    assert json.loads((tmp_path / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert load_file(tmp_path / "model.safetensors")["model.norm.weight"].dtype == torch.bfloat16
    loaded = load_pretrained(tmp_path, device="cpu", dtype="bfloat16")
    assert loaded.model.layers[0].mlp.gate.wg.weight.dtype == torch.float32
    assert loaded.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size(1234) == 1234


def _folder_like(tiny_ref, tmp_path):
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((tiny_ref / name).read_bytes())
    return tmp_path


def test_truncated_safetensors_is_one_line(tiny_ref, tmp_path):
    folder = _folder_like(tiny_ref, tmp_path)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])  # a download cut short
    with pytest.raises(CheckpointError, match="not a readable safetensors file, perhaps truncated"):
        load_pretrained(folder)


@pytest.mark.parametrize("text", ["[1, 2]", '"llama"', "null"])
def test_config_json_that_is_not_an_object_is_one_line(tiny_ref, tmp_path, text):
    folder = _folder_like(tiny_ref, tmp_path)
    (folder / "config.json").write_text(text)
    with pytest.raises(UserError, match="must hold a JSON object"):
        load_pretrained(folder)


class _Payload:
    """Unpickling this would run `touch`: a weights file must never be able to do that."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("zip_format", [True, False])
def test_a_malicious_pickle_bin_is_refused_and_never_runs(tiny_ref, tmp_path, zip_format):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_bytes((tiny_ref / "config.json").read_bytes())
    marker = tmp_path / "pwned"
    torch.save({"model.embed_tokens.weight": _Payload(marker)}, folder / "pytorch_model.bin",
               _use_new_zipfile_serialization=zip_format)
    with pytest.raises(CheckpointError, match="holds Python objects besides tensors; it is not unpickled"):
        load_pretrained(folder)
    assert not marker.exists()


def test_non_finite_weights_warn_at_load(tiny_ref, tmp_path):
    folder = _folder_like(tiny_ref, tmp_path)
    weights = load_file(folder / "model.safetensors")
    name = "model.layers.0.mlp.shared_mlp.up_proj.weight"
    weights[name][0, 0] = float("nan")
    save_file(weights, folder / "model.safetensors")
    with pytest.warns(UserWarning, match=f"1 tensors hold NaN or inf values \\({name}\\)"):
        load_pretrained(folder)
