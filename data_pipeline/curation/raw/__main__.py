"""`python -m data_pipeline.curation.raw`: writes the seven sources' raw material (see the package docstring)."""

from __future__ import annotations

import argparse

from data_pipeline.curation import logs, raw
from llama_jax import cli
from llama_jax.corpus_spec import SOURCE_NAMES


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m data_pipeline.curation.raw", description=raw.__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=raw.DEFAULT_DIR, help="where the raw material goes (one directory per source)")
    parser.add_argument("--downloads", default=".cache/downloads", help="the packages `make corpus` fetched")
    parser.add_argument("--sources", default=",".join(SOURCE_NAMES), help="comma-separated sources to write")
    parser.add_argument("--force", action="store_true", help="rewrite sources whose directory exists")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.sources.split(",")) - set(SOURCE_NAMES))
    if unknown:  # before anything is written, the log included
        raise cli.UsageError(f"--sources: {unknown} are not LLaMA sources ({', '.join(SOURCE_NAMES)})")
    logs.hold()  # before Beam's first import (the source modules' readers): its warnings go to OUT/beam.log
    with logs.to_file(f"{args.out}/{logs.BEAM_LOG}"):
        report = raw.build(args.out, args.downloads, tuple(args.sources.split(",")), args.force)
    for source, what in report.items():
        print(f"{source:14s} {what}")


if __name__ == "__main__":
    cli.run(main)
