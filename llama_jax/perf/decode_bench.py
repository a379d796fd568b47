"""Decoding speed against its memory-bandwidth bound (`python -m llama_jax.bench --mode=decode`).

`sampling.generate` runs once to compile, then is timed on the same prompts (random tokens, random weights, no
EOS, so every row decodes `new_tokens`): time to first token (the prompts through the cache and the first
token) and decode tokens/s. Beside them the bound: each step must read the matmul weights once and every
row's cache up to its position (`flops.decode_bytes_per_step`, at the mean context of the decode), so
tokens/s <= batch * HBM bandwidth / bytes per step. Devices without a known bandwidth (CPU) print 'n/a'.
"""

from __future__ import annotations

import jax
import numpy as np

from llama_jax.perf import flops

GB = 1e9


def measure_decode(config, batch: int = 1, prompt_len: int = 128, new_tokens: int = 128) -> dict:
    """Time `batch` prompts of `prompt_len` tokens continued by `new_tokens` tokens with `config`'s model."""
    import flax.linen as nn

    from llama_jax.inference import sampling
    from llama_jax.model.llama import init_params
    from llama_jax.train import step as train_step

    model = train_step.model_config(config)
    if prompt_len + new_tokens > model.max_seq_len:
        raise ValueError(f"prompt_len={prompt_len} + new_tokens={new_tokens} exceeds max_seq_len={model.max_seq_len}")
    if new_tokens < 2:
        raise ValueError(f"new_tokens={new_tokens}: decoding speed needs at least 2 (the first comes from prefill)")
    params = jax.jit(lambda key: nn.meta.unbox(init_params(model, key, length=1)))(jax.random.PRNGKey(config.seed))
    prompts = np.random.default_rng(config.seed).integers(0, model.vocab_size, (batch, prompt_len)).tolist()
    first = sampling.generate(model, params, prompts, max_new_tokens=new_tokens)  # compiles
    out = sampling.generate(model, params, prompts, max_new_tokens=new_tokens)
    assert all(len(t) == new_tokens for t in out.tokens), "every row decodes new_tokens (no EOS, within context)"

    device = jax.devices()[0]
    steps = new_tokens - 1
    param_bytes, cache_bytes = flops.decode_bytes_per_step(model, batch, prompt_len + new_tokens / 2)
    bandwidth = flops.hbm_bandwidth(device.device_kind)
    bound = None if bandwidth is None else batch * bandwidth / (param_bytes + cache_bytes)
    return {
        "mode": "decode",
        "device": device.device_kind,
        "preset": str(config.get("model_preset", "custom")),
        "params": int(sum(np.prod(x.shape) for x in jax.tree.leaves(params))),
        "dtype": model.dtype,
        "param_dtype": model.param_dtype,
        "batch": batch,
        "prompt_len": prompt_len,
        "new_tokens": new_tokens,
        "compile_s": round(first.compile_s, 2),
        "ttft_s": out.prefill_s,
        "prefill_tokens_per_s": out.prefill_tokens_per_s,
        "decode_step_s": out.decode_s / steps,
        "decode_tokens_per_s": out.decode_tokens_per_s,
        "param_gb_per_step": param_bytes / GB,
        "cache_gb_per_step": cache_bytes / GB,
        "hbm_bandwidth_gb_per_s": None if bandwidth is None else bandwidth / GB,
        "bound_tokens_per_s": bound,
        "fraction_of_bound": None if bound is None else out.decode_tokens_per_s / bound,
    }


def format_decode(r: dict) -> str:
    """One human-readable line per decode run."""
    line = (f"{r['preset']} {r['dtype']} (weights {r['param_dtype']}) decode, batch {r['batch']}, prompt "
            f"{r['prompt_len']} + {r['new_tokens']} new, on {r['device']}: time to first token "
            f"{r['ttft_s'] * 1e3:.1f} ms ({r['prefill_tokens_per_s']:,.0f} prompt tokens/s), decode "
            f"{r['decode_tokens_per_s']:,.1f} tokens/s ({r['decode_step_s'] * 1e3:.2f} ms/step); bound: ")
    if r["bound_tokens_per_s"] is None:
        return line + "n/a (no known memory bandwidth)"
    return line + (f"{r['bound_tokens_per_s']:,.0f} tokens/s ({r['param_gb_per_step']:.2f} GB weights + "
                   f"{r['cache_gb_per_step']:.2f} GB cache per step at {r['hbm_bandwidth_gb_per_s']:,.0f} GB/s), "
                   f"{r['fraction_of_bound']:.0%} of it")
