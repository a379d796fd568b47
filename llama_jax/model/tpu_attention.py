"""Pallas splash attention (TPU): causal, packed-document-aware, grouped-query, sharded over the mesh in context.

Splash attention (`jax.experimental.pallas.ops.tpu.splash_attention`) is a block-sparse flash attention: blocks
that the causal mask hides are skipped, as in the paper's xformers kernel (§2.4). The kernel works on one
example, [heads, length, head_dim], and does not scale the scores, so `splash` scales q by 1/sqrt(head_dim),
moves heads in front and maps the kernel over the batch. Pallas calls cannot be partitioned by XLA, so under a
mesh with more than one device the kernel runs inside `shard_map`: batch and heads stay sharded as the logical
rules in context say, and the length axis is gathered (the kernel cannot split the key sequence).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as splash_lib
from jax.sharding import PartitionSpec

from llama_jax.model.reference_attention import xla_attention

# Tile sizes tried from largest to smallest; 512 is MaxText's default for v5p at length 2048. The kernel
# needs key tiles that are multiples of the 128 lanes of the TPU vector unit.
BLOCK_CANDIDATES = (512, 256, 128)


def block_size(length: int) -> int:
    """The largest tile in BLOCK_CANDIDATES that divides `length`, or a ValueError saying what would work."""
    for block in BLOCK_CANDIDATES:
        if length % block == 0:
            return block
    raise ValueError(
        f"splash attention needs a sequence length that is a multiple of 128, got {length}; "
        "pad the sequence or use attention_impl='xla'"
    )


@functools.cache
def _kernel(n_heads: int, length: int, interpret: bool) -> splash_lib.SplashAttentionKernel:
    """A causal splash kernel for [n_heads, length, head_dim] queries; built once per shape (mask tables are numpy)."""
    block = block_size(length)
    sizes = splash_lib.BlockSizes(
        block_q=block, block_kv=block, block_kv_compute=block,
        block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
        block_q_dq=block, block_kv_dq=block,
    )
    mask = splash_lib.MultiHeadMask([splash_lib.CausalMask((length, length))] * n_heads)
    return splash_lib.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)


def _local_splash(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array | None, interpret: bool) -> jax.Array:
    """Splash attention on arrays held by one device: q [batch, length, heads, head_dim], k, v with kv_heads."""
    length, n_heads, head_dim = q.shape[1:]
    kernel = _kernel(n_heads, length, interpret)
    scale = 1.0 / jnp.sqrt(jnp.float32(head_dim))
    q = (q.astype(jnp.float32) * scale).astype(q.dtype)
    # [batch, length, heads, head_dim] -> [batch, heads, length, head_dim]: the kernel's head-major layout.
    q, k, v = (jnp.swapaxes(x, 1, 2) for x in (q, k, v))
    if segment_ids is None:
        out = jax.vmap(kernel)(q, k, v)
    else:
        out = jax.vmap(lambda q1, k1, v1, s1: kernel(q1, k1, v1, splash_lib.SegmentIds(s1, s1)))(q, k, v, segment_ids)
    return jnp.swapaxes(out, 1, 2)


def _mesh_axes(names: tuple[str, ...]) -> PartitionSpec:
    """The mesh axes the logical rules in context give `names`, length left unsharded for the kernel."""
    spec = nn.logical_to_mesh_axes(names)
    return PartitionSpec(*(None if name == "length" else axes for name, axes in zip(names, spec, strict=True)))


def splash(
    q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array | None = None, *, interpret: bool = False
) -> jax.Array:
    """Causal attention of q [batch, length, heads, head_dim] over k, v [batch, length, kv_heads, head_dim],
    within documents when segment_ids [batch, length] are given; returns [batch, length, heads, head_dim].
    `interpret=True` runs the kernel in the Pallas interpreter (any backend; for tests). Sequences shorter
    than one tile (as when parameters are initialised from a 1-token input) take the XLA path."""
    if q.shape[1] < BLOCK_CANDIDATES[-1]:
        return xla_attention(q, k, v, segment_ids)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return _local_splash(q, k, v, segment_ids, interpret)
    q_spec = _mesh_axes(("batch", "length", "heads", "head_dim"))
    kv_spec = _mesh_axes(("batch", "length", "kv_heads", "head_dim"))
    specs = (q_spec, kv_spec, kv_spec)
    args = (q, k, v)
    if segment_ids is not None:
        specs += (PartitionSpec(q_spec[0], None),)
        args += (segment_ids,)

    def local(q, k, v, segment_ids=None):
        return _local_splash(q, k, v, segment_ids, interpret)

    # check_vma=False: Pallas calls carry no replication information.
    return jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=q_spec, check_vma=False)(*args)
