"""`python -m data_pipeline.curate --bench`: what the Beam engine costs on the CommonCrawl pipeline.

The same pages (the first `--bench_mb` MB of text of the raw WET files, copied into one WET file) go through
  1. a plain single-process Python loop over the same rule functions (read, line dedup with a dict, length,
     language, perplexity, buckets, classifier): the ceiling for one core;
  2. the Beam pipeline on the runner the Beam options select (default: the DirectRunner, in memory).
Both figures are MB of raw page text per second per core, from CPU time (this process and the worker processes
it waited for), so a shared machine's load changes them less than wall time; wall time is printed too.
"""

from __future__ import annotations

import io as _io
import os
import resource
import shutil
import tempfile
import time

from data_pipeline.curation import commoncrawl, dedup, io, pipelines
from data_pipeline.curation import perplexity as ppl
from data_pipeline.curation.stages import Drop

RAW_GLOB = ".cache/raw/commoncrawl/*.warc.wet.gz"


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (Beam's worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def sample_wet(raw_glob: str, megabytes: float, path: str) -> tuple[int, int]:
    """Copies pages of the raw WET files into one WET file until `megabytes` MB of text; returns (pages, bytes)."""
    from warcio.warcwriter import WARCWriter

    pages, size = 0, 0
    with open(path, "wb") as out:
        writer = WARCWriter(out, gzip=True)
        for name in io.match(raw_glob):
            with open(name, "rb") as f:
                for doc in commoncrawl.wet_docs(_io.BytesIO(f.read()), commoncrawl.NAME, name):
                    data = doc["text"].encode("utf-8")
                    writer.write_record(writer.create_warc_record(
                        doc["url"], "conversion", payload=_io.BytesIO(data),
                        warc_headers_dict={"WARC-Record-ID": doc["id"], "Content-Type": "text/plain"}))
                    pages, size = pages + 1, size + len(data)
                    if size >= megabytes * 1e6:
                        return pages, size
    return pages, size


def plain_loop(path: str, config: commoncrawl.Config) -> int:
    """The CommonCrawl rules in one Python process, no engine; returns the pages kept."""
    with open(path, "rb") as f:
        docs = list(commoncrawl.wet_docs(_io.BytesIO(f.read()), commoncrawl.NAME, path))
    drops = dedup.duplicates_in_bucket([(doc["id"], [(h, i) for i, h in dedup.line_hashes(doc["text"])])
                                        for doc in docs])
    docs = [{**doc, "text": dedup.remove_lines(doc["text"], drops.get(doc["id"], []))} for doc in docs]
    docs = [doc for doc in docs if doc["text"].strip()]
    rules = [lambda d: commoncrawl.min_length(d, config.min_chars),
             lambda d: commoncrawl.language(d, config.lang, config.lang_threshold, config.lid_model),
             lambda d: commoncrawl.score_perplexity(d, config.models_dir)]
    for rule in rules:
        docs = [out for out in map(rule, docs) if not isinstance(out, Drop)]
    scores = sorted(doc["meta"]["perplexity"] for doc in docs)
    quantiles = [scores[min(len(scores) - 1, round(q / 100 * (len(scores) - 1)))] for q in range(101)]
    head_below, tail_from = ppl.cutoffs(quantiles, config.head_percentile, config.tail_percentile)
    docs = [doc for doc in docs if ppl.bucket(doc["meta"]["perplexity"], head_below, tail_from) != "tail"]
    docs = [out for doc in docs if not isinstance(
        out := commoncrawl.reference_like(doc, config.quality_threshold, config.models_dir), Drop)]
    return len(docs)


def _timed(fn) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), _cpu_seconds()
    result = fn()
    return result, time.perf_counter() - wall, _cpu_seconds() - cpu


def run(megabytes: float, beam_args: list[str], raw_glob: str = RAW_GLOB) -> dict:
    """Both measurements on the same sample; returns the figures (MB/s per core, wall seconds, pages kept)."""
    config = commoncrawl.Config()
    tmp = tempfile.mkdtemp(prefix="curation-bench-")
    try:
        sample = f"{tmp}/sample.warc.wet.gz"
        pages, size = sample_wet(raw_glob, megabytes, sample)
        commoncrawl.language({"id": "", "text": "warm up the model loads"}, "en", 0.5, config.lid_model)
        commoncrawl.score_perplexity({"id": "", "text": "warm up"}, config.models_dir)
        commoncrawl.reference_like({"id": "", "text": "warm up"}, 0.0, config.models_dir)
        kept_plain, wall_plain, cpu_plain = _timed(lambda: plain_loop(sample, config))
        summary, wall_beam, cpu_beam = _timed(
            lambda: pipelines.run(commoncrawl.NAME, sample, f"{tmp}/out", beam_args, config))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    mb = size / 1e6
    options = pipelines.pipeline_options(beam_args).get_all_options()
    return {"pages": pages, "megabytes": round(mb, 3), "runner": options["runner"],
            "direct_running_mode": options["direct_running_mode"], "direct_num_workers": options["direct_num_workers"],
            "plain_mb_per_cpu_s": round(mb / cpu_plain, 4), "plain_wall_s": round(wall_plain, 2),
            "beam_mb_per_cpu_s": round(mb / cpu_beam, 4), "beam_wall_s": round(wall_beam, 2),
            "beam_over_plain": round(cpu_plain / cpu_beam, 3),
            "kept_plain": kept_plain, "kept_beam": summary["stages"][-1]["docs_out"], "cpus": os.cpu_count()}


def format_report(report: dict) -> str:
    """The benchmark as a person reads it."""
    return (f"CommonCrawl curation, {report['pages']} pages, {report['megabytes']:.2f} MB of WET text\n"
            f"  plain Python loop (1 process):   {report['plain_mb_per_cpu_s']:.3f} MB/s per core "
            f"({report['plain_wall_s']:.1f} s wall), {report['kept_plain']} pages kept\n"
            f"  Beam {report['runner']} ({report['direct_running_mode']}, {report['direct_num_workers']} workers): "
            f"{report['beam_mb_per_cpu_s']:.3f} MB/s per core ({report['beam_wall_s']:.1f} s wall), "
            f"{report['kept_beam']} pages kept\n"
            f"  Beam / plain loop: {report['beam_over_plain']:.2f} of the ceiling per core")
