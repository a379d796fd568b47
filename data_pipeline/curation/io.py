"""Reading documents from JSON lines and writing curated ones as the sharded gzip JSON lines the stream reads.

`read_jsonl` survives bad input: a truncated or corrupt gzip file keeps the documents before the damage, a line
that is not UTF-8, not JSON or has no text is skipped, and each is counted as `read/dropped/<reason>`.
`ReadFiles` is the reading step every source opens with (JSON lines beside the source's own format).
`WriteJsonl` writes `DIR/{train,validation}-NNNNN-of-MMMMM.jsonl.gz` with the corpus builder's split (about 2%
validation, at least 8 documents, by a hash of the id) so that `data.sources.<name>='jsonl:DIR/{split}-*.jsonl.gz'`
reads it as is. The output is a function of the set of documents only: the same whatever the runner, the number
of workers or the order the documents arrive in. `WriteDropLog` writes `DIR/dropped.jsonl.gz`, the id, stage and
reason of every document a stage dropped.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from data_pipeline.corpus import MIN_VALIDATION_DOCS, SHARD_BYTES, VALIDATION_FRACTION
from data_pipeline.curation.stages import Doc, Drop, count, text_bytes

SPLITS = ("train", "validation")
GZIP_MAGIC = b"\x1f\x8b"


# ---------------------------------------------------------------------------------------------- reading
def match(input_glob: str) -> list[str]:
    """The files `input_glob` matches (local or any Beam filesystem, e.g. gs://), sorted; an error if none."""
    try:
        (result,) = FileSystems.match([input_glob])
        paths = sorted(m.path for m in result.metadata_list)
    except (OSError, beam.io.filesystem.BeamIOError):
        paths = []
    if not paths:
        raise FileNotFoundError(f"--input={input_glob!r} matches no files; check the path and quote the glob")
    return paths


def read_lines(path: str, source: str) -> Iterator[bytes]:
    """The lines of `path` (gzip or plain, by its first bytes), counting a damaged file as a read drop.

    A truncated gzip stream yields the lines before the damage (`read/dropped/truncated_gzip`); bytes that are
    not gzip at all after a gzip header count as `corrupt_gzip`; an empty file as `empty_file`."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        head = raw.read(2)
        if not head:
            count(source, "read/dropped/empty_file")
            return
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if head == GZIP_MAGIC else raw
        try:
            yield from stream
        except EOFError:  # "Compressed file ended before the end-of-stream marker was reached"
            count(source, "read/dropped/truncated_gzip")
        except (gzip.BadGzipFile, zlib.error):
            count(source, "read/dropped/corrupt_gzip")


def parse_jsonl_line(line: bytes, default_id: str) -> Doc | Drop | None:
    """One JSON line -> a document (`id` defaults to `default_id`; other fields go to `meta`), a Drop naming what
    is wrong with it (`not_utf8`, `bad_json`, `no_text`, `empty_text`), or None for a blank line."""
    try:
        decoded = line.decode("utf-8")
    except UnicodeDecodeError:
        return Drop("not_utf8")
    if not decoded.strip():
        return None
    try:
        record = json.loads(decoded)
    except ValueError:
        return Drop("bad_json")
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        return Drop("no_text")
    if not record["text"].strip():
        return Drop("empty_text")
    doc = {"id": str(record["id"]) if record.get("id") is not None else default_id, "text": record["text"]}
    if isinstance(record.get("url"), str):
        doc["url"] = record["url"]
    meta = dict(record["meta"]) if isinstance(record.get("meta"), dict) else {}
    meta.update((k, v) for k, v in record.items() if k not in ("id", "text", "url", "meta"))
    if meta:
        doc["meta"] = meta
    return doc


def relative_name(path: str, input_glob: str) -> str:
    """`path` relative to the directory part of `input_glob` before its first wildcard (a stable id prefix)."""
    cut = min((i for i, c in enumerate(input_glob) if c in "*?["), default=len(input_glob))
    base = input_glob[:cut].rsplit("/", 1)[0] + "/" if "/" in input_glob[:cut] else ""
    return path[len(base):] if base and path.startswith(base) else os.path.basename(path)


def is_jsonl(path: str) -> bool:
    """Whether `path` names a JSON-lines file (.jsonl or .json, optionally .gz)."""
    return path.removesuffix(".gz").endswith((".jsonl", ".json"))


def jsonl_docs(path: str, source: str, input_glob: str) -> Iterator[Doc]:
    """The documents of one JSON-lines file (ids default to `<file>:<line>`), counting the lines it skips."""
    name = relative_name(path, input_glob)
    for number, line in enumerate(read_lines(path, source), start=1):
        doc = parse_jsonl_line(line, f"{name}:{number}")
        if isinstance(doc, Drop):
            count(source, f"read/dropped/{doc.reason}")
        elif doc is not None:
            yield doc


class _ReadFile(beam.DoFn):
    """A file path -> its documents: JSON lines by `jsonl_docs`, any other file by the source's `read_format`."""

    def __init__(self, source: str, input_glob: str, read_format: Callable[[str, str], Iterable[Doc]] | None):
        self.source, self.input_glob, self.read_format = source, input_glob, read_format

    def process(self, path: str) -> Iterator[Doc]:
        count(self.source, "read/files")
        if self.read_format is None or is_jsonl(path):
            yield from jsonl_docs(path, self.source, self.input_glob)
        else:
            yield from self.read_format(path, relative_name(path, self.input_glob))


class ReadFiles(beam.PTransform):
    """The documents of the files `input_glob` matches, the one reading step every source's pipeline opens with.

    A JSON-lines file (`is_jsonl`: the corpus builder's format, beside any raw format in one glob) is read by
    `jsonl_docs`; any other by `read_format(path, name)`, the source's own format (WET, a MediaWiki dump, a
    tarball, ...), which yields documents and counts what it skips as `read/dropped/<reason>`; `name` is the path
    under the glob's base directory, the stable prefix of an id. With `read_format=None` every file is JSON lines.
    Counts `read/files`, `read/docs_out` and `read/bytes_out`; spreads the files, then the documents, over the
    workers (a file is read whole by one worker; its documents need not be curated there)."""

    def __init__(self, source: str, input_glob: str,
                 read_format: Callable[[str, str], Iterable[Doc]] | None = None):
        super().__init__()
        self.source, self.input_glob, self.read_format = source, input_glob, read_format
        self.paths = match(input_glob)

    def expand(self, pipeline: beam.pvalue.PBegin) -> beam.PCollection:
        return (pipeline
                | "Paths" >> beam.Create(self.paths)
                | "SpreadFiles" >> beam.Reshuffle()
                | "Read" >> beam.ParDo(_ReadFile(self.source, self.input_glob, self.read_format))
                | "Count" >> beam.Map(count_read, self.source)
                | "SpreadDocs" >> beam.Reshuffle())


def count_read(doc: Doc, source: str) -> Doc:
    """Counts a document that reading produced (`read/docs_out`, `read/bytes_out`) and passes it on."""
    count(source, "read/docs_out")
    count(source, "read/bytes_out", text_bytes(doc))
    return doc


def read_jsonl(pipeline: beam.Pipeline, input_glob: str, source: str) -> beam.PCollection:
    """Documents of the JSON-lines files (gzip or plain) that `input_glob` matches; bad lines and files counted."""
    return pipeline | "ReadJsonl" >> ReadFiles(source, input_glob)


def local_path(path: str) -> str:
    """`path` itself if it is a local file, else a local copy of it (once per process): for models on gs://
    that a library (fastText, KenLM, SentencePiece) can only open from a local path."""
    if os.path.exists(path):
        return path
    if not FileSystems.exists(path):
        raise FileNotFoundError(f"{path} does not exist; build the reference models with "
                                "`python -m data_pipeline.curation.reference_models` or give their directory")
    local = os.path.join(tempfile.gettempdir(), "curation-" + hashlib.sha256(path.encode()).hexdigest()[:16]
                         + "-" + os.path.basename(path))
    if not os.path.exists(local):
        tmp = f"{local}.tmp-{uuid.uuid4().hex}"  # workers of one machine may copy at once: the last rename wins
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, local)
    return local


