"""The curation engine's blocks: a Stage counts documents and bytes in and out and every drop by reason, a rule
that empties a text drops it as empty_after_cleaning, Counted wraps a whole-collection transform; the JSON-lines
reader skips damaged files and lines under named reasons and keeps what precedes the damage; the writer's split
and shards are a function of the document ids only and read back as the stream expects. One pipeline run
(module-scoped) serves every check."""

import gzip
import json
import os

import apache_beam as beam
import curation_runs
import pytest

from data_pipeline.curation import io, stages

SOURCE = "unit"
# Real lines: the opening of the Apache httpd manual's mod_rewrite page (apache2-doc).
GOOD = [
    {"id": "rewrite#1", "text": "This module uses a rule-based rewriting engine to rewrite requested URLs on the fly.",
     "url": "http://httpd.apache.org/docs/2.4/mod/mod_rewrite.html", "lang": "en"},
    {"id": "rewrite#2", "text": "It supports an unlimited number of rules."},
    {"id": "rewrite#3", "text": "Modules | Directives | FAQ | Glossary | Sitemap"},
]


def _strip_navigation(doc):
    """A cleaning rule: drops the lines with a '|' separator (a navigation bar)."""
    text = "\n".join(line for line in doc["text"].split("\n") if "|" not in line)
    return {**doc, "text": text}


def _long_enough(doc):
    return doc if len(doc["text"]) >= 50 else stages.Drop("too_short")


