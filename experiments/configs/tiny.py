"""The embedded default: a tiny LLaMA trained on the bundled real corpus on a CPU in a few minutes (`make train`)."""

from experiments.configs.common import base_config


def get_config():
    c = base_config("tiny")
    # Sized for `make train` on a 2-core CPU in a few minutes (measured about 1 s per step there).
    c.train.steps = 150
    c.train.seq_len = 128
    c.train.global_batch_size = 8
    c.train.log_every = 5
    c.train.eval_every = 50
    c.train.eval_batches = 2
    c.optimizer.peak_lr = 3e-3  # a 7M-parameter model tolerates a far larger rate than 7B
    c.optimizer.warmup_steps = 15
    c.checkpoint.every_steps = 50
    c.lock()
    return c