# ---------------------------------------------------------------------------------------------- writing
def id_hash(doc_id: str) -> int:
    """The 64-bit hash of a document id that places it in a split and a shard (first 8 bytes of its SHA-256)."""
    return int.from_bytes(hashlib.sha256(doc_id.encode("utf-8")).digest()[:8], "big")


def split_of(h: int, n_docs: int, smallest: list[int]) -> str:
    """The corpus builder's split of a document whose id hashes to `h`: validation for about 2% of hashes and for
    the `MIN_VALIDATION_DOCS` smallest ones (at most half the documents), train otherwise."""
    k = min(MIN_VALIDATION_DOCS, n_docs // 2, len(smallest))
    if h < VALIDATION_FRACTION * 2**64 or (k and h <= sorted(smallest)[k - 1]):
        return "validation"
    return "train"


def shard_name(split: str, index: int, n_shards: int) -> str:
    """`train-00000-of-00004.jsonl.gz`: the corpus builder's shard names, gzipped."""
    return f"{split}-{index:05d}-of-{n_shards:05d}.jsonl.gz"


def json_line(doc: Doc) -> str:
    """The output line of a document: its fields as JSON, keys sorted, UTF-8 kept."""
    return json.dumps(doc, ensure_ascii=False, sort_keys=True) + "\n"


def write_shard(out_dir: str, split: str, index: int, n_shards: int, lines: Iterable[tuple[str, str]]) -> str:
    """Writes the (id, line) pairs into one gzip shard in the order of their ids' hashes (a fixed pseudo-random
    order: in id order a shard would be read package by package and language by language, and what a model
    trained on it sees would drift through training), with no name and mtime 0 in its header (identical bytes
    for identical documents), through a temporary name; returns the shard's path."""
    path = f"{out_dir.rstrip('/')}/{shard_name(split, index, n_shards)}"
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        with gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=6, mtime=0) as f:
            for _, _, line in sorted((id_hash(doc_id), doc_id, line) for doc_id, line in lines):
                f.write(line.encode("utf-8"))
    FileSystems.rename([tmp], [path])
    return path


