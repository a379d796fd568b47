"""The paper's benchmarks (Table 3 common sense, Tables 4-5 closed-book QA) from the Hugging Face Hub, written once
as task files in lm-evaluation-harness's prompt formats.

    python -m llama_jax.evaluation.evaluators.hub --tasks=boolq,piqa --out=.cache/tasks     # on a machine that reaches the Hub

`load(name, task_dir)` reads TASK_DIR/<name>.jsonl, or fetches the split with `datasets` (the `eval` extra) and
writes it there first; offline, with no file, it says in one line how to supply one.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable

from llama_jax import cli
from llama_jax.evaluation.evaluators import tasks

ANSWER = "Answer:"  # the unconditional context of the ratio rule (Brown et al. 2020), used for BoolQ and OBQA


def _hellaswag_text(text: str) -> str:
    """The harness's cleaning of HellaSwag's WikiHow artifacts."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


def _boolq(d: dict) -> dict:
    return {"context": f"{d['passage']}\nQuestion: {d['question']}?\nAnswer:", "choices": ["no", "yes"],
            "label": int(d["label"]), "unconditional_context": ANSWER}


def _piqa(d: dict) -> dict:
    return {"context": f"Question: {d['goal']}\nAnswer:", "choices": [d["sol1"], d["sol2"]], "label": int(d["label"])}


def _siqa(d: dict) -> dict:
    return {"context": f"Q: {d['context']} {d['question']}\nA:", "choices": [d["answerA"], d["answerB"], d["answerC"]],
            "label": int(d["label"]) - 1}


def _hellaswag(d: dict) -> dict:
    context = _hellaswag_text(d["activity_label"] + ": " + d["ctx_a"] + " " + d["ctx_b"].capitalize())
    return {"context": context, "choices": [_hellaswag_text(e) for e in d["endings"]], "label": int(d["label"])}


def _winogrande(d: dict) -> dict:
    blank = d["sentence"].index("_")
    return {"contexts": [d["sentence"][:blank] + d["option1"], d["sentence"][:blank] + d["option2"]],
            "continuation": d["sentence"][blank + 1:].strip(), "label": int(d["answer"]) - 1}


def _arc(d: dict) -> dict:
    return {"context": f"Question: {d['question']}\nAnswer:", "choices": list(d["choices"]["text"]),
            "label": d["choices"]["label"].index(d["answerKey"])}


def _openbookqa(d: dict) -> dict:
    return {"context": d["question_stem"], "choices": list(d["choices"]["text"]),
            "label": d["choices"]["label"].index(d["answerKey"].strip()), "unconditional_context": ANSWER}


def _natural_questions(d: dict) -> dict:
    return {"question": d["question"][:1].upper() + d["question"][1:] + "?", "answers": list(d["answer"])}


def _trivia_qa(d: dict) -> dict:
    return {"question": d["question"], "answers": list(d["answer"]["aliases"])}


# name: (Hub dataset, configuration, split, record -> task record). Splits as lm-evaluation-harness evaluates them.
BENCHMARKS: dict[str, tuple[str, str | None, str, Callable[[dict], dict]]] = {
    "boolq": ("aps/super_glue", "boolq", "validation", _boolq),
    "piqa": ("baber/piqa", None, "validation", _piqa),
    "siqa": ("lighteval/siqa", None, "validation", _siqa),
    "hellaswag": ("Rowan/hellaswag", None, "validation", _hellaswag),
    "winogrande": ("allenai/winogrande", "winogrande_xl", "validation", _winogrande),
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy", "test", _arc),
    "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge", "test", _arc),
    "openbookqa": ("allenai/openbookqa", "main", "test", _openbookqa),
    "naturalquestions": ("google-research-datasets/nq_open", None, "validation", _natural_questions),
    "triviaqa": ("mandarjoshi/trivia_qa", "rc.nocontext", "validation", _trivia_qa),
}


def fetch(name: str, path: str) -> None:
    """Download benchmark `name` with `datasets` and write it to `path` as a task file."""
    dataset, config, split, convert = BENCHMARKS[name]
    where = f"{dataset}{'/' + config if config else ''} ({split})"
    hint = (f"no task file {path} and the Hugging Face Hub could not be read for {where}; on a machine that "
            f"reaches it run `python -m llama_jax.evaluation.evaluators.hub --tasks={name} --out={os.path.dirname(path)}` and "
            f"copy the file here, or write it yourself as JSON lines (see llama_jax/evaluation/evaluators/tasks.py)")
    try:
        import datasets
    except ImportError as error:
        raise FileNotFoundError(f"{hint} (the `datasets` package is missing: pip install -e '.[eval]')") from error
    try:
        rows = datasets.load_dataset(dataset, config, split=split)
    except Exception as error:  # noqa: BLE001 - offline, unknown or moved: every failure has the same remedy
        raise FileNotFoundError(f"{hint} ({type(error).__name__}: {' '.join(str(error).split())[:200]})") from error
    tasks.write_jsonl([convert(dict(row)) for row in rows], path)


def load(name: str, task_dir: str) -> tasks.Task:
    """Benchmark `name` from TASK_DIR/<name>.jsonl, fetched from the Hub first when the file is missing."""
    path = os.path.join(task_dir, f"{name}.jsonl")
    if not os.path.isfile(path):
        fetch(name, path)
    return tasks.read_jsonl(path, name)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m llama_jax.evaluation.evaluators.hub", description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default=",".join(BENCHMARKS), help=f"comma-separated, of {sorted(BENCHMARKS)}")
    parser.add_argument("--out", required=True, help="task directory to write <name>.jsonl into")
    args = parser.parse_args()
    names = [n for n in args.tasks.split(",") if n]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        raise cli.UsageError(f"unknown benchmarks {unknown}; known: {sorted(BENCHMARKS)}")
    for name in names:
        task = load(name, args.out)
        print(f"{name}: {len(task.items)} items in {task.path}")


if __name__ == "__main__":
    cli.run(main)
