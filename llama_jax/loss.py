"""Next-token cross-entropy in float32, as sums so that microbatches and shards add up exactly."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy(logits: jax.Array, targets: jax.Array, loss_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sum of -log p(target) over unmasked tokens, number of unmasked tokens), both float32 scalars.

    logits [batch, length, vocab]; targets [batch, length] int; loss_mask [batch, length], 1.0 where the
    target counts (0 on padding). The mean loss is the first divided by the second.
    """
    logits = logits.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logits = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    mask = loss_mask.astype(jnp.float32)
    return jnp.sum((log_z - target_logits) * mask), jnp.sum(mask)
