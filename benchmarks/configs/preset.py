"""A model preset with the paper's recipe for speed runs: `--config=benchmarks/configs/preset.py:llama_7b`
(`python -m llama_jax.bench` and `python -m llama_jax.aot` also take the bare preset name).

Synthetic tokens, bf16 compute over float32 master weights, layers scanned, and the paper's checkpointing
(§2.4: keep the linear-layer outputs, recompute the rest). The batch is the paper's 4M tokens (2048 x 2048);
override `--config.train.global_batch_size` for one accelerator.
"""

from experiments.configs.common import paper_config


def get_config(preset: str = "llama_7b"):
    c = paper_config(preset)
    c.data.source = "synthetic"
    c.train.seq_len = min(c.train.seq_len, c.model.max_seq_len)  # the CPU presets have short contexts
    c.train.steps = 20
    c.train.log_every = 1
    c.optimizer.warmup_steps = 10
    c.lock()
    return c
