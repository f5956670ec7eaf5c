"""One evaluation run: lm-eval's `simple_evaluate` over our model, the shipped tasks always findable.

lm-eval 0.4.13 has no plugin mechanism, so we pass it a model object and a TaskManager whose
include path holds our tasks (eval/tasks/) and any the user adds.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

TASKS_DIR = Path(__file__).parent / "tasks"


@dataclass
class EvalRun:
    """What to evaluate and how (the flags of `hunyuan eval`)."""

    tasks: Sequence[str]
    include_path: Sequence[str | Path] = ()
    limit: int | float | None = None  # documents per task (a fraction when < 1)
    num_fewshot: int | None = None
    apply_chat_template: bool = False
    seed: int = 1234
    metadata: dict | None = None  # passed to every task's dataset hook (the RULER tasks read `pretrained`)


def _quiet_custom_dataset_hint(record: logging.LogRecord) -> bool:
    # lm-eval logs a hint about RULER's `max_seq_lengths` for every task with a custom_dataset;
    # it means nothing for ours.
    return "Custom kwargs can be passed" not in record.getMessage()


def task_manager(tasks: Sequence[str], include_path: Sequence[str | Path] = (), metadata: dict | None = None):
    """lm-eval's task index over our tasks and the user's folders (later ones win), plus lm-eval's own
    tasks only when a name is not among those (indexing its ~15k tasks takes ~40 s on a CPU)."""
    from lm_eval.tasks import TaskManager

    missing = [str(p) for p in include_path if not Path(p).is_dir()]
    if missing:
        raise UserError(f"--include-path {missing[0]} is not a folder")
    paths = [TASKS_DIR, *map(Path, include_path)]
    manager = TaskManager(include_path=paths, include_defaults=False, metadata=metadata)
    if not set(tasks) <= set(manager.all_tasks):
        manager = TaskManager(include_path=paths, metadata=metadata)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise UserError(f"unknown task {unknown[0]!r}; the shipped ones are hunyuan_suite, hunyuan_arithmetic, "
                        f"hunyuan_choice, hunyuan_text, hunyuan_ruler (see docs/evaluation.md), or add --include-path DIR")
    return manager


def evaluate(lm, run: EvalRun) -> dict:
    """lm-eval's results dict (per-task metrics, groups, configs) for `lm` on `run.tasks`."""
    from lm_eval import simple_evaluate

    task_log = logging.getLogger("lm_eval.api.task")
    if _quiet_custom_dataset_hint not in task_log.filters:
        task_log.addFilter(_quiet_custom_dataset_hint)
    manager = task_manager(run.tasks, run.include_path, run.metadata)
    start = time.perf_counter()
    results = simple_evaluate(model=lm, tasks=list(run.tasks), task_manager=manager, limit=run.limit,
                              num_fewshot=run.num_fewshot, apply_chat_template=run.apply_chat_template,
                              log_samples=False, random_seed=run.seed, numpy_random_seed=run.seed,
                              torch_random_seed=run.seed, fewshot_random_seed=run.seed)
    results["total_evaluation_time_seconds"] = str(time.perf_counter() - start)
    return results


def results_table(results: dict) -> str:
    """lm-eval's markdown tables: tasks, then groups when there are any."""
    from lm_eval.utils import make_table

    tables = [make_table(results)]
    if results.get("groups"):
        tables.append(make_table(results, "groups"))
    return "\n".join(tables)


def write_results(results: dict, folder: str | Path) -> tuple[Path, Path]:
    """results.json (lm-eval's dict) and results.md (its tables) in `folder`; returns both paths."""
    from lm_eval.utils import handle_non_serializable

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / "results.json", folder / "results.md"
    json_path.write_text(json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False))
    md_path.write_text(results_table(results))
    return json_path, md_path
