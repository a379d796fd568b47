"""The tiny run on the curated mixture (`make curate`): tiny.py's model and recipe, every source read from
`.cache/curated/<source>` (the Beam pipelines' output) with the tokenizer trained on it."""

from data_pipeline.curation.mixture import DEFAULT_DIR, TOKENIZER
from experiments.configs import tiny
from llama_jax.corpus_spec import SOURCE_NAMES


def get_config():
    c = tiny.get_config()
    for name in SOURCE_NAMES:
        c.data.sources[name] = f"jsonl:{DEFAULT_DIR}/{name}/{{split}}-*.jsonl.gz"
    c.data.tokenizer = f"{DEFAULT_DIR}/{TOKENIZER}"
    return c
