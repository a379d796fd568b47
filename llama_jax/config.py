"""Model hyper-parameters: one frozen dataclass, and the presets of Table 2 of the paper."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn", "splash")
REMAT_POLICIES = ("none", "full", "save_linear")
DTYPES = ("float32", "bfloat16", "float16")
LINEAR_TOKENS = ("auto", "flat", "batch_length")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The shape of a LLaMA transformer and how it computes (dtypes, scan, remat, attention kernel)."""

    dim: int = 512
    n_layers: int = 8
    n_heads: int = 8
    n_kv_heads: int | None = None  # None: multi-head attention (LLaMA-1); fewer: grouped-query (Llama 2/3).
    vocab_size: int = 32000
    multiple_of: int = 256  # SwiGLU hidden size is rounded up to a multiple of this (reference FeedForward).
    ffn_dim_multiplier: float | None = None  # Llama 3 scales 8d/3 by this before rounding.
    hidden_dim_override: int | None = None  # Exact hidden size, when a checkpoint states it (HF intermediate_size).
    norm_eps: float = 1e-6  # LLaMA-1 params.json; Llama 2 uses 1e-5.
    rope_theta: float = 10000.0
    max_seq_len: int = 2048
    # Computation, not shape: none of these changes the parameters or (beyond rounding) the numbers.
    dtype: str = "float32"  # compute dtype of activations and matmuls
    param_dtype: str = "float32"  # master weights
    scan_layers: bool = True  # nn.scan over blocks: compile time independent of depth
    remat_policy: str = "none"
    attention_impl: str = "auto"
    # XLA:CPU speed settings; `for_platform` chooses the automatic ones (0, "auto") for the platform at hand.
    scan_unroll: int = 0  # layers per loop iteration of the scanned stack; 0: all of them on CPU, 1 elsewhere
    linear_tokens: str = "auto"  # "flat": linear layers see [batch * length, ...]; "batch_length": [batch, length, ...]

    def __post_init__(self):
        if self.dim <= 0 or self.n_layers <= 0 or self.n_heads <= 0 or self.vocab_size <= 0:
            raise ValueError(f"dim, n_layers, n_heads and vocab_size must be positive, got {self}")
        if self.dim % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} does not divide dim={self.dim}")
        if self.head_dim % 2:
            raise ValueError(
                f"head_dim={self.head_dim} (dim={self.dim} / n_heads={self.n_heads}) is odd: rotary embeddings "
                "rotate pairs of channels, so head_dim must be even"
            )
        if self.kv_heads <= 0 or self.n_heads % self.kv_heads:
            raise ValueError(f"n_kv_heads={self.n_kv_heads} must be positive and divide n_heads={self.n_heads}")
        for name, value, allowed in (
            ("dtype", self.dtype, DTYPES),
            ("param_dtype", self.param_dtype, DTYPES),
            ("remat_policy", self.remat_policy, REMAT_POLICIES),
            ("attention_impl", self.attention_impl, ATTENTION_IMPLEMENTATIONS),
            ("linear_tokens", self.linear_tokens, LINEAR_TOKENS),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {allowed}")
        if self.scan_unroll < 0:
            raise ValueError(f"scan_unroll={self.scan_unroll} must be 0 (automatic) or a positive number of layers")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def hidden_dim(self) -> int:
        """SwiGLU hidden size: 2/3 of 4d (paper §2.2), scaled, then rounded up to `multiple_of` (reference code)."""
        if self.hidden_dim_override is not None:
            return self.hidden_dim_override
        hidden = int(2 * 4 * self.dim / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * math.ceil(hidden / self.multiple_of)

    def for_platform(self, platform: str) -> ModelConfig:
        """This config with its automatic speed settings chosen for `platform` (jax's 'cpu', 'gpu', 'tpu'): the one
        place they are chosen. On CPU the scanned layers are unrolled (XLA:CPU otherwise zero-fills stacked buffers
        for every layer's saved activations and copies each layer in and out) and linear layers see one token axis
        (for a [batch, length] contraction XLA:CPU copies a transposed activation before each weight gradient and
        computes the fused activation gradient twice); on accelerators the loop stays rolled (compile time
        independent of depth) and activations keep [batch, length], which shard over both axes."""
        cpu = platform == "cpu"
        tokens = self.linear_tokens if self.linear_tokens != "auto" else "flat" if cpu else "batch_length"
        return self.replace(scan_unroll=self.scan_unroll or (self.n_layers if cpu else 1), linear_tokens=tokens)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown model config fields {unknown}; known fields are {sorted(known)}")
        return cls(**fields)


# Table 2 of the paper. head_dim is 128 everywhere; context 2048 and vocab 32000 come from the release.
PRESETS: dict[str, ModelConfig] = {
    "llama_7b": ModelConfig(dim=4096, n_layers=32, n_heads=32),
    "llama_13b": ModelConfig(dim=5120, n_layers=40, n_heads=40),
    "llama_33b": ModelConfig(dim=6656, n_layers=60, n_heads=52),
    "llama_65b": ModelConfig(dim=8192, n_layers=80, n_heads=64),
    # Later releases whose weights load here: different eps, GQA, theta, vocab.
    "llama2_7b": ModelConfig(dim=4096, n_layers=32, n_heads=32, norm_eps=1e-5, max_seq_len=4096),
    "llama3_8b": ModelConfig(
        dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, vocab_size=128256, multiple_of=1024,
        ffn_dim_multiplier=1.3, norm_eps=1e-5, rope_theta=500000.0, max_seq_len=8192,
    ),
    # Accelerator benchmark sizes (head_dim 128 like the paper's).
    "llama_400m": ModelConfig(dim=1024, n_layers=24, n_heads=8),
    "llama_1b": ModelConfig(dim=2048, n_layers=18, n_heads=16),
    "llama_3b": ModelConfig(dim=3072, n_layers=26, n_heads=24),
    # CPU sizes: `tiny` is what `make train` trains; `debug` is what the tests compile.
    "tiny": ModelConfig(dim=256, n_layers=4, n_heads=4, vocab_size=8192, multiple_of=64, max_seq_len=256),
    "debug": ModelConfig(dim=64, n_layers=2, n_heads=4, vocab_size=256, multiple_of=32, max_seq_len=64),
}


def get_preset(name: str) -> ModelConfig:
    """The preset called `name`, or a ValueError listing the known ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known presets: {sorted(PRESETS)}")
    return PRESETS[name]
