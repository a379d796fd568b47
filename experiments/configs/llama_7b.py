"""LLaMA-7B as in the paper (Table 2): peak LR 3e-4, 4M-token batches (2048 x 2048), 1.0T tokens."""

from experiments.configs.common import base_config


def get_config():
    c = base_config("llama_7b")
    c.train.steps = 238_419  # 1.0T tokens / 4,194,304 tokens per step
    c.optimizer.peak_lr = 3.0e-4
    c.model.dtype = "bfloat16"  # float32 master weights, bfloat16 compute
    c.model.remat_policy = "save_linear"  # the paper's activation checkpointing (§2.4)
    c.checkpoint.every_steps = 1000
    c.lock()
    return c
