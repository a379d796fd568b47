"""Evaluation tasks and evaluators by name (the package docstring lists them)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable

from llama_jax.evaluation.evaluators import exact_match, hub, multiple_choice, offline
from llama_jax.evaluation.evaluators.tasks import EXACT_MATCH, HELDOUT, MULTIPLE_CHOICE, Task, read_jsonl
from llama_jax.evaluation.loaded_model import Model

EVALUATORS: dict[str, Callable[[Model, Task], dict[str, float]]] = {
    MULTIPLE_CHOICE: multiple_choice.evaluate,
    EXACT_MATCH: exact_match.evaluate,
}
# The paper's Table 3 columns, in its order.
TABLE3 = ("boolq", "piqa", "siqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")
NAMES = (HELDOUT, *offline.TASKS, *hub.BENCHMARKS)


def check_names(names: Iterable[str]) -> list[str]:
    """`names` as a list, after checking each is known or a .jsonl path (before anything expensive starts)."""
    names = list(names)
    if not names:
        raise ValueError(f"no evaluation tasks given; name some of {', '.join(NAMES)} or .jsonl files")
    for name in names:
        if name not in NAMES and not name.endswith(".jsonl"):
            raise ValueError(f"unknown evaluation task {name!r}; known tasks: {', '.join(NAMES)}, or the path of a "
                             ".jsonl task file")
    return names


def resolve(name: str, *, task_dir: str, corpus_dir: str = offline.DEFAULT_CORPUS) -> Task:
    """The task called `name` (not `heldout`); offline tasks are built from `corpus_dir` into `task_dir` when
    missing, benchmarks read from `task_dir` or fetched."""
    check_names([name])
    if name in offline.TASKS:
        offline.build(corpus_dir, task_dir)
        return read_jsonl(os.path.join(task_dir, f"{name}.jsonl"), name)
    if name in hub.BENCHMARKS:
        return hub.load(name, task_dir)
    return read_jsonl(name)


def evaluate(model: Model, task: Task, max_items: int = 0) -> dict[str, float]:
    """`task`'s metrics for `model`, on its first `max_items` items (0: all)."""
    if max_items:
        task = dataclasses.replace(task, items=task.items[:max_items])
    return EVALUATORS[task.kind](model, task)
