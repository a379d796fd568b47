"""Next-token cross-entropy in float32, as sums so that microbatches and shards add up exactly."""

from __future__ import annotations

import flax.linen as nn
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


def chunked_cross_entropy(
    hidden: jax.Array, output: jax.Array, targets: jax.Array, loss_mask: jax.Array, chunk: int
) -> tuple[jax.Array, jax.Array]:
    """`cross_entropy` of the logits hidden @ output, computed `chunk` positions at a time so that float32
    logits exist for one chunk only, in the forward and (recomputed) in the backward pass.

    hidden [batch, length, embed] (the model's final-normed state, `return_hidden=True`); output [embed, vocab];
    targets, loss_mask [batch, length]; `chunk` must divide length. Returns what `cross_entropy` returns.
    """
    batch, length, dim = hidden.shape
    if chunk <= 0 or length % chunk:
        raise ValueError(f"loss chunk of {chunk} positions does not divide the sequence length {length}; "
                         "choose a divisor of train.seq_len (or 0 for the unchunked loss)")
    weight = output.astype(hidden.dtype)

    @jax.checkpoint  # keep only each chunk's inputs; its logits are recomputed for the backward pass
    def chunk_loss(h, t, m):
        logits = jnp.einsum("btd,dv->btv", h, weight, preferred_element_type=jnp.float32)
        logits = nn.with_logical_constraint(logits, ("batch", "length", "vocab"))
        return cross_entropy(logits, t, m)[0]

    def split(x):  # [batch, length, ...] -> [length // chunk, batch, chunk, ...]
        return x.reshape(batch, length // chunk, chunk, *x.shape[2:]).swapaxes(0, 1)

    def body(total, xs):
        return total + chunk_loss(*xs), None

    total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), (split(hidden), split(targets), split(loss_mask)))
    return total, jnp.sum(loss_mask.astype(jnp.float32))
