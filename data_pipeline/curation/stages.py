"""The building blocks every curation pipeline is wired from: a per-document rule (`Stage`), a whole-collection
transform with the same counters (`Counted`), and `count` for reasons counted inside a transform.

A document is a plain dict `{"id": str, "text": str, "url": str (optional), "meta": dict (optional)}`. Every
stage counts, under the Beam metrics namespace `curation/<source>`, `<stage>/docs_in`, `<stage>/bytes_in`,
`<stage>/docs_out`, `<stage>/bytes_out` (bytes = UTF-8 bytes of the text) and `<stage>/dropped/<reason>`, so the
stats after a run show what each filter cost (`data_pipeline.curation.stats`).

Every document a stage drops also leaves a record `{"id", "stage", "reason"}` in its source's drop log (a
`DROPPED` side output that `log_drops` registers with the pipeline; `pipelines.Curate` writes it beside the
shards as `dropped.jsonl.gz`), so that "why did this page go?" has an answer by id, not only a count.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

Doc = dict
EMPTY_AFTER_CLEANING = "empty_after_cleaning"
DROPPED = "dropped"  # the tag of the side output that carries drop records
_DROP_LOGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # pipeline -> source -> [PCollection]


@dataclasses.dataclass(frozen=True)
class Drop:
    """A rule's verdict that the document goes, and why (a short snake_case reason such as "too_short")."""

    reason: str


def namespace(source: str) -> str:
    """The Beam metrics namespace of `source`'s counters."""
    return f"curation/{source}"


def count(source: str, name: str, n: int = 1) -> None:
    """Adds `n` to the counter `name` of `source` (call it from inside a DoFn or a function a DoFn calls)."""
    Metrics.counter(namespace(source), name).inc(n)


def drop(source: str, stage: str, doc_id: str, reason: str) -> TaggedOutput:
    """Counts one document `stage` drops for `reason` and returns its drop record, for a DoFn (or a Map/FlatMap
    function) to yield into the `DROPPED` output of its `.with_outputs(DROPPED, main=...)`."""
    count(source, f"{stage}/dropped/{reason}")
    return TaggedOutput(DROPPED, {"id": doc_id, "stage": stage, "reason": reason})


def log_drops(records: beam.PCollection, source: str) -> None:
    """Registers `records` (a `DROPPED` output) as part of `source`'s drop log in their pipeline."""
    _DROP_LOGS.setdefault(records.pipeline, {}).setdefault(source, []).append(records)


def drop_logs(pipeline: beam.Pipeline, source: str) -> list[beam.PCollection]:
    """The drop records `source`'s stages registered in `pipeline`, one PCollection per stage."""
    return list(_DROP_LOGS.get(pipeline, {}).get(source, []))


def kept(outputs, source: str, main: str = "docs") -> beam.PCollection:
    """The `main` output of a ParDo/Map/FlatMap applied `.with_outputs(DROPPED, main=main)`, its drop records
    registered with `log_drops`."""
    log_drops(outputs[DROPPED], source)
    return outputs[main]


def text_bytes(doc: Doc) -> int:
    """UTF-8 bytes of the document's text: the unit of every `bytes_*` counter."""
    return len(doc["text"].encode("utf-8"))


class _RuleFn(beam.DoFn):
    """Applies `fn` to each document and counts what went in, what came out, and every drop by its reason."""

    def __init__(self, source: str, name: str, fn: Callable[[Doc], Doc | Drop]):
        self.source, self.name, self.fn = source, name, fn

    def setup(self):
        ns = namespace(self.source)
        self.counters = {key: Metrics.counter(ns, f"{self.name}/{key}")
                         for key in ("docs_in", "bytes_in", "docs_out", "bytes_out")}

    def process(self, doc: Doc) -> Iterator[Doc]:
        self.counters["docs_in"].inc()
        self.counters["bytes_in"].inc(text_bytes(doc))
        result = self.fn(doc)  # a rule that raises is a bug, not a drop: the pipeline fails with its trace
        if not isinstance(result, Drop) and not result["text"].strip():
            result = Drop(EMPTY_AFTER_CLEANING)
        if isinstance(result, Drop):
            yield drop(self.source, self.name, doc["id"], result.reason)
            return
        self.counters["docs_out"].inc()
        self.counters["bytes_out"].inc(text_bytes(result))
        yield result


class _Count(beam.DoFn):
    """Passes documents through, counting them as `<name>/docs_<direction>` and `<name>/bytes_<direction>`."""

    def __init__(self, source: str, name: str, direction: str):
        self.source, self.name, self.direction = source, name, direction

    def setup(self):
        ns = namespace(self.source)
        self.docs = Metrics.counter(ns, f"{self.name}/docs_{self.direction}")
        self.bytes = Metrics.counter(ns, f"{self.name}/bytes_{self.direction}")

    def process(self, doc: Doc) -> Iterator[Doc]:
        self.docs.inc()
        self.bytes.inc(text_bytes(doc))
        yield doc


class CurationStage(beam.PTransform):
    """A counted step of a source's pipeline; `stage_name` is the prefix of its counters (see `stats`)."""

    def __init__(self, source: str, name: str, inner: beam.PTransform, counted: bool):
        super().__init__(label=name)
        self.source, self.stage_name, self.inner, self.counted = source, name, inner, counted

    def expand(self, docs: beam.PCollection) -> beam.PCollection:
        if not self.counted:
            return kept(docs | "Rule" >> self.inner, self.source)
        return (docs | "In" >> beam.ParDo(_Count(self.source, self.stage_name, "in"))
                | "Run" >> self.inner
                | "Out" >> beam.ParDo(_Count(self.source, self.stage_name, "out")))


def Stage(source: str, name: str, fn: Callable[[Doc], Doc | Drop]) -> beam.PTransform:  # noqa: N802 - a transform
    """Applies the per-document rule `fn` (which returns the document, possibly cleaned, or a Drop), with counters.

    A document whose text the rule empties is dropped as `empty_after_cleaning`."""
    rule = beam.ParDo(_RuleFn(source, name, fn)).with_outputs(DROPPED, main="docs")
    return CurationStage(source, name, rule, counted=False)


def Counted(source: str, name: str, transform: beam.PTransform) -> beam.PTransform:  # noqa: N802 - a transform
    """The in/out counters of `Stage` around a whole-collection transform (dedup, group-bys); what it removes is
    counted and logged inside it with `drop(source, name, id, reason)` into a `DROPPED` output passed to `kept`."""
    return CurationStage(source, name, transform, counted=True)
