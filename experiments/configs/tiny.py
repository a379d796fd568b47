"""The embedded default: a tiny LLaMA trained on the bundled real corpus on a CPU in a few minutes (`make train`)."""

from experiments.configs.common import base_config


def get_config():
    c = base_config("tiny")
    # Sized for `make train` on a 2-core CPU in a few minutes: 200 steps of 16 x 128 tokens (410k tokens).
    c.train.steps = 200
    c.train.seq_len = 128
    c.train.global_batch_size = 16
    c.train.log_every = 10
    c.train.eval_every = 100
    c.train.eval_batches = 4
    # Downstream accuracy during training (the paper's Figure 2): the offline cloze task built from the corpus's
    # held-out split (300 items, 4 choices: chance is 25%) with the held-out loss, before training and every
    # eval_every steps. next_sentence stays at chance for 200 steps (README, "Evaluation") and is left out.
    c.evals.tasks = ("heldout", "cloze")
    c.evals.initial = True
    c.optimizer.peak_lr = 3e-3  # a 7M-parameter model tolerates a far larger rate than 7B
    c.optimizer.warmup_steps = 20
    c.checkpoint.every_steps = 100
    c.lock()
    return c
