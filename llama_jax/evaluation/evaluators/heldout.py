"""Held-out loss per source: next-token cross-entropy on the first `train.eval_batches` batches of each source's
validation split (the data pipeline's `eval_streams`), the same batches at every evaluation."""

from __future__ import annotations

import math
from collections.abc import Iterable

import jax

from llama_jax.train import step as ts


def evaluate(eval_step, params, streams: dict[str, Iterable], config, mesh) -> dict[str, float]:
    """Mean held-out loss per source over `train.eval_batches` batches, {'eval/<source>/loss': nats}, and its
    standard error over those batches, {'eval/<source>/loss_se': nats} (the evaluation's own noise, to set
    against the run-to-run noise of seeds; 0 with one batch)."""
    run = ts.setup(config, mesh)  # the batch shardings, built once for every batch below
    results = {}
    for name, stream in streams.items():
        total, count, means = 0.0, 0.0, []
        for _, batch in zip(range(config.train.eval_batches), stream, strict=False):
            loss_sum, n = jax.device_get(eval_step(params, run.device_batch(batch)))
            total, count = total + float(loss_sum), count + float(n)
            means.append(float(loss_sum) / max(float(n), 1.0))
        results[f"eval/{name}/loss"] = total / max(count, 1.0)
        results[f"eval/{name}/loss_se"] = standard_error(means)
    return results


def standard_error(values: list[float]) -> float:
    """Standard error of the mean of `values` (sample sd / sqrt(count)); 0 for fewer than two."""
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))


def with_perplexity(losses: dict[str, float]) -> dict[str, float]:
    """`losses` ({'eval/<source>/loss': nats, ...}) with each source's perplexity exp(loss) beside it."""
    return {**losses, **{key.removesuffix("/loss") + "/perplexity": math.exp(value) for key, value in losses.items()
                         if key.endswith("/loss")}}
