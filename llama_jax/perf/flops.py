"""Model FLOPs, in one place: 6N for the matmuls plus causal attention, as MaxText counts them.

Per trained token (forward + backward = 3x forward):
- parameter matmuls: 6 * N_matmul, where N_matmul is every parameter except the input embedding (a lookup,
  not a matmul);
- attention scores and values: forward 2 * 2 * length * n_heads * head_dim per layer, halved for the causal
  mask (the kernels skip masked blocks), so 6 * n_layers * length * n_heads * head_dim per token.
MFU = achieved model FLOP/s / the device's dense peak; rematerialisation is not counted (hardware FLOPs differ).

Decoding is bound by memory bandwidth instead: each step reads every matmul weight once (shared by the batch)
and each row's cached keys and values, so tokens/s <= batch * HBM bandwidth / those bytes.
"""

from __future__ import annotations

import jax.numpy as jnp

from llama_jax.config import ModelConfig

# Dense bf16 peak per chip, FLOP/s (datasheets; the NVIDIA figures are without sparsity).
PEAK_FLOPS = {
    "h100": 989e12,
    "h200": 989e12,
    "a100": 312e12,
    "tpu v4": 275e12,
    "tpu v5 lite": 197e12,  # v5e
    "tpu v5e": 197e12,
    "tpu v5p": 459e12,
    "tpu v5": 459e12,
    "tpu v6 lite": 918e12,  # v6e (Trillium)
    "tpu v6e": 918e12,
}


# HBM bandwidth per chip, bytes/s (datasheets), beside the peaks: what bounds decoding.
HBM_BANDWIDTH = {
    "h100 pcie": 2.0e12,
    "h100": 3.35e12,  # SXM5, HBM3
    "h200": 4.8e12,
    "a100": 2.039e12,  # SXM4 80GB (the 40GB card: 1.555e12)
    "tpu v4": 1.228e12,
    "tpu v5 lite": 819e9,  # v5e
    "tpu v5e": 819e9,
    "tpu v5p": 2.765e12,
    "tpu v5": 2.765e12,
    "tpu v6 lite": 1.64e12,  # v6e (Trillium)
    "tpu v6e": 1.64e12,
}


def matmul_params(config: ModelConfig) -> int:
    """Parameters that take part in matmuls: all but the input embedding table."""
    per_layer = (
        config.dim * config.n_heads * config.head_dim * 2  # wq, wo
        + config.dim * config.kv_heads * config.head_dim * 2  # wk, wv
        + 3 * config.dim * config.hidden_dim  # w1, w2, w3
    )
    return config.n_layers * per_layer + config.dim * config.vocab_size  # + output projection


def attention_flops_per_token(config: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token of QK^T and PV under a causal mask (forward and backward)."""
    return 6.0 * config.n_layers * seq_len * config.n_heads * config.head_dim


def train_flops_per_token(config: ModelConfig, seq_len: int) -> float:
    """Model FLOPs to train on one token at context `seq_len`: 6N plus causal attention."""
    return 6.0 * matmul_params(config) + attention_flops_per_token(config, seq_len)


def decode_bytes_per_step(config: ModelConfig, batch: int, context: float) -> tuple[float, float]:
    """(parameter bytes, cache bytes) one decoding step reads at least: the matmul weights in config.param_dtype
    (the input embedding is a lookup of `batch` rows) and keys and values over `context` positions per row."""
    params = matmul_params(config) * jnp.dtype(config.param_dtype).itemsize
    cache = 2 * config.n_layers * config.kv_heads * config.head_dim * jnp.dtype(config.dtype).itemsize * batch * context
    return float(params), float(cache)


def _lookup(table: dict[str, float], device_kind: str) -> float | None:
    kind = device_kind.lower()
    for name in sorted(table, key=len, reverse=True):  # "tpu v5 lite" before "tpu v5", "h100 pcie" before "h100"
        if name in kind:
            return table[name]
    return None


def peak_flops(device_kind: str) -> float | None:
    """Dense bf16 peak of a device from its `jax.Device.device_kind`, or None when unknown (e.g. CPU)."""
    return _lookup(PEAK_FLOPS, device_kind)


def hbm_bandwidth(device_kind: str) -> float | None:
    """HBM bytes/s of a device from its `jax.Device.device_kind`, or None when unknown (e.g. CPU)."""
    return _lookup(HBM_BANDWIDTH, device_kind)
