"""Print a preset's parameter count, training FLOPs per token and memory: `python -m llama_jax.info --model=llama_65b`."""

from __future__ import annotations

from absl import flags

from llama_jax import cli
from llama_jax.config import PRESETS, ModelConfig, get_preset
from llama_jax.model.llama import count_params
from llama_jax.perf import flops

GIB = 1024**3


def describe(model: str | ModelConfig, seq_len: int | None = None) -> dict[str, float]:
    """Parameters (all, and without the input and output tables), FLOPs per token and float32 training memory
    (weights, gradients, AdamW moments) of a preset (by name) or a ModelConfig."""
    config = get_preset(model) if isinstance(model, str) else model
    seq_len = seq_len or config.max_seq_len
    n = count_params(config)
    return {
        "params": n,
        "non_embedding_params": n - 2 * config.vocab_size * config.dim,
        "seq_len": seq_len,
        "train_flops_per_token": flops.train_flops_per_token(config, seq_len),
        "six_n_flops_per_token": 6.0 * flops.matmul_params(config),
        "weights_gib": 4 * n / GIB,
        "gradients_gib": 4 * n / GIB,
        "adam_moments_gib": 8 * n / GIB,
    }


def main(argv):
    del argv
    name = flags.FLAGS.model
    config = get_preset(name)
    d = describe(name, flags.FLAGS.seq_len)
    print(f"{name}: dim={config.dim} n_layers={config.n_layers} n_heads={config.n_heads} "
          f"kv_heads={config.kv_heads} hidden={config.hidden_dim} vocab={config.vocab_size}")
    print(f"  parameters               {d['params']:,} ({d['non_embedding_params']:,} non-embedding)")
    print(f"  train FLOPs / token      {d['train_flops_per_token']:.4g} at context {d['seq_len']} "
          f"(6N = {d['six_n_flops_per_token']:.4g}, causal attention = "
          f"{d['train_flops_per_token'] - d['six_n_flops_per_token']:.4g})")
    print(f"  float32 weights          {d['weights_gib']:.2f} GiB")
    print(f"  gradients + AdamW (f32)  {d['gradients_gib'] + d['adam_moments_gib']:.2f} GiB "
          f"(total {d['weights_gib'] + d['gradients_gib'] + d['adam_moments_gib']:.2f} GiB before sharding)")


def define_flags() -> None:
    """The command's flags."""
    flags.DEFINE_string("model", "llama_7b", f"preset: one of {sorted(PRESETS)}")
    flags.DEFINE_integer("seq_len", None, "context length for the attention FLOPs (default: the preset's)")


def run() -> None:
    """The command: its flags, then `main`."""
    define_flags()
    cli.run_absl(main)


if __name__ == "__main__":
    run()
