"""The LLaMA transformer (paper §2.2) in Flax linen: pre-norm RMSNorm, SwiGLU, rotary embeddings.

Parameter names follow the Meta reference (`tok_embeddings`, `attention.wq`, `feed_forward.w1`, ...), so
conversion is a short table. Parameters and activations carry logical axis names only
(batch, length, embed, heads, kv_heads, head_dim, mlp, vocab, layers, norm, cache_length); `llama_jax.sharding`
maps them onto a mesh. Kernels are declared with `self.param` and applied with `jnp.einsum`, which keeps
multi-dimensional partitioned kernels working under a mesh (flax issue 3676).

Decoding: `LLaMA(config, cache_length=S)` keeps each layer's rotated keys and values (post-RoPE, as the
reference caches them) in the flax collection `cache`, [batch, S, kv_heads, head_dim] per layer (stacked along
`layers` under scan). Slot = position: a call writes its tokens at their positions (each row's tokens
consecutive from positions[:, 0]) and its queries attend to the slots up to their own position, so rows of one
batch may stand at different positions. `llama_jax.inference.sampling` drives it.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from llama_jax.config import ModelConfig
from llama_jax.model import attention as attention_lib

# Truncated normal with std 0.02: the paper and the release state no initialisation (the reference builds
# layers with `init_method=lambda x: x`); this is the GPT-2/HF `initializer_range` convention.
INIT = nn.initializers.normal(stddev=0.02)

# Names of the linear-layer outputs that the paper's checkpointing keeps (§2.4): the `save_linear` policy.
LINEAR_OUTPUTS = ("query", "key", "value", "attention_out", "ffn_gate", "ffn_up", "ffn_out")
CACHE_AXES = ("batch", "cache_length", "kv_heads", "head_dim")  # of each cached key and value tensor


def constrain(x: jax.Array, names: tuple[str, ...]) -> jax.Array:
    """Pin an activation's sharding by logical axis names (a no-op outside a mesh with rules)."""
    return nn.with_logical_constraint(x, names)


def _param(module: nn.Module, name: str, shape: tuple[int, ...], names: tuple[str, ...], init=INIT) -> jax.Array:
    dtype = jnp.dtype(module.config.param_dtype)
    return module.param(name, nn.with_logical_partitioning(init, names), shape, dtype)


def linear(spec: str, x: jax.Array, kernel: jax.Array, config: ModelConfig, out_dtype=None) -> jax.Array:
    """x [batch, length, ...] times a kernel whose leading axes are x's feature axes, `spec` naming them after
    batch and length ('d,df->f' is [batch, length, d] x [d, f] -> [batch, length, f]); `out_dtype` is the
    product's (preferred_element_type). With config.linear_tokens 'flat' (automatic on CPU:
    `ModelConfig.for_platform` says why) it is one [tokens, in] x [in, out] product, `token_matmul`."""
    operands, out = spec.split("->")
    features, kernel_axes = operands.split(",")
    if kernel_axes != features + out:
        raise ValueError(f"linear spec {spec!r}: the kernel's axes must be x's feature axes, then the output's")
    if config.for_platform(jax.default_backend()).linear_tokens == "batch_length":
        return jnp.einsum(f"bt{operands}->bt{out}", x, kernel, preferred_element_type=out_dtype)
    batch, length = x.shape[:2]
    size = int(np.prod(x.shape[2:]))
    y = token_matmul(x.reshape(batch * length, size), kernel.reshape(size, -1), out_dtype)
    return y.reshape(batch, length, *kernel.shape[len(features):])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def token_matmul(x: jax.Array, kernel: jax.Array, out_dtype=None) -> jax.Array:
    """x [tokens, in] @ kernel [in, out]. Its kernel gradient is x^T @ g with x^T copied first: XLA:CPU's fast
    (YNNPACK) dot takes a left operand only with its contracted axis minor, and otherwise runs Eigen's at about
    half the speed (measured on the 2-core box: 60 against 33 GFLOP/s per core for the tiny preset's output layer)."""
    return jnp.matmul(x, kernel, preferred_element_type=out_dtype)