class WriteJsonl(beam.PTransform):
    """Writes documents to `out_dir` as `{split}-NNNNN-of-MMMMM.jsonl.gz` (about `shard_bytes` of JSON per shard);
    yields the paths written and counts `write/<split>/docs` and `write/<split>/json_bytes`."""

    def __init__(self, source: str, out_dir: str, shard_bytes: int = SHARD_BYTES):
        super().__init__()
        self.source, self.out_dir, self.shard_bytes = source, out_dir, shard_bytes

    def expand(self, docs: beam.PCollection) -> beam.PCollection:
        hashed = docs | "Hash" >> beam.Map(lambda doc: (id_hash(doc["id"]), doc["id"], json_line(doc)))
        n_docs = beam.pvalue.AsSingleton(hashed | "CountDocs" >> beam.combiners.Count.Globally())
        smallest = beam.pvalue.AsSingleton(
            hashed | "HashOnly" >> beam.Map(lambda r: r[0])
            | "Smallest" >> beam.combiners.Top.Smallest(MIN_VALIDATION_DOCS))
        split = hashed | "Split" >> beam.Map(lambda r, n, s: (split_of(r[0], n, s), r), n_docs, smallest)
        split_bytes = (split | "LineBytes" >> beam.Map(lambda kv: (kv[0], len(kv[1][2].encode("utf-8"))))
                       | "SplitBytes" >> beam.CombinePerKey(sum))
        n_shards = beam.pvalue.AsDict(
            split_bytes | "Shards" >> beam.Map(lambda kv, size: (kv[0], max(1, -(-kv[1] // size))),
                                               self.shard_bytes))
        keyed = split | "Shard" >> beam.Map(
            lambda kv, shards: ((kv[0], kv[1][0] % shards[kv[0]]), (kv[1][1], kv[1][2])), n_shards)
        # Every shard of a split is written, even one that no document hashes to, so NNNNN-of-MMMMM is complete.
        every = (split_bytes | "AllShards" >> beam.FlatMap(
            lambda kv, shards: [((kv[0], i), None) for i in range(shards[kv[0]])], n_shards))
        return ((keyed, every) | "Flatten" >> beam.Flatten()
                | "Group" >> beam.GroupByKey()
                | "Write" >> beam.Map(_write_group, n_shards, self.source, self.out_dir))


def _write_group(group: tuple[tuple[str, int], Iterable], n_shards: dict[str, int], source: str, out_dir: str) -> str:
    """Writes one (split, shard) group of (id, line) pairs (and None placeholders) and counts it."""
    (split, index), lines = group
    lines = [line for line in lines if line is not None]
    count(source, f"write/{split}/docs", len(lines))
    count(source, f"write/{split}/json_bytes", sum(len(line.encode("utf-8")) for _, line in lines))
    return write_shard(out_dir, split, index, n_shards[split], lines)


DROP_LOG = "dropped.jsonl.gz"


class WriteDropLog(beam.PTransform):
    """Writes drop records (`stages.drop`: `{"id", "stage", "reason"}`) into `out_dir/dropped.jsonl.gz`, one
    line each, sorted by id then stage: one file with the same bytes whatever the runner or the workers. Writes
    nothing when nothing was dropped. The records of a source go through one worker (about 100 bytes each)."""

    def __init__(self, out_dir: str):
        super().__init__()
        self.out_dir = out_dir

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return (records | "OneKey" >> beam.Map(lambda r: (None, r))
                | "Group" >> beam.GroupByKey()
                | "Write" >> beam.Map(lambda kv, out: write_drop_log(out, kv[1]), self.out_dir))


def write_drop_log(out_dir: str, records: Iterable[dict]) -> str:
    """Writes the drop log file of `records` (see `WriteDropLog`) through a temporary name; returns its path."""
    path = f"{out_dir.rstrip('/')}/{DROP_LOG}"
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    lines = sorted(json_line(r) for r in records)
    with FileSystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        with gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=6, mtime=0) as f:
            for line in lines:
                f.write(line.encode("utf-8"))
    FileSystems.rename([tmp], [path])
    return path


def read_drop_log(out_dir: str) -> dict[str, list[tuple[str, str]]]:
    """The drop log of a curated directory: document id -> [(stage, reason)] ({} if nothing was dropped)."""
    path = f"{out_dir.rstrip('/')}/{DROP_LOG}"
    if not FileSystems.exists(path):
        return {}
    dropped: dict[str, list[tuple[str, str]]] = {}
    with FileSystems.open(path) as f:  # gzip, by the name
        lines = f.read().decode("utf-8").splitlines()
    for line in lines:
        record = json.loads(line)
        dropped.setdefault(record["id"], []).append((record["stage"], record["reason"]))
    return dropped
