"""`python -m data_pipeline.curation.mixture`: the curated mixture (`make curate`): the seven sources' raw material
(.cache/raw, `python -m data_pipeline.curation.raw`) through their pipelines into `.cache/curated/<source>/`, then
a SentencePiece tokenizer trained on the curated train splits (data_pipeline.corpus's recipe and Table 1
sample) into `.cache/curated/tokenizer.model`. `experiments/configs/tiny_curated.py` trains on the result.

A source whose directory holds `stats.json` is complete (the file is written last) and is kept: a second run
only does what is missing. A directory with shards but no `stats.json` is a run that did not finish: it is
refused, as `python -m data_pipeline.curate` refuses any non-empty directory; delete it and run again.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import tempfile

from llama_jax import cli
from llama_jax.corpus_spec import SOURCE_NAMES

DEFAULT_DIR = ".cache/curated"
RAW_DIR = ".cache/raw"
TOKENIZER = "tokenizer.model"
# Where each `raw.<source>` module puts its files, as globs under RAW_DIR/<source>.
RAW_GLOBS = {"commoncrawl": "*.warc.wet.gz", "c4": "*.json.gz", "github": "**", "wikipedia": "*.xml.bz2",
             "books": "*/*", "arxiv": "*", "stackexchange": "*/Posts.xml"}


def curate_source(source: str, raw_dir: str, out_dir: str, beam_args: list[str]) -> dict:
    """Runs `source`'s pipeline unless it has completed; returns its stats (stats.json)."""
    from data_pipeline.curation import pipelines

    target = f"{out_dir}/{source}"
    if os.path.exists(f"{target}/stats.json"):
        with open(f"{target}/stats.json") as f:
            return json.load(f)
    return pipelines.run(source, f"{raw_dir}/{source}/{RAW_GLOBS[source]}", target, beam_args)


def manifest(out_dir: str) -> dict:
    """The corpus-manifest view of the curated train shards that `corpus.tokenizer_sample` reads."""
    sources = {}
    for name in SOURCE_NAMES:
        shards = sorted(glob.glob(f"{out_dir}/{name}/train-*.jsonl.gz"))
        if not shards:
            raise FileNotFoundError(f"{out_dir}/{name} has no train shards; curate it first")
        sources[name] = {"splits": {"train": {"shards": [{"path": os.path.relpath(p, out_dir)} for p in shards]}}}
    return {"sources": sources}


def train_tokenizer(out_dir: str, vocab_size: int, threads: int) -> str:
    """The corpus builder's SentencePiece recipe on a Table 1-weighted sample of the curated train splits."""
    from data_pipeline import corpus

    path = f"{out_dir}/{TOKENIZER}"
    if os.path.exists(path):
        return path
    with tempfile.TemporaryDirectory() as tmp:
        corpus.tokenizer_sample(out_dir, manifest(out_dir), f"{tmp}/sample.txt", corpus.TOKENIZER_SAMPLE_BYTES)
        corpus.train_tokenizer(f"{tmp}/sample.txt", f"{tmp}/tokenizer", vocab_size, threads)
        os.replace(f"{tmp}/tokenizer.model", path)  # whole or not at all
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--raw", default=RAW_DIR, help="the raw material (python -m data_pipeline.curation.raw)")
    parser.add_argument("--out", default=DEFAULT_DIR, help="where the curated sources and tokenizer go")
    parser.add_argument("--vocab_size", type=int, default=8192, help="tokenizer vocabulary (tiny presets: 8192)")
    parser.add_argument("--sources", default=",".join(SOURCE_NAMES), help="comma-separated sources to curate")
    args, beam_args = parser.parse_known_args(argv)
    from data_pipeline.curation import logs

    logs.hold()  # before Beam's first import: its records go to each source's beam.log, not the console
    from data_pipeline.curation import stats

    unknown = set(args.sources.split(",")) - set(SOURCE_NAMES)
    if unknown:
        raise cli.UsageError(f"--sources: {sorted(unknown)} are not LLaMA sources ({', '.join(SOURCE_NAMES)})")
    for source in args.sources.split(","):
        print(f"{source}: curating {args.raw}/{source} into {args.out}/{source} (Beam's log: beam.log there)", flush=True)
        print(stats.table(curate_source(source, args.raw, args.out, beam_args)) + "\n", flush=True)
    print(f"tokenizer: {train_tokenizer(args.out, args.vocab_size, os.cpu_count() or 1)}")


if __name__ == "__main__":
    cli.run(main)