def _token_matmul_fwd(x, kernel, out_dtype):
    return token_matmul(x, kernel, out_dtype), (x, kernel)


def _token_matmul_bwd(out_dtype, residuals, g):
    x, kernel = residuals
    dx = jnp.matmul(g, kernel.T, preferred_element_type=jnp.float32).astype(x.dtype)
    x_t = jax.lax.optimization_barrier(x.T)  # keeps XLA from folding the transpose back into the dot
    dkernel = jnp.matmul(x_t, g, preferred_element_type=jnp.float32).astype(kernel.dtype)
    return dx, dkernel


token_matmul.defvjp(_token_matmul_fwd, _token_matmul_bwd)


class RMSNorm(nn.Module):
    """x / rms(x) computed in float32, cast back to the input dtype, then scaled (Zhang & Sennrich 2019)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        weight = _param(self, "weight", (x.shape[-1],), ("norm",), nn.initializers.ones)
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.config.norm_eps)
        return normed.astype(x.dtype) * weight.astype(x.dtype)


@functools.cache
def rope_table(head_dim: int, max_seq_len: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin [max_seq_len, head_dim // 2] of angle position * theta^(-2i/head_dim), in float32 as the
    reference's `precompute_freqs_cis`; computed once per shape."""
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32)[: head_dim // 2] / head_dim))
    angles = np.outer(np.arange(max_seq_len, dtype=np.float32), inv_freq.astype(np.float32)).astype(np.float32)
    return np.cos(angles), np.sin(angles)


def apply_rope(x: jax.Array, positions: jax.Array, theta: float, max_seq_len: int) -> jax.Array:
    """Rotate channel pairs (2i, 2i+1) of x [batch, length, heads, head_dim] as complex numbers by
    position-dependent angles: the reference `apply_rotary_emb` convention (Meta checkpoints load as-is)."""
    cos_table, sin_table = rope_table(x.shape[-1], max_seq_len, theta)
    cos = jnp.asarray(cos_table)[positions][:, :, None, :]  # [batch, length, 1, head_dim // 2]
    sin = jnp.asarray(sin_table)[positions][:, :, None, :]
    pairs = x.astype(jnp.float32).reshape(*x.shape[:-1], -1, 2)
    real, imag = pairs[..., 0], pairs[..., 1]
    rotated = jnp.stack([real * cos - imag * sin, real * sin + imag * cos], axis=-1)
    return rotated.reshape(x.shape).astype(x.dtype)


class Attention(nn.Module):
    """Causal multi-head (or grouped-query) self-attention with rotary q and k; no biases (reference code).
    With `cache_length` > 0 it attends through the key/value cache (module docstring)."""

    config: ModelConfig
    cache_length: int = 0

    @nn.compact
    def __call__(self, x: jax.Array, positions: jax.Array, segment_ids: jax.Array | None) -> jax.Array:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        wq = _param(self, "wq", (cfg.dim, cfg.n_heads, cfg.head_dim), ("embed", "heads", "head_dim"))
        wk = _param(self, "wk", (cfg.dim, cfg.kv_heads, cfg.head_dim), ("embed", "kv_heads", "head_dim"))
        wv = _param(self, "wv", (cfg.dim, cfg.kv_heads, cfg.head_dim), ("embed", "kv_heads", "head_dim"))
        wo = _param(self, "wo", (cfg.n_heads, cfg.head_dim, cfg.dim), ("heads", "head_dim", "embed"))

        q = checkpoint_name(linear("d,dnh->nh", x, wq.astype(dtype), cfg), "query")
        k = checkpoint_name(linear("d,dnh->nh", x, wk.astype(dtype), cfg), "key")
        v = checkpoint_name(linear("d,dnh->nh", x, wv.astype(dtype), cfg), "value")
        q = constrain(q, ("batch", "length", "heads", "head_dim"))
        k = constrain(k, ("batch", "length", "kv_heads", "head_dim"))
        v = constrain(v, ("batch", "length", "kv_heads", "head_dim"))
        q = apply_rope(q, positions, cfg.rope_theta, cfg.max_seq_len)
        k = apply_rope(k, positions, cfg.rope_theta, cfg.max_seq_len)

        if self.cache_length:
            k, v = update_cache(self, k, v, positions[:, 0])
            visible = jnp.arange(self.cache_length) <= positions[:, None, :, None]  # [batch, 1, length, cache_length]
            out = attention_lib.xla_attention(q, k, v, mask=visible)
        else:
            out = attention_lib.attention(q, k, v, segment_ids, impl=cfg.attention_impl)
        out = constrain(out, ("batch", "length", "heads", "head_dim"))
        return checkpoint_name(linear("nh,nhd->d", out, wo.astype(dtype), cfg), "attention_out")


def update_cache(module: nn.Module, k: jax.Array, v: jax.Array, start: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Write k, v [batch, length, kv_heads, head_dim] into `module`'s cache at slots start[b] onwards and return
    the whole cached keys and values [batch, cache_length, kv_heads, head_dim]."""
    shape = (k.shape[0], module.cache_length, *k.shape[2:])
    init = nn.with_logical_partitioning(jnp.zeros, CACHE_AXES)
    write = jax.vmap(lambda cache, new, slot: jax.lax.dynamic_update_slice_in_dim(cache, new, slot, axis=0))
    out = []
    for name, new in (("key", k), ("value", v)):
        cached = module.variable("cache", name, init, shape, new.dtype)
        cached.value = constrain(write(cached.value, new, start), CACHE_AXES)
        out.append(cached.value)
    return out[0], out[1]


class FeedForward(nn.Module):
    """SwiGLU (Shazeer 2020, as in PaLM): w2(silu(w1 x) * w3 x), hidden size 2/3 of 4d."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        w1 = _param(self, "w1", (cfg.dim, cfg.hidden_dim), ("embed", "mlp"))
        w3 = _param(self, "w3", (cfg.dim, cfg.hidden_dim), ("embed", "mlp"))
        w2 = _param(self, "w2", (cfg.hidden_dim, cfg.dim), ("mlp", "embed"))
        gate = checkpoint_name(linear("d,df->f", x, w1.astype(dtype), cfg), "ffn_gate")
        up = checkpoint_name(linear("d,df->f", x, w3.astype(dtype), cfg), "ffn_up")
        hidden = constrain(nn.silu(gate) * up, ("batch", "length", "mlp"))
        return checkpoint_name(linear("f,fd->d", hidden, w2.astype(dtype), cfg), "ffn_out")


class TransformerBlock(nn.Module):
    """Pre-normalisation (GPT-3): h = x + attn(norm(x)); out = h + ffn(norm(h))."""

    config: ModelConfig
    cache_length: int = 0

    @nn.compact
    def __call__(self, x: jax.Array, positions: jax.Array, segment_ids: jax.Array | None):
        h = x + Attention(self.config, self.cache_length, name="attention")(RMSNorm(self.config, name="attention_norm")(x), positions, segment_ids)
        out = h + FeedForward(self.config, name="feed_forward")(RMSNorm(self.config, name="ffn_norm")(h))
        out = constrain(out, ("batch", "length", "embed"))
        return out, None  # (carry, per-layer output) as nn.scan expects


def remat_policy(name: str):
    """The jax.checkpoint policy for a config's `remat_policy` ('none' means no remat at all)."""
    if name == "full":
        return jax.checkpoint_policies.nothing_saveable
    if name == "save_linear":
        return jax.checkpoint_policies.save_only_these_names(*LINEAR_OUTPUTS)
    raise ValueError(f"remat_policy={name!r} has no checkpoint policy")


class LLaMA(nn.Module):
    """Token ids [batch, length] -> float32 logits [batch, length, vocab]; `cache_length` > 0 decodes through
    a key/value cache of that many positions (module docstring)."""

    config: ModelConfig
    cache_length: int = 0

    @nn.compact
    def __call__(
        self,
        tokens: jax.Array,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        return_hidden: bool = False,
    ) -> jax.Array:
        """`positions` default to 0..length-1; `segment_ids` keep attention inside packed documents;
        `return_hidden` gives the final-normed hidden state [batch, length, embed] instead of logits."""
        cfg = self.config.for_platform(jax.default_backend())
        check_tokens(tokens, cfg.vocab_size)
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
        check_positions(positions, cfg.max_seq_len)

        embedding = _param(self, "tok_embeddings", (cfg.vocab_size, cfg.dim), ("vocab", "embed"))
        # Look rows up in a table whole along `embed` (gathered over its FSDP shards): a gather cannot move the
        # table's embed sharding onto the batch axis, and XLA would otherwise rematerialise the lookup in full.
        x = jnp.take(constrain(embedding, ("vocab", None)), tokens, axis=0).astype(jnp.dtype(cfg.dtype))
        x = constrain(x, ("batch", "length", "embed"))

        block = TransformerBlock
        if cfg.remat_policy != "none":
            # CSE across the recomputation is safe to allow only inside a rolled loop
            rolled = cfg.scan_layers and cfg.scan_unroll == 1
            block = nn.remat(block, policy=remat_policy(cfg.remat_policy), prevent_cse=not rolled)
        if cfg.scan_layers:
            stack = nn.scan(
                block,
                variable_axes={"params": 0, "cache": 0},
                split_rngs={"params": True},
                in_axes=(nn.broadcast, nn.broadcast),
                length=cfg.n_layers,
                unroll=cfg.scan_unroll,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            x, _ = stack(cfg, self.cache_length, name="layers")(x, positions, segment_ids)
        else:
            for i in range(cfg.n_layers):
                x, _ = block(cfg, self.cache_length, name=f"layers_{i}")(x, positions, segment_ids)

        x = RMSNorm(cfg, name="norm")(x)
        if return_hidden:
            return x
        output = _param(self, "output", (cfg.dim, cfg.vocab_size), ("embed", "vocab"))  # untied from the embedding
        logits = linear("d,dv->v", x, output.astype(x.dtype), cfg, out_dtype=jnp.float32)
        return constrain(logits, ("batch", "length", "vocab"))


def check_tokens(tokens: jax.Array, vocab_size: int) -> None:
    """Raise on token ids outside [0, vocab_size) when the ids are concrete (traced ids cannot be inspected)."""
    if isinstance(tokens, jax.core.Tracer):
        return
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(
            f"token ids must lie in [0, {vocab_size}) (vocab_size), got min {tokens.min()} and max {tokens.max()}"
        )


def check_positions(positions: jax.Array, max_seq_len: int) -> None:
    """Raise on concrete positions outside the rotary table [0, max_seq_len)."""
    if isinstance(positions, jax.core.Tracer):
        return
    positions = np.asarray(positions)
    if positions.size and (positions.min() < 0 or positions.max() >= max_seq_len):
        raise ValueError(f"positions must lie in [0, {max_seq_len}) (max_seq_len), got max {positions.max()}")


def init_params(config: ModelConfig, rng: jax.Array, length: int = 8):
    """Random parameters (logically boxed tree, as `LLaMA.init` returns it) for `config`."""
    tokens = jnp.zeros((1, min(length, config.max_seq_len)), dtype=jnp.int32)
    return LLaMA(config).init(rng, tokens)["params"]


@functools.lru_cache(maxsize=32)
def abstract_params(config: ModelConfig):
    """The parameter tree as `LLaMA.init` boxes it: ShapeDtypeStructs with their logical axis names, nothing
    allocated. The one abstract tree that shapes, shardings and conversion checks are read from; do not mutate."""
    return jax.eval_shape(lambda rng: init_params(config, rng, length=1), jax.random.key(0))


def param_shapes(config: ModelConfig):
    """ShapeDtypeStructs of the (unboxed) parameters, computed without allocating."""
    return nn.meta.unbox(abstract_params(config))


def count_params(config: ModelConfig) -> int:
    """Number of parameters of `config`, counted from shapes alone."""
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(param_shapes(config)))
