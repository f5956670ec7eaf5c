"""The RULER tasks by name (RULER's synthetic.yaml, without the QA tasks that need downloaded data)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ...errors import UserError
from .cwe import CommonWords
from .fwe import FrequentWords
from .niah import Niah
from .prompt import Built
from .vt import VariableTracking


class Builder(Protocol):
    """What every task kind provides: a generation budget and instances sized by a count `n`."""

    max_new_tokens: int
    unit: str  # what `n` counts
    smallest: int  # the least n

    def build(self, seed: str, n: int, depth: float | None, length: int) -> Built: ...


@dataclass(frozen=True)
class TaskSpec:
    """A named task: its builder, and whether its samples place needles at chosen depths."""

    name: str
    builder: Builder

    @property
    def has_depth(self) -> bool:
        return isinstance(self.builder, Niah)


TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec("niah_single_1", Niah(haystack="noise")),
    TaskSpec("niah_single_2", Niah(haystack="essay")),
    TaskSpec("niah_single_3", Niah(haystack="essay", value_kind="uuids")),
    TaskSpec("niah_multikey_1", Niah(haystack="essay", keys=4)),
    TaskSpec("niah_multikey_2", Niah(haystack="needle")),
    TaskSpec("niah_multikey_3", Niah(haystack="needle", key_kind="uuids", value_kind="uuids")),
    TaskSpec("niah_multivalue", Niah(haystack="essay", values=4)),
    TaskSpec("niah_multiquery", Niah(haystack="essay", queries=4)),
    TaskSpec("vt", VariableTracking()),
    TaskSpec("cwe", CommonWords()),
    TaskSpec("fwe", FrequentWords()),
)}


def select_tasks(names: str | None) -> list[TaskSpec]:
    """Tasks from a comma-separated list (None or 'all': every task, in RULER's order)."""
    if names is None or names.strip() == "all":
        return list(TASKS.values())
    picked = [n.strip() for n in names.split(",") if n.strip()]
    unknown = next((n for n in picked if n not in TASKS), None)
    if unknown is not None or not picked:
        raise UserError(f"unknown RULER task {unknown!r}; the tasks are: {', '.join(TASKS)}")
    return [TASKS[n] for n in dict.fromkeys(picked)]
