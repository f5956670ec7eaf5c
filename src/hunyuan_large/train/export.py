"""`hunyuan export RUN OUT`: a run checkpoint as a release-style model folder."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..generation_config import write_generation_config
from ..pretrained import save_pretrained
from ..tokenizer import load_tokenizer
from .run_state import checkpoints, load_model


def export_run(run_dir: str | Path, out_dir: str | Path, checkpoint: str | None = None,
               dtype: str | None = None) -> Path:
    """Write config.json, weights, the run's tokenizer files and generation_config.json."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    found = checkpoints(run_dir)
    if not found:
        raise UserError(f"{run_dir} has no checkpoint to export")
    ckpt = found[-1] if checkpoint is None else run_dir / checkpoint
    if not (ckpt / "dcp").is_dir():
        raise UserError(f"{ckpt} is not a checkpoint (have: {', '.join(p.name for p in found)})")
    model = load_model(ckpt)
    save_pretrained(model, out_dir, dtype=dtype)
    tokenizer = load_tokenizer(run_dir / "tokenizer")
    tokenizer.save(out_dir)
    eos = [i for i in dict.fromkeys((tokenizer.eos_id, *tokenizer.chat_stop_ids)) if i is not None]
    generation = {"eos_token_id": eos, "pad_token_id": tokenizer.pad_id,
                  "bos_token_id": tokenizer.bos_id, "do_sample": True, "temperature": 0.7, "top_k": 20,
                  "top_p": 0.6, "repetition_penalty": 1.05}
    write_generation_config(out_dir, generation)
    return out_dir
