"""`python -m experiments.curation_ablation`: does curation help? tiny models trained on the raw and on the
curated CommonCrawl source (same tokens, same recipe; experiments/configs/curation_ablation.py), then each
model's held-out loss on every source's validation split (the clean sources, and raw CommonCrawl).

    python -m experiments.curation_ablation [--workdir=workdirs/curation_ablation]

Needs `make corpus` (raw stand-in, tokenizer, validation splits) and `make curate` (curated CommonCrawl). Training
resumes if interrupted; `results.json` and a markdown table are written into the workdir.
"""

from __future__ import annotations

import argparse
import json
import os

from llama_jax import cli


def heldout_losses(train_config, eval_config, workdir: str) -> dict[str, float]:
    """Held-out loss per source (nats per token) of the last checkpoint in `workdir`, on `eval_config`'s sources."""
    import data_pipeline
    from llama_jax import sharding
    from llama_jax.evaluation.evaluators import heldout
    from llama_jax.train import checkpoint
    from llama_jax.train import step as ts

    mesh = sharding.make_mesh(train_config)
    manager = checkpoint.manager(workdir, train_config)
    restored = checkpoint.restore_latest(manager, train_config, ts.abstract_state(train_config, mesh))
    manager.close()
    if restored is None:
        raise FileNotFoundError(f"{workdir} has no checkpoint; the training did not run")
    streams = data_pipeline.eval_streams(eval_config)
    losses = heldout.evaluate(ts.make_eval_step(eval_config, mesh), restored[0].params, streams, eval_config, mesh)
    return per_source(losses)


def per_source(metrics: dict[str, float]) -> dict[str, float]:
    """{source: loss} from the held-out evaluator's `eval/<source>/loss` entries (not their `loss_se`)."""
    return {key.split("/")[1]: value for key, value in metrics.items() if key.endswith("/loss")}


def table(results: dict[str, dict[str, float]]) -> str:
    """Markdown: one row per held-out source, the two models' losses and the difference (curated - raw)."""
    lines = ["| held-out source | trained on raw CC | trained on curated CC | curated - raw |", "|---|---|---|---|"]
    for source, raw in results["raw"].items():
        curated = results["curated"][source]
        lines.append(f"| {source} | {raw:.3f} | {curated:.3f} | {curated - raw:+.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default="workdirs/curation_ablation", help="one subdirectory per run")
    args = parser.parse_args(argv)
    from experiments.configs import curation_ablation
    from llama_jax.train.loop import train

    eval_config = curation_ablation.get_config("eval")
    results = {}
    for variant in ("raw", "curated"):
        config = curation_ablation.get_config(variant)
        train(config, f"{args.workdir}/{variant}")
        results[variant] = heldout_losses(config, eval_config, f"{args.workdir}/{variant}")
    os.makedirs(args.workdir, exist_ok=True)
    with open(f"{args.workdir}/results.json", "w") as f:
        json.dump(results, f, indent=1)
    with open(f"{args.workdir}/table.md", "w") as f:
        f.write(table(results) + "\n")
    print(table(results))


if __name__ == "__main__":
    cli.run(main)
