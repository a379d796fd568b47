"""`python -m data_pipeline.curate`: curate one LLaMA source with its Beam pipeline (data_pipeline.curation).

    python -m data_pipeline.curate --source=commoncrawl --input='.cache/raw/commoncrawl/*.warc.wet.gz' \
        --output=.cache/curated/commoncrawl [--config.min_chars=300 ...] [Beam pipeline options]
    python -m data_pipeline.curate --bench [--bench_mb=8]      # CommonCrawl MB/s per core: Beam vs a plain loop

Writes OUTPUT/{train,validation}-NNNNN-of-MMMMM.jsonl.gz (read as `data.sources.<name>='jsonl:OUTPUT/{split}-*.jsonl.gz'`)
OUTPUT/stats.json, OUTPUT/dropped.jsonl.gz (id, stage and reason of every dropped document) and OUTPUT/beam.log
(Beam's own logging, its workers' included), and prints the per-stage table. OUTPUT must be new or empty. Every other `--flag` is a Beam
pipeline option: `--runner=DirectRunner --direct_running_mode=multi_processing --direct_num_workers=2` here,
`--runner=DataflowRunner|FlinkRunner|SparkRunner ...` on a cluster (README, "Curation").
"""

from __future__ import annotations

import argparse
import json

from llama_jax import cli

CONFIG_PREFIX = "--config."


def split_args(rest: list[str]) -> tuple[dict[str, str], list[str]]:
    """Arguments argparse did not know -> (`--config.FIELD=VALUE` overrides, Beam pipeline arguments)."""
    overrides, beam_args = {}, []
    for arg in rest:
        if arg.startswith(CONFIG_PREFIX):
            name, sep, value = arg[len(CONFIG_PREFIX):].partition("=")
            if not sep or not name:
                raise cli.UsageError(f"{arg!r}: write a setting as --config.FIELD=VALUE")
            overrides[name] = value
        else:
            beam_args.append(arg)
    return overrides, beam_args


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", help="one of the seven LLaMA sources (commoncrawl, c4, github, ...)")
    parser.add_argument("--input", help="glob of the raw files (quote it), local or gs://")
    parser.add_argument("--output", help="new or empty output directory, local or gs://")
    parser.add_argument("--bench", action="store_true", help="benchmark the CommonCrawl pipeline instead")
    parser.add_argument("--bench_mb", type=float, default=8.0, help="MB of raw WET text the benchmark curates")
    args, rest = parser.parse_known_args(argv)
    overrides, beam_args = split_args(rest)
    from data_pipeline.curation import logs

    logs.hold()  # before Beam's first import: its records go to OUTPUT/beam.log, not the console
    if args.bench:
        from data_pipeline.curation import engine_bench

        report = engine_bench.run(args.bench_mb, beam_args)
        print(engine_bench.format_report(report))
        print(json.dumps(report))
        return
    missing = [f"--{name}" for name in ("source", "input", "output") if not getattr(args, name)]
    if missing:
        raise cli.UsageError(f"missing {', '.join(missing)}; e.g. --source=commoncrawl "
                             "--input='.cache/raw/commoncrawl/*.warc.wet.gz' --output=.cache/curated/commoncrawl")
    from data_pipeline.curation import pipelines, stats

    config = pipelines.make_config(pipelines.source_module(args.source), overrides)
    summary = pipelines.run(args.source, args.input, args.output, beam_args, config)
    print(stats.table(summary))
    print(f"wrote {args.output} (stats.json, Beam's log beam.log and, if any document was dropped, dropped.jsonl.gz "
          "beside the shards)")


if __name__ == "__main__":
    cli.run(main)
