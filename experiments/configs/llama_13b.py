"""LLaMA-13B as in the paper: Table 2's peak LR and 1.0T tokens in 4M-token batches (2048 x 2048)."""

from experiments.configs.common import paper_config


def get_config():
    c = paper_config("llama_13b")
    c.checkpoint.every_steps = 1000
    c.lock()
    return c
