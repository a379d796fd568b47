"""What each stage of a curation run cost: its Beam counters gathered per stage into `stats.json` and a table.

The counters are those `stages` names (`<stage>/docs_in`, `/bytes_in`, `/docs_out`, `/bytes_out`,
`/dropped/<reason>`), the reader's `read/...` and the writer's `write/<split>/...`, all in the namespace
`curation/<source>`.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter

from data_pipeline.curation.stages import CurationStage, namespace

FIELDS = ("docs_in", "docs_out", "bytes_in", "bytes_out")


def counters(result: beam.runners.runner.PipelineResult, source: str) -> dict[str, int]:
    """Every counter of `source` in a finished run (committed values; attempted where a runner commits none),
    summed over the steps that increment it (Beam reports one result per step and counter name)."""
    found = result.metrics().query(MetricsFilter().with_namespace(namespace(source)))["counters"]
    totals: dict[str, int] = {}
    for c in found:
        totals[c.key.metric.name] = totals.get(c.key.metric.name, 0) + int(c.committed if c.committed is not None else c.attempted)
    return totals


def stage_names(pipeline: beam.Pipeline, source: str) -> list[str]:
    """The names of `source`'s counted stages in `pipeline` (Stage and Counted transforms), in the order applied."""
    names: list[str] = []

    class Visitor(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node):
            stage = node.transform
            if isinstance(stage, CurationStage) and stage.source == source and stage.stage_name not in names:
                names.append(stage.stage_name)

    pipeline.visit(Visitor())
    return names


def _dropped(values: dict[str, int], stage: str) -> dict[str, int]:
    prefix = f"{stage}/dropped/"
    return {name[len(prefix):]: n for name, n in sorted(values.items()) if name.startswith(prefix)}


def _other(values: dict[str, int], stage: str) -> dict[str, int]:
    """A stage's counters that are neither in/out nor drops (e.g. lines removed, cutoffs)."""
    prefix = f"{stage}/"
    return {name[len(prefix):]: n for name, n in sorted(values.items()) if name.startswith(prefix)
            and name[len(prefix):] not in FIELDS and not name.startswith(f"{prefix}dropped/")}


def summarize(values: dict[str, int], source: str, stages: list[str]) -> dict:
    """Counters -> {"source", "read", "stages": [per stage: docs/bytes in and out, dropped by reason], "written"}."""
    read = {"files": values.get("read/files", 0), "docs_out": values.get("read/docs_out", 0),
            "bytes_out": values.get("read/bytes_out", 0), "dropped": _dropped(values, "read")}
    rows = [{"name": stage, **{field: values.get(f"{stage}/{field}", 0) for field in FIELDS},
             "dropped": _dropped(values, stage), "other": _other(values, stage)} for stage in stages]
    written = {split: {"docs": values.get(f"write/{split}/docs", 0),
                       "json_bytes": values.get(f"write/{split}/json_bytes", 0)} for split in ("train", "validation")}
    return {"source": source, "read": read, "stages": rows, "written": written, "counters": dict(sorted(values.items()))}


def _reasons(dropped: dict[str, int]) -> str:
    return ", ".join(f"{reason} {n:,}" for reason, n in dropped.items()) or "-"


def table(stats: dict) -> str:
    """The per-stage table a person reads after a run: documents and MB in and out, drops by reason."""
    lines = [f"{stats['source']}: {stats['read']['files']:,} files read",
             f"{'stage':<18} {'docs in':>10} {'docs out':>10} {'MB in':>9} {'MB out':>9}  dropped"]
    read = stats["read"]
    lines.append(f"{'read':<18} {'-':>10} {read['docs_out']:>10,} {'-':>9} {read['bytes_out'] / 1e6:>9.2f}  "
                 f"{_reasons(read['dropped'])}")
    for row in stats["stages"]:
        lines.append(f"{row['name']:<18} {row['docs_in']:>10,} {row['docs_out']:>10,} {row['bytes_in'] / 1e6:>9.2f} "
                     f"{row['bytes_out'] / 1e6:>9.2f}  {_reasons(row['dropped'])}"
                     + (f" ({_reasons(row['other'])})" if row["other"] else ""))
    written = stats["written"]
    lines.append("written: " + ", ".join(f"{split} {w['docs']:,} docs ({w['json_bytes'] / 1e6:.2f} MB of JSON)"
                                         for split, w in written.items()))
    return "\n".join(lines)