class _DropOddIds(beam.PTransform):
    """A whole-collection transform that counts what it removes, as dedup does."""

    def expand(self, docs):
        def keep(doc):
            if doc["id"].endswith(("1", "3", "5", "7", "9")) and doc["id"].startswith("bulk"):
                stages.count(SOURCE, "odd/dropped/odd_id")
                return False
            return True
        return docs | beam.Filter(keep)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Writes good and damaged inputs, runs read -> 3 stages -> write once; returns (counters, out_dir, bulk)."""
    d = tmp_path_factory.mktemp("io")
    lines = [json.dumps(doc) + "\n" for doc in GOOD]
    (d / "good.jsonl").write_text("".join(lines) + "\n")  # a blank line is not a document
    bulk = [{"id": f"bulk{i:03d}", "text": f"Document number {i} of the bulk set, long enough to pass the filter."}
            for i in range(200)]
    with gzip.open(d / "bulk.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(doc) + "\n" for doc in bulk)
    whole = gzip.compress("".join(json.dumps({"id": f"cut{i}", "text": "A line before the damage, long enough to "
                                                        f"pass the filter, number {i}."}) + "\n"
                                  for i in range(400)).encode())
    (d / "truncated.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    (d / "corrupt.jsonl.gz").write_bytes(whole[:20] + b"\x00garbage" * 50)
    (d / "empty.jsonl").write_bytes(b"")
    (d / "bad.jsonl").write_bytes(b'{"id": "latin1", "text": "caf\xe9"}\n' + b'{"id": "broken", "text": \n'
                                  + b'{"id": "notext"}\n' + b'["a list"]\n' + b'{"id": "blank", "text": "  "}\n')
    out = str(d / "out")

    def build(p):
        docs = io.read_jsonl(p, f"{d}/*.jsonl*", SOURCE)
        docs = (docs | stages.Stage(SOURCE, "navigation", _strip_navigation)
                | stages.Stage(SOURCE, "length", _long_enough)
                | stages.Counted(SOURCE, "odd", _DropOddIds()))
        _ = docs | io.WriteJsonl(SOURCE, out, shard_bytes=4000)

    return curation_runs.counters(build, SOURCE), out, bulk


def _read_output(out):
    docs = {}
    for name in sorted(os.listdir(out)):
        with gzip.open(f"{out}/{name}", "rt", encoding="utf-8") as f:
            docs[name] = [json.loads(line) for line in f]
    return docs


def test_damaged_files_and_lines_are_counted_by_reason_and_skipped(run):
    counters, _, _ = run
    assert counters["read/files"] == 6
    for reason, n in {"not_utf8": 1, "bad_json": 1, "no_text": 2, "empty_text": 1, "truncated_gzip": 1,
                      "corrupt_gzip": 1, "empty_file": 1}.items():
        assert counters[f"read/dropped/{reason}"] == n, reason
    cut = counters["read/docs_out"] - len(GOOD) - 200
    assert 0 < cut < 400  # the lines before the truncation survive, the rest of the file is lost


def test_stages_count_docs_and_bytes_and_drops(run):
    counters, _, _ = run
    n = counters["read/docs_out"]
    assert counters["navigation/docs_in"] == n and counters["navigation/bytes_in"] == counters["read/bytes_out"]
    assert counters["navigation/dropped/empty_after_cleaning"] == 1  # the navigation-only document
    assert counters["navigation/docs_out"] == n - 1
    nav = len(GOOD[2]["text"].encode())
    assert counters["navigation/bytes_out"] == counters["navigation/bytes_in"] - nav
    assert counters["length/dropped/too_short"] == 1  # "It supports an unlimited number of rules."
    assert counters["odd/docs_in"] == counters["length/docs_out"]
    assert counters["odd/dropped/odd_id"] == 100
    assert counters["odd/docs_out"] == counters["odd/docs_in"] - 100
    assert counters["write/train/docs"] + counters["write/validation/docs"] == counters["odd/docs_out"]


def test_the_output_is_sharded_split_by_id_and_in_hash_order(run):
    counters, out, bulk = run
    shards = _read_output(out)
    names = sorted(shards)
    n_train = int(names[0].split("-of-")[1].split(".")[0])
    assert [n for n in names if n.startswith("train")] == [io.shard_name("train", i, n_train) for i in range(n_train)]
    assert n_train > 1  # shard_bytes=4000 forces several shards
    docs = [doc for name in names for doc in shards[name]]
    kept_bulk = {d["id"] for d in docs if d["id"].startswith("bulk")}
    assert kept_bulk == {d["id"] for d in bulk if int(d["id"][4:]) % 2 == 0}
    first = {"id": "rewrite#1", "text": GOOD[0]["text"], "url": GOOD[0]["url"], "meta": {"lang": "en"}}
    assert docs[[d["id"] for d in docs].index("rewrite#1")] == first
    validation = [d for name in names if name.startswith("validation") for d in shards[name]]
    assert len(validation) >= 8 and len(validation) == counters["write/validation/docs"]
    for name, shard in shards.items():
        split, index = name.split("-")[0], int(name.split("-")[1])
        n = int(name.split("-of-")[1].split(".")[0])
        hashes = [io.id_hash(d["id"]) for d in shard]  # hash order, not id order: no drift when read in order
        assert hashes == sorted(hashes) and [d["id"] for d in shard] != sorted(d["id"] for d in shard)
        assert all(io.id_hash(d["id"]) % n == index for d in shard)
        ids = [d["id"] for d in docs]
        smallest = sorted(io.id_hash(i) for i in ids)[:8]
        assert all(io.split_of(io.id_hash(d["id"]), len(ids), smallest) == split for d in shard)


def test_a_jsonl_line_becomes_a_document_with_its_metadata():
    line = b'{"id": 7, "text": "Hello.", "url": "http://x/", "meta": {"a": 1}, "score": 3}'
    assert io.parse_jsonl_line(line, "f:1") == {"id": "7", "text": "Hello.", "url": "http://x/",
                                                "meta": {"a": 1, "score": 3}}
    assert io.parse_jsonl_line(b'{"text": "Hello."}', "f.jsonl:3") == {"id": "f.jsonl:3", "text": "Hello."}
    assert io.parse_jsonl_line(b"   \n", "f:1") is None
    assert io.parse_jsonl_line(b'{"text": 3}', "f:1") == stages.Drop("no_text")


def test_the_split_takes_two_percent_and_at_least_eight_and_never_more_than_half():
    hashes = [io.id_hash(f"doc{i}") for i in range(1000)]
    smallest = sorted(hashes)[:8]
    n_val = sum(io.split_of(h, 1000, smallest) == "validation" for h in hashes)
    assert 10 <= n_val <= 35  # ~2% of 1000 by hash
    few = hashes[:20]
    assert sum(io.split_of(h, 20, sorted(few)[:8]) == "validation" for h in few) >= 8
    tiny = hashes[:6]
    assert sum(io.split_of(h, 6, sorted(tiny)[:8]) == "validation" for h in tiny) <= 3


def test_ids_are_relative_to_the_glob_directory():
    assert io.relative_name("/data/raw/cc/a/x.jsonl", "/data/raw/cc/*/*.jsonl") == "a/x.jsonl"
    assert io.relative_name("/data/x.jsonl", "/data/x.jsonl") == "x.jsonl"


def test_a_glob_that_matches_nothing_names_itself(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        io.match(f"{tmp_path}/nothing-here-*.jsonl")
