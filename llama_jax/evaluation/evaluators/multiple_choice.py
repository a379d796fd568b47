"""Zero-shot multiple choice as the paper scores it (§3): each choice's log-likelihood given the context.

    acc        argmax of log P(choice | context)
    acc_norm   argmax of log P(choice | context) / characters of the choice (Gao et al. 2021; the paper's rule)
    acc_ratio  argmax of log P(choice | context) - log P(choice | "Answer:"), the likelihood ratio of Brown et al.
               2020 that the paper uses for OpenBookQA and BoolQ (items that carry an unconditional_context)
"""

from __future__ import annotations

import numpy as np

from llama_jax.evaluation.evaluators.tasks import Choice, Task
from llama_jax.evaluation.loaded_model import Model


def requests(items: tuple[Choice, ...]) -> list[tuple[str, str]]:
    """Every (context, continuation) pair to score: the choices of each item, then its unconditional pairs."""
    pairs = []
    for item in items:
        pairs.extend(item.pairs)
        if item.unconditional_context is not None:
            pairs.extend((item.unconditional_context, continuation) for _, continuation in item.pairs)
    return pairs


def predictions(item: Choice, logprobs: np.ndarray, unconditional: np.ndarray | None) -> dict[str, int]:
    """The index each rule picks for one item (ties go to the first choice, as numpy's argmax)."""
    picks = {"acc": int(np.argmax(logprobs)), "acc_norm": int(np.argmax(logprobs / np.array(item.lengths, float)))}
    if unconditional is not None:
        picks["acc_ratio"] = int(np.argmax(logprobs - unconditional))
    return picks


def evaluate(model: Model, task: Task) -> dict[str, float]:
    """Accuracy of `model` on `task` by each rule (a fraction); acc_ratio when every item has its context."""
    scores = iter(model.loglikelihood(requests(task.items)))
    ratio = all(item.unconditional_context is not None for item in task.items)
    hits = {"acc": 0, "acc_norm": 0, **({"acc_ratio": 0} if ratio else {})}
    for item in task.items:
        logprobs = np.array([next(scores).logprob for _ in item.pairs])
        unconditional = None
        if item.unconditional_context is not None:
            unconditional = np.array([next(scores).logprob for _ in item.pairs])
        for rule, pick in predictions(item, logprobs, unconditional).items():
            if rule in hits:
                hits[rule] += pick == item.label
    return {rule: count / len(task.items) for rule, count in hits.items()}
