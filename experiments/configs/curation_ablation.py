"""The curation ablation (README, "Curation"): tiny.py's model and recipe trained on CommonCrawl alone, raw or
curated, for the same number of tokens; then every model's held-out loss on the other (clean) sources.

    --config=experiments/configs/curation_ablation.py:raw       the bundled raw CommonCrawl stand-in (make corpus)
    --config=experiments/configs/curation_ablation.py:curated   its curated version (make curate)
    --config=experiments/configs/curation_ablation.py:eval      the held-out sets: every source's validation split
Both runs use the corpus tokenizer, so their losses (nats per token) compare; `python -m experiments.curation_ablation`
runs all of it.
"""

from data_pipeline.curation.mixture import DEFAULT_DIR
from experiments.configs import tiny
from llama_jax.corpus_spec import SOURCE_NAMES

VARIANTS = ("raw", "curated", "eval")


def get_config(arg: str = "raw"):
    if arg not in VARIANTS:
        raise ValueError(f"curation_ablation.py:{arg}: expected one of {', '.join(VARIANTS)}")
    c = tiny.get_config()
    for name in SOURCE_NAMES:
        c.data.weights[name] = 1.0 / len(SOURCE_NAMES) if arg == "eval" else 0.0
    if arg == "eval":
        c.data.normalize_weights = True
        c.train.eval_batches = 16  # 16 x 16 x 128 = 32k held-out tokens per source
    else:
        c.data.weights.commoncrawl = 1.0
    if arg == "curated":
        c.data.sources.commoncrawl = f"jsonl:{DEFAULT_DIR}/commoncrawl/{{split}}-*.jsonl.gz"
    return c
