"""The building blocks every curation pipeline is wired from: a per-document rule (`Stage`), a whole-collection
transform with the same counters (`Counted`), and `count` for reasons counted inside a transform.

A document is a plain dict `{"id": str, "text": str, "url": str (optional), "meta": dict (optional)}`. Every
stage counts, under the Beam metrics namespace `curation/<source>`, `<stage>/docs_in`, `<stage>/bytes_in`,
`<stage>/docs_out`, `<stage>/bytes_out` (bytes = UTF-8 bytes of the text) and `<stage>/dropped/<reason>`, so the
stats after a run show what each filter cost (`data_pipeline.curation.stats`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

Doc = dict
EMPTY_AFTER_CLEANING = "empty_after_cleaning"


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
            count(self.source, f"{self.name}/dropped/{result.reason}")
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
            return docs | "Rule" >> self.inner
        return (docs | "In" >> beam.ParDo(_Count(self.source, self.stage_name, "in"))
                | "Run" >> self.inner
                | "Out" >> beam.ParDo(_Count(self.source, self.stage_name, "out")))


def Stage(source: str, name: str, fn: Callable[[Doc], Doc | Drop]) -> beam.PTransform:  # noqa: N802 - a transform
    """Applies the per-document rule `fn` (which returns the document, possibly cleaned, or a Drop), with counters.

    A document whose text the rule empties is dropped as `empty_after_cleaning`."""
    return CurationStage(source, name, beam.ParDo(_RuleFn(source, name, fn)), counted=False)


def Counted(source: str, name: str, transform: beam.PTransform) -> beam.PTransform:  # noqa: N802 - a transform
    """The in/out counters of `Stage` around a whole-collection transform (dedup, group-bys); what it removes is
    counted inside it with `count(source, f"{name}/dropped/{reason}")`."""
    return CurationStage(source, name, transform, counted=True)
