"""Running a curation pipeline in a test: Beam's TestPipeline on the runner `pipelines.pipeline_options` picks, its
counters as `stats` reads them (summed over the steps that increment one name), and the documents it wrote."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable, Iterable

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline

from data_pipeline.curation import io, pipelines, stats


def run(build: Callable[[beam.Pipeline], object], beam_args: Iterable[str] = ()) -> tuple[beam.Pipeline, object]:
    """Builds a TestPipeline with `build(pipeline)`, runs it to the end; returns (pipeline, result)."""
    pipeline = TestPipeline(options=pipelines.pipeline_options(list(beam_args)))
    build(pipeline)
    result = pipeline.run()
    result.wait_until_finish()
    return pipeline, result


def counters(build: Callable[[beam.Pipeline], object], source: str, beam_args: Iterable[str] = ()) -> dict[str, int]:
    """`source`'s counters after a run of the pipeline `build` builds (a name no step incremented is absent)."""
    return stats.counters(run(build, beam_args)[1], source)


def written_docs(out_dir: str, splits: tuple[str, ...] = io.SPLITS) -> dict[str, dict]:
    """Every document `io.WriteJsonl` wrote into `out_dir` (in `splits`), by id; an id written twice is an error."""
    docs: dict[str, dict] = {}
    for name in sorted(os.listdir(out_dir)):
        if name.startswith(tuple(f"{split}-" for split in splits)) and name.endswith(".jsonl.gz"):  # not the drop log
            with gzip.open(os.path.join(out_dir, name), "rt", encoding="utf-8") as f:
                for doc in map(json.loads, f):
                    assert doc["id"] not in docs, f"{doc['id']} written twice"
                    docs[doc["id"]] = doc
    return docs
