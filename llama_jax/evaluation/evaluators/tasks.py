"""Evaluation tasks as JSON lines, read into checked items; task names resolve to files.

Multiple choice, one item per line (choices are scored after `delimiter`, default one space, as
lm-evaluation-harness's target_delimiter; acc_norm divides by the characters of the choice):
    {"context": "Question: ...\\nAnswer:", "choices": ["yes", "no"], "label": 0}
    {"context": ..., "choices": ..., "label": ..., "unconditional_context": "Answer:"}   # + the ratio rule
    {"contexts": ["The trophy", "The suitcase"], "continuation": "is too big.", "label": 0}  # WinoGrande layout
Closed-book QA (exact match of a greedy answer against any alias):
    {"question": "Who wrote Hamlet?", "answers": ["William Shakespeare", "Shakespeare"]}

A task name is `heldout`, one of the offline set built from the corpus's held-out split (`next_sentence`,
`cloze`), one of the paper's benchmarks (`boolq`, `piqa`, ..., read from TASK_DIR/<name>.jsonl or fetched from
the Hugging Face Hub), or a path to a .jsonl file.
"""

from __future__ import annotations

import dataclasses
import json
import os

MULTIPLE_CHOICE, EXACT_MATCH, HELDOUT = "multiple_choice", "exact_match", "heldout"


@dataclasses.dataclass(frozen=True)
class Choice:
    """One multiple-choice item: the (context, continuation) text pair of each choice, the index of the right
    one, the characters acc_norm divides by, and the context of the ratio rule (None: no ratio)."""

    pairs: tuple[tuple[str, str], ...]
    label: int
    lengths: tuple[int, ...]
    unconditional_context: str | None = None


@dataclasses.dataclass(frozen=True)
class Question:
    """One closed-book question and the answers that count as right."""

    question: str
    answers: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Task:
    """A named list of items of one kind; `metric` is the one the paper reports (Table 3's column)."""

    name: str
    kind: str
    items: tuple[Choice | Question, ...]
    metric: str
    path: str = ""


def _string(value, field: str, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: {field!r} must be a string, got {value!r}")
    return value


def _strings(value, field: str, where: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: {field!r} must be a non-empty list of strings, got {value!r}")
    return [_string(v, field, where) for v in value]


def _label(item: dict, count: int, where: str) -> int:
    label = item.get("label")
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < count:
        raise ValueError(f"{where}: label {label!r} is not the index of one of its {count} choices (0..{count - 1})")
    return label


def parse_item(item: dict, where: str) -> Choice | Question:
    """The checked item of one JSON line (`where` names it in errors: 'FILE line N')."""
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected a JSON object, got {item!r}")
    if "question" in item:
        return Question(_string(item["question"], "question", where), tuple(_strings(item.get("answers"), "answers", where)))
    delimiter = _string(item.get("delimiter", " "), "delimiter", where)
    unconditional = item.get("unconditional_context")
    if unconditional is not None:
        _string(unconditional, "unconditional_context", where)
    if "contexts" in item:  # one continuation after each of several contexts
        contexts = _strings(item["contexts"], "contexts", where)
        continuation = _string(item.get("continuation"), "continuation", where)
        if unconditional is not None:
            raise ValueError(f"{where}: the ratio rule (unconditional_context) needs one context and several choices")
        pairs = tuple((c, delimiter + continuation) for c in contexts)
        return Choice(pairs, _label(item, len(pairs), where), (len(continuation),) * len(pairs))
    if "choices" not in item:
        raise ValueError(f"{where}: expected the fields context/choices/label, contexts/continuation/label or "
                         f"question/answers, got {sorted(item)}")
    if not isinstance(item["choices"], list) or not item["choices"]:
        raise ValueError(f"{where}: 'choices' must be a non-empty list of strings, got {item['choices']!r}")
    choices = _strings(item["choices"], "choices", where)
    context = _string(item.get("context"), "context", where)
    pairs = tuple((context, delimiter + choice) for choice in choices)
    return Choice(pairs, _label(item, len(pairs), where), tuple(len(c) for c in choices), unconditional)


def read_jsonl(path: str, name: str | None = None, metric: str | None = None) -> Task:
    """The task in JSON-lines file `path` (layouts in the module docstring); every item of one kind."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"task file {path} does not exist")
    items = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where} is not JSON: {error}") from error
            items.append(parse_item(record, where))
    if not items:
        raise ValueError(f"task file {path} holds no items")
    kinds = {type(item) for item in items}
    if len(kinds) > 1:
        raise ValueError(f"task file {path} mixes multiple-choice and question items; put each kind in its own file")
    if isinstance(items[0], Question):
        return Task(name or _stem(path), EXACT_MATCH, tuple(items), metric or "exact_match", path)
    default = "acc_ratio" if all(item.unconditional_context for item in items) else "acc_norm"
    return Task(name or _stem(path), MULTIPLE_CHOICE, tuple(items), metric or default, path)


def write_jsonl(records: list[dict], path: str) -> None:
    """Write task records to `path` atomically (a half-written file never looks like a task)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    os.replace(path + ".tmp", path)


def _stem(path: str) -> str:
    return os.path.basename(path).removesuffix(".jsonl")
