"""Model folders (HF layout): config.json + weights under the official names; distinct from a
run's training checkpoints (train/run_state.py).

Reads one `model.safetensors`, sharded safetensors with `model.safetensors.index.json`, or legacy
`pytorch_model*.bin` (with `pytorch_model.bin.index.json`), always with `weights_only=True`.
Loading streams one shard at a time into a model allocated once (built on `meta`, then
materialised), so two full copies never coexist. Saving writes safetensors, sharded by size.
Routed experts are stacked in memory and unstacked to `mlp.experts.{e}.*_proj.weight` on disk.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import ModelConfig
from .errors import UserError
from .model import HunyuanForCausalLM
from .runtime import DTYPES, parse_size, resolve_device, resolve_dtype

SAFE_SINGLE, SAFE_INDEX = "model.safetensors", "model.safetensors.index.json"
BIN_SINGLE, BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
# Non-persistent RoPE buffers some exporters write anyway; never weights.
_ROTARY = re.compile(r"rotary_emb\.(inv_freq|cos_cached|sin_cached)$")


class CheckpointError(UserError):
    """A model folder or weight file that does not match the model."""


def hf_tensors(model: HunyuanForCausalLM) -> dict[str, torch.Tensor]:
    """Official tensor name -> the view of our parameter that holds it (experts unstacked)."""
    out: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():  # a tied lm_head is deduplicated away here
        if name.endswith(".experts.gate_up_proj"):
            prefix, width = name.removesuffix(".gate_up_proj"), p.shape[1] // 2
            for e in range(p.shape[0]):
                out[f"{prefix}.{e}.gate_proj.weight"] = p[e, :width]
                out[f"{prefix}.{e}.up_proj.weight"] = p[e, width:]
        elif name.endswith(".experts.down_proj"):
            prefix = name.removesuffix(".down_proj")
            for e in range(p.shape[0]):
                out[f"{prefix}.{e}.down_proj.weight"] = p[e]
        else:
            out[name] = p
    return out


def _weight_files(folder: Path) -> tuple[list[Path], dict[str, str] | None]:
    """The weight files of a folder and, when sharded, its weight_map."""
    for single, index in ((SAFE_SINGLE, SAFE_INDEX), (BIN_SINGLE, BIN_INDEX)):
        if (folder / single).exists():
            return [folder / single], None
        if (folder / index).exists():
            try:
                weight_map = json.loads((folder / index).read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise CheckpointError(f"{folder / index} is not a valid index file ({e})") from None
            files = [folder / f for f in dict.fromkeys(weight_map.values())]
            missing = [str(f) for f in files if not f.exists()]
            if missing:
                raise CheckpointError(f"shards listed in {index} are missing: {', '.join(missing[:5])}")
            return files, weight_map
    raise CheckpointError(
        f"no weights in {folder} (expected {SAFE_SINGLE}, {SAFE_INDEX}, {BIN_SINGLE} or {BIN_INDEX})"
    )


def _listing(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


def _check_names(found: set[str], targets: dict[str, torch.Tensor], tied: bool) -> None:
    ignorable = {n for n in found if _ROTARY.search(n) or (tied and n == "lm_head.weight")}
    missing = sorted(set(targets) - found)
    unexpected = sorted(found - set(targets) - ignorable)
    if missing:
        raise CheckpointError(f"checkpoint lacks {len(missing)} tensors: {_listing(missing)}")
    if unexpected:
        raise CheckpointError(f"checkpoint has {len(unexpected)} unexpected tensors: {_listing(unexpected)}")


@contextlib.contextmanager
def _open_safetensors(path: Path):
    """safe_open, with a truncated or corrupt file as one line."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            yield f
    except SafetensorError as e:
        raise CheckpointError(f"{path} is not a readable safetensors file, perhaps truncated ({e})") from None


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    """A legacy .bin state dict, unpickled with weights_only=True: tensors only, never code."""
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) pickles cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path} holds Python objects besides tensors; it is not unpickled, since that "
                              "could run code (convert it to safetensors where it came from)") from None
    except Exception as e:
        raise CheckpointError(f"cannot read {path}: {str(e).splitlines()[0][:200]}") from None


