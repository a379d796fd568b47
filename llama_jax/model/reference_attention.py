"""Plain einsum attention: runs on every backend, and is the reference the fused kernels (attention.py,
tpu_attention.py) are checked against and fall back to. Shapes as in attention.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _mask(q_len: int, kv_len: int, segment_ids: jax.Array | None) -> jax.Array:
    """Boolean [batch or 1, 1, q_len, kv_len]: causal, and within one packed document when segments are given."""
    causal = jnp.tril(jnp.ones((q_len, kv_len), dtype=bool), k=kv_len - q_len)[None, None]
    if segment_ids is None:
        return causal
    same = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
    return causal & same


def xla_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array | None = None,
                  mask: jax.Array | None = None) -> jax.Array:
    """Plain einsum attention; runs on every backend and is the reference the fused kernels are checked against.
    `mask` (boolean [batch, 1, q_len, kv_len]) replaces the causal one: decoding's queries are not the last keys."""
    batch, q_len, n_heads, head_dim = q.shape
    kv_heads = k.shape[2]
    groups = n_heads // kv_heads  # grouped-query attention: each kv head serves `groups` query heads
    q = q.reshape(batch, q_len, kv_heads, groups, head_dim)
    scores = jnp.einsum("btkgh,bskh->bkgts", q, k, preferred_element_type=jnp.float32)
    scores = scores / jnp.sqrt(jnp.float32(head_dim))
    mask = (_mask(q_len, k.shape[1], segment_ids) if mask is None else mask)[:, :, None]  # broadcast over groups
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskh->btkgh", probs, v)
    return out.reshape(batch, q_len, n_heads, head_dim)
