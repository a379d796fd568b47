"""The test config: the `debug` model on synthetic tokens, a few steps on fake CPU devices in seconds.

Tests share this exact config where they can: the learning-rate schedule is compiled into the step, so the
same config means the same program, compiled once (the test session's persistent compilation cache).
"""

from experiments.configs.common import base_config


def get_config():
    c = base_config("debug")
    c.data.source = "synthetic"
    c.train.steps = 16
    c.train.seq_len = 16
    c.train.global_batch_size = 8
    c.train.log_every = 1
    c.train.eval_every = 8
    c.train.eval_batches = 2
    c.optimizer.warmup_steps = 4
    c.optimizer.peak_lr = 3e-3
    c.checkpoint.every_steps = 5
    c.lock()
    return c
