"""Causal multi-head attention behind one interface; the model never knows which kernel runs.

Every implementation takes q [batch, length, heads, head_dim] and k, v [batch, length, kv_heads, head_dim],
already rotated, and returns [batch, length, heads, head_dim] in q's dtype. Scores are scaled by
1/sqrt(head_dim) and the softmax runs in float32 (reference `Attention.forward`).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp

from llama_jax.model.reference_attention import xla_attention


def check_shapes(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array | None = None) -> None:
    """Raise naming the shapes when q, k, v (and segment_ids) do not describe one causal self-attention."""
    given = f"q {q.shape} {q.dtype}, k {k.shape} {k.dtype}, v {v.shape} {v.dtype}"
    if q.ndim != 4 or k.ndim != 4 or k.shape != v.shape:
        raise ValueError(f"{given}: expected q [batch, length, heads, head_dim] and k, v [batch, length, kv_heads, "
                         "head_dim] of one shape")
    if q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3] or q.shape[2] % k.shape[2]:
        raise ValueError(f"{given}: q and k, v must share batch, length and head_dim, and kv_heads must divide heads")
    if not q.dtype == k.dtype == v.dtype:
        raise ValueError(f"{given}: q, k and v must have one dtype")
    if segment_ids is not None and segment_ids.shape != q.shape[:2]:
        raise ValueError(f"segment_ids {segment_ids.shape} is not [batch, length] = {q.shape[:2]}")


def cudnn_unavailable(q: jax.Array) -> str | None:
    """Why cuDNN's fused attention cannot take `q` here, or None when it can: it needs an NVIDIA GPU, bfloat16 or
    float16 inputs, and a head_dim that is a multiple of 8 up to 128."""
    if jax.default_backend() != "gpu":
        return f"the backend is {jax.default_backend()}, not an NVIDIA GPU"
    if jnp.dtype(q.dtype) not in (jnp.bfloat16, jnp.float16):
        return f"the inputs are {jnp.dtype(q.dtype).name}, not bfloat16 or float16 (model.dtype)"
    if q.shape[-1] > 128 or q.shape[-1] % 8:
        return f"head_dim={q.shape[-1]} is not a multiple of 8 up to 128"
    return None


def cudnn_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array | None = None) -> jax.Array:
    """cuDNN flash attention through `jax.nn.dot_product_attention` (NVIDIA GPUs, bf16/fp16 inputs); where cuDNN
    cannot run (`cudnn_unavailable`), XLA attention, which computes the same, with a warning that says why."""
    check_shapes(q, k, v, segment_ids)
    if (reason := cudnn_unavailable(q)) is not None:
        warnings.warn(f"attention_impl='cudnn' cannot run here ({reason}): using XLA attention", stacklevel=2)
        return xla_attention(q, k, v, segment_ids)
    mask = None
    if segment_ids is not None:
        # Only the document mask goes in as a (bias) tensor; the causal part stays cuDNN's own, block-skipping mask.
        mask = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True, implementation="cudnn")


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array | None = None) -> jax.Array:
    """Pallas splash attention on TPU (causal, segment-aware)."""
    from llama_jax.model import tpu_attention  # Pallas TPU kernels import only where they can run or compile.

    return tpu_attention.splash(q, k, v, segment_ids)


IMPLEMENTATIONS = {"xla": xla_attention, "cudnn": cudnn_attention, "splash": splash_attention}


def resolve(impl: str, dtype: jnp.dtype) -> str:
    """The implementation `auto` stands for on the default backend: cuDNN on NVIDIA GPUs in half precision,
    splash on TPU, XLA elsewhere."""
    if impl != "auto":
        return impl
    platform = jax.default_backend()
    if platform == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16):
        return "cudnn"
    if platform == "tpu":
        return "splash"
    return "xla"


def attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array | None = None, *, impl: str = "xla") -> jax.Array:
    """Causal attention with the named implementation ('xla', 'cudnn', 'splash' or 'auto')."""
    return IMPLEMENTATIONS[resolve(impl, q.dtype)](q, k, v, segment_ids)
