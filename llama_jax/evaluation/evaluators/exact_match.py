"""Closed-book question answering as the paper scores NaturalQuestions and TriviaQA (§3.3): exact match of the
greedy answer to the zero-shot prompt of its Appendix A, after SQuAD's answer normalisation, with any alias."""

from __future__ import annotations

import re
import string

from llama_jax.evaluation.evaluators.tasks import Question, Task
from llama_jax.evaluation.loaded_model import Model

PROMPT = "Answer these questions:\nQ: {question}\nA:"
UNTIL = ("\n",)  # an answer is one line
MAX_NEW_TOKENS = 32
BATCH = 16  # prompts decoded together


def normalize(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (the SQuAD/TriviaQA evaluation scripts)."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def is_match(prediction: str, answers: tuple[str, ...]) -> bool:
    """Whether `prediction` equals one of `answers` after normalisation."""
    return normalize(prediction) in {normalize(a) for a in answers}


def evaluate(model: Model, task: Task) -> dict[str, float]:
    """{'exact_match': fraction of questions whose greedy answer matches an alias}."""
    items: tuple[Question, ...] = task.items
    hits = 0
    for start in range(0, len(items), BATCH):
        batch = items[start:start + BATCH]
        answers = model.generate([PROMPT.format(question=q.question) for q in batch], max_new_tokens=MAX_NEW_TOKENS,
                                 until=UNTIL)
        hits += sum(is_match(a, q.answers) for a, q in zip(answers, batch, strict=True))
    return {"exact_match": hits / len(items)}