def _shard_tensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of one shard, one tensor in memory at a time for safetensors."""
    if path.suffix == ".safetensors":
        with _open_safetensors(path) as f:
            for name in f.keys():
                yield name, f.get_tensor(name)
        return
    state = _load_bin(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a state dict (it holds a {type(state).__name__})")
    yield from state.items()


def _safetensors_names(path: Path) -> set[str]:
    with _open_safetensors(path) as f:
        return set(f.keys())


@torch.no_grad()
def load_weights(model: HunyuanForCausalLM, folder: str | Path) -> None:
    """Stream the weights of a model folder into `model` (already materialised)."""
    folder = Path(folder)
    files, weight_map = _weight_files(folder)
    targets = hf_tensors(model)
    tied = model.config.tie_word_embeddings
    if weight_map is not None:
        found = set(weight_map)
    elif files[0].suffix == ".safetensors":
        found = _safetensors_names(files[0])
    else:
        found = None  # a single .bin: names known only once loaded
    if found is not None:
        _check_names(found, targets, tied)
    loaded: set[str] = set()
    non_finite: list[str] = []
    for path in files:
        for name, tensor in _shard_tensors(path):
            loaded.add(name)
            target = targets.get(name)
            if target is None:
                continue  # ignorable (checked above) or caught by the check below
            if tuple(tensor.shape) != tuple(target.shape):
                raise CheckpointError(
                    f"tensor {name} has shape {list(tensor.shape)} in {path.name}, "
                    f"the model expects {list(target.shape)}"
                )
            target.copy_(tensor)
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                non_finite.append(name)
    _check_names(loaded, targets, tied)
    if non_finite:
        warnings.warn(f"{folder}: {len(non_finite)} tensors hold NaN or inf values ({_listing(non_finite, 3)}); "
                      "the model's outputs will be NaN", stacklevel=2)


def load_pretrained(
    path: str | Path, device: str | torch.device = "auto", dtype: torch.dtype | str | None = None,
    config: ModelConfig | None = None,
) -> HunyuanForCausalLM:
    """Build the model of a folder on `meta`, materialise it on `device`, stream its weights.

    dtype defaults to float32 on CPU and to the config's `torch_dtype` elsewhere. With
    device="meta" the model is only built (no weights read), e.g. for accounting. `config`
    replaces the folder's (same shapes; e.g. a run's routing, capacity or RoPE): every layer is
    built from it, so none keeps the folder's settings.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"model folder {folder} does not exist")
    cfg = config or ModelConfig.load(folder)
    dev = resolve_device(device)
    default = torch.float32 if dev.type in ("cpu", "meta") else resolve_dtype(cfg.torch_dtype, torch.bfloat16)
    dt = resolve_dtype(dtype, default)
    with torch.device("meta"):
        model = HunyuanForCausalLM(cfg).to(dt)
    model.keep_router_fp32()
    if dev.type != "meta":
        model.to_empty(device=dev)
        model.tie_weights()
        load_weights(model, folder)
    return model.eval()


def _plan_shards(sizes: list[tuple[str, int]], limit: int) -> list[list[str]]:
    shards: list[list[str]] = [[]]
    used = 0
    for name, nbytes in sizes:
        if shards[-1] and used + nbytes > limit:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += nbytes
    return shards


def save_pretrained(
    model: HunyuanForCausalLM,
    path: str | Path,
    max_shard_size: int | str = "5GB",
    dtype: torch.dtype | str | None = None,
) -> None:
    """Write config.json + safetensors weights under the official names, sharded by size."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    targets = hf_tensors(model)
    dt = resolve_dtype(dtype, next(iter(targets.values())).dtype)
    limit = parse_size(max_shard_size)
    itemsize = torch.empty((), dtype=dt).element_size()
    shards = _plan_shards([(n, t.numel() * itemsize) for n, t in targets.items()], limit)
    names = [SAFE_SINGLE] if len(shards) == 1 else [
        f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))
    ]
    # Weight files of an earlier save that this one does not overwrite would shadow it.
    for old in [*folder.glob("model-*-of-*.safetensors"), folder / SAFE_SINGLE, folder / SAFE_INDEX]:
        if old.exists() and old.name not in names:
            old.unlink()
    weight_map, total = {}, 0
    for fname, shard in zip(names, shards):
        tensors = {n: targets[n].detach().to("cpu", dt).contiguous() for n in shard}
        save_file(tensors, str(folder / fname), metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        weight_map.update({n: fname for n in shard})
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (folder / SAFE_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    dtype_name = {v: k for k, v in DTYPES.items()}[dt]
    model.config.replace(torch_dtype=dtype_name).save(folder / "config.json")
