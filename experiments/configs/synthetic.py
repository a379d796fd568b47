"""The tiny preset on synthetic tokens: no corpus and no TensorFlow needed (accelerators, quick checks)."""

from experiments.configs import tiny


def get_config():
    c = tiny.get_config().unlock()
    c.data.source = "synthetic"
    c.evals.tasks = ("heldout",)  # tiny's offline tasks are built from the corpus and scored with its tokenizer
    c.lock()
    return c
