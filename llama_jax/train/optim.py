"""The paper's optimizer (§2.3): AdamW (0.9, 0.95), weight decay 0.1, global-norm clipping at 1.0, and a
linear warmup of 2000 steps followed by cosine decay to 10% of the peak rate (Table 2 gives the peak).

`optimizer.schedule="wsd"` is warmup-stable-decay instead (Hägele et al. 2024): the peak rate until the last
`optimizer.cooldown_fraction` of the steps, then a (1 - sqrt) cooldown to the final rate. Its learning rates up
to a step do not depend on `train.steps` beyond that step's cooldown start, so runs of several lengths branch
their cooldowns from one stable-phase run (experiments.sweep), and their final losses match per-length cosines.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("cosine", "wsd")


def learning_rate_schedule(config) -> optax.Schedule:
    """Step -> learning rate: linear 0 -> peak over warmup_steps, then (`optimizer.schedule`) either cosine to
    final_lr_fraction * peak at train.steps, or constant until the cooldown and (1 - sqrt) down to it there;
    constant after train.steps."""
    opt = config.optimizer
    if config.train.steps <= opt.warmup_steps:
        raise ValueError(
            f"train.steps={config.train.steps} must exceed optimizer.warmup_steps={opt.warmup_steps}; "
            "lower the warmup for short runs"
        )
    schedule = opt.schedule
    end_value = opt.final_lr_fraction * opt.peak_lr
    if schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=opt.peak_lr,
            warmup_steps=opt.warmup_steps,
            decay_steps=config.train.steps,  # optax counts the warmup inside decay_steps
            end_value=end_value,
        )
    if schedule != "wsd":
        raise ValueError(f"optimizer.schedule={schedule!r} is not one of {SCHEDULES}")
    start = cooldown_start(config)
    warmup = optax.linear_schedule(0.0, opt.peak_lr, opt.warmup_steps)
    length = max(config.train.steps - start, 1)

    def cooldown(count):  # (1 - sqrt) decay: Hägele et al.'s best cooldown shape
        progress = jnp.clip(count / length, 0.0, 1.0)
        return opt.peak_lr - (opt.peak_lr - end_value) * jnp.sqrt(progress)  # exactly the peak at its start

    return optax.join_schedules([warmup, optax.constant_schedule(opt.peak_lr), cooldown], [opt.warmup_steps, start])


def cooldown_start(config) -> int:
    """The step where a "wsd" schedule leaves the peak rate: train.steps less optimizer.cooldown_fraction of it,
    never inside the warmup (train.steps for a cooldown fraction of 0: a stable-phase run)."""
    opt = config.optimizer
    fraction = opt.cooldown_fraction
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"optimizer.cooldown_fraction={fraction} must be within [0, 1]")
    start = config.train.steps - round(fraction * config.train.steps)
    if start < opt.warmup_steps:
        raise ValueError(
            f"optimizer.cooldown_fraction={fraction} starts the cooldown at step {start}, inside the "
            f"{opt.warmup_steps} warmup steps; lower the fraction or the warmup"
        )
    return start


def decays(path: tuple, config) -> bool:
    """Whether weight decay applies to the parameter at `path`: every matrix (including the output
    projection); the input embedding and RMSNorm gains only when optimizer.decay_embeddings_and_norms (the
    paper does not say; the common convention is not to decay them)."""
    if config.optimizer.decay_embeddings_and_norms:
        return True
    names = [getattr(key, "key", getattr(key, "name", None)) for key in path]
    return names[0] != "tok_embeddings" and names[-1] != "weight"  # RMSNorm gains are all called `weight`


def make_optimizer(config) -> optax.GradientTransformation:
    """Clip the global gradient norm, then AdamW with the learning-rate schedule and masked weight decay."""
    opt = config.optimizer
    return optax.chain(
        optax.clip_by_global_norm(opt.clip_norm),
        optax.adamw(
            learning_rate=learning_rate_schedule(config),
            b1=opt.b1,
            b2=opt.b2,
            eps=opt.eps,
            weight_decay=opt.weight_decay,
            mask=lambda params: jax.tree_util.tree_map_with_path(lambda path, _: decays(path, config), params),
        ),
    )
