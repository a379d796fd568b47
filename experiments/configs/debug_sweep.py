"""The test sweep: the `debug` model on synthetic tokens, a stable phase and two cooldown branches, seconds each.

tests/test_sweep.py runs it with `python -m experiments.sweep`, kills it mid-way, and checks the restarted sweep
finishes with the uninterrupted sweep's results; tests/test_collect.py collects its workdirs.
"""

from experiments import spec
from experiments.configs.common import base_config

SIZES = {"debug": 64}
BATCH, SEQ_LEN, COOLDOWN = 8, 16, 0.25
BUDGETS = (2560.0, 5120.0)  # 20 and 40 steps


def cooldown_start(tokens: float) -> int:
    steps = spec.steps_for(tokens, BATCH, SEQ_LEN)
    return steps - round(COOLDOWN * steps)


def get_config(arg: str = "size=debug,tokens=2560"):
    s = spec.parse(arg, sizes=SIZES, flags=("stable",))
    c = base_config("debug")
    c.data.source = "synthetic"
    c.train.seq_len, c.train.global_batch_size = SEQ_LEN, BATCH
    c.train.steps = spec.steps_for(s.tokens, BATCH, SEQ_LEN)
    c.train.log_every, c.train.eval_every, c.train.eval_batches = 5, 10, 2
    c.optimizer.peak_lr, c.optimizer.warmup_steps = 3e-3, 4
    c.optimizer.schedule, c.optimizer.final_lr_fraction = "wsd", 0.0
    c.optimizer.cooldown_fraction = 0.0 if "stable" in s.flags else COOLDOWN
    if "stable" in s.flags:
        c.checkpoint.keep_steps = tuple(cooldown_start(tokens) for tokens in BUDGETS)
    c.checkpoint.every_steps, c.checkpoint.keep = 5, 1
    c.lock()
    return c


def sweep() -> list[str]:
    trunk = max(cooldown_start(tokens) for tokens in BUDGETS) * BATCH * SEQ_LEN
    return [f"size=debug,tokens={trunk},stable"] + [f"size=debug,tokens={tokens:g}" for tokens in BUDGETS]


def data_tokens(config) -> dict[str, float]:
    """Synthetic tokens never repeat: no epochs to report."""
    return {}
