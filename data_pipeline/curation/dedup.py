"""CCNet's line-level deduplication (Wenzek et al. 2020, §3.2) across all shards, as a Beam group-by on line hashes.

A line is normalised (lowercase, every Unicode digit to 0, punctuation and control characters removed) and
hashed to 64 bits (the first 8 bytes of its SHA-1, as CCNet). Of all the lines with the same hash in the whole
collection, the copy in the document with the smallest id (its first occurrence there) stays and every other
copy goes, so the result does not depend on sharding, worker count or arrival order. A document left with no
text is dropped as `only_duplicate_lines`. Blank lines, and lines with nothing left after normalisation
(separators such as "* * *"), are never deduplicated.

Beam costs tens of microseconds per element, so the shuffle is not one element per line: each document sends
one batch of (hash, line index) pairs per hash bucket it touches (`buckets` of them, by hash), a bucket finds
the surviving copy of each of its hashes, and the line indices to remove go back to their documents in one
join by id. CCNet's normaliser removes only a fixed list of CJK and typographic punctuation; this one removes
every Unicode punctuation character (categories P*), ASCII included, plus CCNet's list (which holds a few
symbols such as "►").
"""

from __future__ import annotations

import hashlib
import sys
import unicodedata
from collections.abc import Iterable, Iterator

import apache_beam as beam

from data_pipeline.curation.stages import DROPPED, Doc, count, drop, kept

# CCNet text_normalizer.UNICODE_PUNCT: what it strips for dedup (some are symbols, not Unicode punctuation).
CCNET_PUNCT = "，。、„”“«»１」「《》´∶：？！（）；–—．～’…━〈〉【】％►"


def _normalisation_table() -> dict[int, str | None]:
    """str.translate table: punctuation and control characters removed, every decimal digit to "0"."""
    table: dict[int, str | None] = {}
    for code in range(sys.maxunicode + 1):
        category = unicodedata.category(chr(code))
        if category.startswith("P") or category == "Cc" or 127 <= code < 160:
            table[code] = None
        elif category == "Nd":
            table[code] = "0"
    table.update({ord(c): None for c in CCNET_PUNCT if unicodedata.category(c) != "Nd"})
    table[ord("１")] = "0"  # a fullwidth digit: CCNet lists it as punctuation, but its digits rule maps it first
    return table


_TABLE = _normalisation_table()


def normalize_line(line: str) -> str:
    """CCNet's `normalize_for_dedup`: stripped, lowercased, digits to 0, punctuation and controls removed."""
    return line.strip().lower().translate(_TABLE).strip()


def line_hash(normalized: str) -> int:
    """64-bit hash of a normalised line: the first 8 bytes of its SHA-1 (CCNet's `str_hash`)."""
    return int.from_bytes(hashlib.sha1(normalized.encode("utf-8")).digest()[:8], "big")


def line_hashes(text: str) -> list[tuple[int, int]]:
    """(line index, hash) of each line of `text` that takes part in deduplication (content left after normalising)."""
    out = []
    for index, line in enumerate(text.split("\n")):
        normalized = normalize_line(line)
        if normalized:
            out.append((index, line_hash(normalized)))
    return out


def bucket_batches(doc: Doc, buckets: int) -> Iterator[tuple[int, tuple[str, list[tuple[int, int]]]]]:
    """One (bucket, (doc id, [(hash, line index), ...])) element per hash bucket the document's lines fall in."""
    batches: dict[int, list[tuple[int, int]]] = {}
    for index, h in line_hashes(doc["text"]):
        batches.setdefault(h % buckets, []).append((h, index))
    for bucket, pairs in sorted(batches.items()):
        yield bucket, (doc["id"], pairs)


def duplicates_in_bucket(batches: Iterable[tuple[str, list[tuple[int, int]]]]) -> dict[str, list[int]]:
    """doc id -> indices of its lines to remove: every copy of a hash except the first in the smallest doc id."""
    batches = list(batches)
    keeper: dict[int, tuple[str, int]] = {}
    for doc_id, pairs in batches:
        for h, index in pairs:
            if h not in keeper or (doc_id, index) < keeper[h]:
                keeper[h] = (doc_id, index)
    drops: dict[str, list[int]] = {}
    for doc_id, pairs in batches:
        for h, index in pairs:
            if keeper[h] != (doc_id, index):
                drops.setdefault(doc_id, []).append(index)
    return drops


def remove_lines(text: str, indices: Iterable[int]) -> str:
    """`text` without the lines at `indices` (0-based)."""
    gone = set(indices)
    return "\n".join(line for i, line in enumerate(text.split("\n")) if i not in gone)


class LineDedup(beam.PTransform):
    """Removes every duplicate line across the whole collection (see the module docstring); counts
    `<name>/lines_removed` and drops emptied documents as `<name>/dropped/only_duplicate_lines`."""

    def __init__(self, source: str, name: str, buckets: int):
        super().__init__()
        if buckets < 1:
            raise ValueError(f"dedup buckets={buckets}; expected >= 1")
        self.source, self.name, self.buckets = source, name, buckets

    def expand(self, docs: beam.PCollection) -> beam.PCollection:
        drops = (docs
                 | "Batches" >> beam.FlatMap(bucket_batches, self.buckets)
                 | "GroupByBucket" >> beam.GroupByKey()
                 | "Duplicates" >> beam.FlatMap(lambda kv: duplicates_in_bucket(kv[1]).items()))
        by_id = docs | "ById" >> beam.Map(lambda doc: (doc["id"], doc))
        return kept({"doc": by_id, "drop": drops}
                    | "Join" >> beam.CoGroupByKey()
                    | "Remove" >> beam.FlatMap(_apply_drops, self.source, self.name).with_outputs(DROPPED, main="docs"),
                    self.source)


def _apply_drops(joined: tuple[str, dict], source: str, name: str) -> Iterator[Doc]:
    _, groups = joined
    indices = [i for batch in groups["drop"] for i in batch]
    for doc in groups["doc"]:  # one, unless two documents share an id (each then loses the same lines)
        if not indices:
            yield doc
            continue
        text = remove_lines(doc["text"], indices)
        count(source, f"{name}/lines_removed", len(set(indices)))
        if text.strip():
            yield {**doc, "text": text}
        else:
            yield drop(source, name, doc["id"], "only_duplicate_lines")
