"""The RULER tasks as lm-eval tasks (eval/tasks/hunyuan_ruler_*.yaml): documents sized with the model's
tokenizer at first use, scored per length with RULER's string_match_all.

lm-eval passes a task's metadata to its dataset hook: `pretrained` (the model folder, which
`hunyuan eval` sets) or `tokenizer` names the tokenizer, `max_seq_lengths` the lengths and
`num_samples` the samples per length.
"""

from __future__ import annotations

from ...errors import UserError
from ...tokenizer import load_tokenizer
from .metrics import postprocess, string_match_all
from .samples import make_samples
from .tasks import TASKS

LENGTHS = (1024, 2048, 4096)  # the lengths the YAMLs report (one metric each)


def dataset(task: str, **metadata):
    """A task's documents at every length as a `datasets.DatasetDict` with a test split."""
    from datasets import Dataset, DatasetDict

    folder = metadata.get("tokenizer") or metadata.get("pretrained")
    if not folder:
        raise UserError(f"hunyuan_ruler_{task} sizes prompts with the model's tokenizer: run it with "
                        f"`hunyuan eval --model DIR` or TaskManager(metadata={{'pretrained': DIR}})")
    lengths = [int(n) for n in metadata.get("max_seq_lengths", LENGTHS)]
    if not set(lengths) <= set(LENGTHS):
        raise UserError(f"max_seq_lengths {lengths} must be among {list(LENGTHS)} for the lm-eval tasks; "
                        f"`hunyuan eval ruler --lengths` takes any")
    tok = load_tokenizer(folder)
    docs = [{"input": s.built.text, "gen_prefix": s.built.answer_prefix, "outputs": s.built.outputs,
             "max_length": s.length, "depth": s.depth, "index": s.index}
            for n in lengths for s in make_samples(TASKS[task], tok, n, int(metadata.get("num_samples", 20)),
                                                   int(metadata.get("seed", 0)))]
    return DatasetDict({"test": Dataset.from_list(docs)})


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """The document's score under its own length; -1 (left out when averaging) under the others."""
    scores = {str(n): -1.0 for n in LENGTHS}
    scores[str(doc["max_length"])] = string_match_all([postprocess(results[0])], [doc["outputs"]])
    return scores


def mean_score(scores: list[float]) -> float:
    """The mean over the documents of one length (-1 when there were none)."""
    mine = [s for s in scores if s != -1]
    return sum(mine) / len(mine) if mine else -1.0
