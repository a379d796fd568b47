"""The paper's optimizer (§2.3): AdamW (0.9, 0.95), weight decay 0.1, global-norm clipping at 1.0, and a
linear warmup of 2000 steps followed by cosine decay to 10% of the peak rate (Table 2 gives the peak)."""

from __future__ import annotations

import jax
import optax


def learning_rate_schedule(config) -> optax.Schedule:
    """Step -> learning rate: linear 0 -> peak over warmup_steps, then cosine to final_lr_fraction * peak at
    train.steps (and constant after)."""
    opt = config.optimizer
    if config.train.steps <= opt.warmup_steps:
        raise ValueError(
            f"train.steps={config.train.steps} must exceed optimizer.warmup_steps={opt.warmup_steps}; "
            "lower the warmup for short runs"
        )
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=opt.peak_lr,
        warmup_steps=opt.warmup_steps,
        decay_steps=config.train.steps,  # optax counts the warmup inside decay_steps
        end_value=opt.final_lr_fraction * opt.peak_lr,
    )


def decays(path: tuple, config) -> bool:
    """Whether weight decay applies to the parameter at `path`: every matrix (including the output
    projection); the input embedding and RMSNorm gains only when optimizer.decay_embeddings_and_norms (the
    paper does not say; the common convention is not to decay them)."""
    if config.optimizer.decay_embeddings_and_norms:
        return True
    names = [getattr(key, "key", getattr(key, "name", None)) for key in path]
    return names[0] != "tok_embeddings" and names[-1] != "weight"  # RMSNorm gains are all called `weight`


def make_optimizer(config) -> optax.GradientTransformation:
    """Clip the global gradient norm, then AdamW with the warmup-cosine schedule and masked weight decay."""
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
