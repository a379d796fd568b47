"""CommonCrawl rules on real pages (Apache/Python manuals, Wikipedia leads; tests/curation_pages.py), checked by
hand: CCNet's dedup normalisation and 64-bit SHA-1 hash, the surviving copy of a duplicate line, lid.176 page
scores, the length and language rules, the WET reader on good and broken files; the n-gram trainer's
Kneser-Ney counts and discounts, its ARPA file loaded by KenLM and normalised (probabilities over the vocabulary
sum to 1) and equal to the interpolated model computed independently from the counts; perplexity buckets; the
reference-page classifier."""

import gzip
import hashlib
import io as _io
import math
import zlib
from collections import Counter

import kenlm
import pytest
from curation_pages import MOD_DIR_EN, MOD_ENV_EN, MOD_ENV_FR, SHLEX, WIKIPEDIA, build_reference_models

from data_pipeline.curation import commoncrawl, dedup, langid, ngram_lm, perplexity, quality, reference_models
from data_pipeline.curation.raw import commoncrawl as raw_commoncrawl
from data_pipeline.curation.stages import Drop


# ---------------------------------------------------------------------------------------------- dedup
def test_lines_are_normalised_as_ccnet_does():
    assert dedup.normalize_line("Copyright 2026 The Apache Software Foundation.") == \
        "copyright 0000 the apache software foundation"
    # em dashes and dots go, every digit becomes 0: "3.11.2" -> "0000"
    assert dedup.normalize_line("shlex — Simple lexical analysis — Python 3.11.2 documentation") == \
        "shlex  simple lexical analysis  python 0000 documentation"
    assert dedup.normalize_line("«Python» ") == "python"
    assert dedup.normalize_line("Ｈｅｌｌｏ，ｗｏｒｌｄ！ ١٢٣") == "ｈｅｌｌｏｗｏｒｌｄ 000"  # CJK punctuation, Arabic digits
    assert dedup.normalize_line("Modules | Directives | FAQ") == "modules | directives | faq"  # "|" is a symbol
    assert dedup.normalize_line("* * *") == ""  # nothing left: never deduplicated


def test_line_hash_is_the_first_eight_bytes_of_sha1():
    assert dedup.line_hash("abc") == 0xA9993E364706816A  # SHA-1("abc") = a9993e364706816a ba3e2571...
    assert dedup.line_hashes("Base\n\n* * *\nbase.") == [(0, dedup.line_hash("base")), (3, dedup.line_hash("base"))]


def test_the_first_copy_in_the_smallest_document_id_survives_whatever_the_order():
    h1, h2 = dedup.line_hash("first"), dedup.line_hash("second")
    batches = [("b", [(h1, 0), (h2, 3)]), ("a", [(h1, 5), (h1, 7)]), ("c", [(h2, 1)])]
    expected = {"b": [0], "a": [7], "c": [1]}
    assert dedup.duplicates_in_bucket(batches) == expected
    assert dedup.duplicates_in_bucket(batches[::-1]) == expected
    assert dedup.remove_lines("l0\nl1\nl2", [1]) == "l0\nl2"


def test_a_page_sends_one_batch_per_bucket_it_touches():
    doc = {"id": "p", "text": MOD_ENV_EN}
    batches = list(dedup.bucket_batches(doc, 4))
    assert sorted(b for b, _ in batches) == sorted({h % 4 for _, h in dedup.line_hashes(MOD_ENV_EN)})
    assert sum(len(pairs) for _, (_, pairs) in batches) == len(dedup.line_hashes(MOD_ENV_EN))


# ---------------------------------------------------------------------------------------------- language, length
def test_lid176_scores_the_share_of_english_text():
    model = langid.load()
    assert langid.page_score(model, MOD_ENV_EN) == pytest.approx(0.734, abs=0.01)
    assert langid.page_score(model, MOD_ENV_FR) < 0.1
    assert langid.page_score(model, MOD_ENV_FR, "fr") > 0.7
    assert langid.page_score(model, "Base\nmod_env\nFileInfo") == 0.0  # no line of 3 words: no evidence
    with pytest.raises(FileNotFoundError, match="lid.176.bin"):
        langid.load("/nonexistent/lid.176.bin")


def test_the_language_and_length_rules():
    english = commoncrawl.language({"id": "en", "text": MOD_DIR_EN}, "en", 0.5, "")
    assert english["meta"]["lang_score"] == pytest.approx(0.674, abs=0.01)
    assert commoncrawl.language({"id": "fr", "text": MOD_ENV_FR}, "en", 0.5, "") == Drop("not_english")
    assert commoncrawl.language({"id": "fr", "text": MOD_ENV_FR}, "fr", 0.5, "")["meta"]["lang_score"] > 0.7
    navigation = "Modules | Directives | FAQ | Glossary | Sitemap | Report a bug"  # 62 characters
    assert commoncrawl.min_length({"id": "n", "text": navigation}, 300) == Drop("too_short")
    assert commoncrawl.min_length({"id": "p", "text": SHLEX}, 300)["text"] == SHLEX


# ---------------------------------------------------------------------------------------------- WET files
def wet_bytes(pages: list[tuple[str, str]]) -> bytes:
    """A gzipped WET file (warcinfo + one conversion record per page), as raw_commoncrawl.write_raw writes it."""
    from warcio.warcwriter import WARCWriter

    out = _io.BytesIO()
    writer = WARCWriter(out, gzip=True)
    writer.write_record(writer.create_warcinfo_record("test.warc.wet.gz", {"software": "test"}))
    for url, text in pages:
        writer.write_record(writer.create_warc_record(
            url, "conversion", payload=_io.BytesIO(text.encode("utf-8")),
            warc_headers_dict={"WARC-Record-ID": raw_commoncrawl.record_id(url), "Content-Type": "text/plain"}))
    return out.getvalue()


def gzip_member_ends(data: bytes) -> list[int]:
    """The offsets at which each gzip member of `data` ends (WARCWriter writes one per record). Not the length
    of a second file of the same records: the warcinfo record's random id changes the compressed size."""
    ends, position = [], 0
    while position < len(data):
        member = zlib.decompressobj(wbits=31)
        member.decompress(data[position:])
        position = len(data) - len(member.unused_data)
        ends.append(position)
    return ends


def read_wet(data: bytes, monkeypatch) -> tuple[list[dict], Counter]:
    counted = Counter()
    monkeypatch.setattr(commoncrawl, "count", lambda source, name, n=1: counted.update({name: n}))
    return list(commoncrawl.wet_docs(_io.BytesIO(data), "commoncrawl", "f")), counted


def test_wet_records_become_pages_and_broken_files_are_counted(monkeypatch):
    pages = [("https://httpd.apache.org/docs/2.4/en/mod/mod_env.html", MOD_ENV_EN),
             ("https://httpd.apache.org/docs/2.4/fr/mod/mod_env.html", MOD_ENV_FR),
             ("https://docs.python.org/3.11/library/shlex.html", SHLEX)]
    data = wet_bytes(pages)
    docs, counted = read_wet(data, monkeypatch)
    assert [(d["url"], d["text"]) for d in docs] == pages and not counted
    assert docs[0]["id"] == raw_commoncrawl.record_id(pages[0][0])

    docs, counted = read_wet(data[: len(data) - 500], monkeypatch)  # cut inside the last record
    assert [d["url"] for d in docs] == [u for u, _ in pages[:2]] and counted == {"read/dropped/truncated_record": 1}

    first = gzip_member_ends(data)[1]  # warcinfo + the first page: each record is its own gzip member
    garbage = gzip.compress(b"WARC/9.9 no such version\r\nContent-Length: 3\r\n\r\nabc\r\n\r\n")
    docs, counted = read_wet(data[:first] + garbage + data[first:], monkeypatch)  # a malformed record
    assert [d["url"] for d in docs] == [pages[0][0]] and counted == {"read/dropped/malformed_warc": 1}

    from warcio.warcwriter import WARCWriter

    out = _io.BytesIO()
    writer = WARCWriter(out, gzip=True)
    writer.write_record(writer.create_warc_record("https://x/latin1", "conversion",
                                                  payload=_io.BytesIO("café".encode("latin-1"))))
    writer.write_record(writer.create_warc_record("https://x/empty", "conversion", payload=_io.BytesIO(b"\n \n")))
    docs, counted = read_wet(out.getvalue(), monkeypatch)
    assert docs == [] and counted == {"read/dropped/not_utf8": 1, "read/dropped/empty_text": 1}

    docs, counted = read_wet(b"this is not a WARC file\n", monkeypatch)
    assert docs == [] and counted == {"read/dropped/malformed_warc": 1}


def test_raw_pages_get_their_real_address_and_a_stable_record_id():
    assert raw_commoncrawl.url_of("apache2-doc/usr/share/doc/apache2-doc/manual/en/mod/mod_env.html") == \
        "https://httpd.apache.org/docs/2.4/en/mod/mod_env.html"
    assert raw_commoncrawl.url_of("python3.11-doc/usr/share/doc/python3.11/html/library/shlex.html") == \
        "https://docs.python.org/3.11/library/shlex.html"
    assert raw_commoncrawl.record_id("https://a/") == raw_commoncrawl.record_id("https://a/") != raw_commoncrawl.record_id("https://b/")
    with pytest.raises(ValueError, match="not under"):
        raw_commoncrawl.url_of("perl-doc/usr/share/perl/faq.pod")


# ---------------------------------------------------------------------------------------------- n-gram LM
def test_kneser_ney_counts_are_continuation_counts_below_the_top_order():
    counts = ngram_lm.count_ngrams([["a", "b"], ["a", "c"]], order=3)
    assert counts[2] == {("<s>", "a", "b"): 1, ("a", "b", "</s>"): 1, ("<s>", "a", "c"): 1, ("a", "c", "</s>"): 1}
    # bigrams: distinct left contexts, except after <s> (raw count: 2 sentences start with "a")
    assert counts[1] == {("a", "b"): 1, ("b", "</s>"): 1, ("a", "c"): 1, ("c", "</s>"): 1, ("<s>", "a"): 2}
    # unigrams: "</s>" follows two distinct words, "a" only <s>
    assert counts[0] == {("a",): 1, ("b",): 1, ("c",): 1, ("</s>",): 2}


def test_modified_kneser_ney_discounts():
    counts = Counter({f"w{i}": 1 for i in range(10)} | {f"x{i}": 2 for i in range(4)} | {"y0": 3, "y1": 3, "z": 4})
    y = 10 / (10 + 2 * 4)
    assert ngram_lm.discounts(counts) == pytest.approx((1 - 2 * y * 4 / 10, 2 - 3 * y * 2 / 4, 3 - 4 * y * 1 / 2))
    assert ngram_lm.discounts(Counter({"a": 1, "b": 2})) == ngram_lm.FALLBACK_DISCOUNTS


@pytest.fixture(scope="module")
def word_lm(tmp_path_factory):
    """A word-level 3-gram model of the Wikipedia leads (ARPA, loaded by KenLM) and its counts."""
    corpus = [ngram_lm.normalize(line).split() for _, text in WIKIPEDIA for line in text.split("\n") if line.strip()]
    path = str(tmp_path_factory.mktemp("lm") / "words.arpa")
    sizes = ngram_lm.train_arpa(corpus, 3, path)
    return kenlm.Model(path), ngram_lm.count_ngrams(corpus, 3), sizes


def _interpolated(counts, gram: tuple) -> float:
    """p(w | h) of interpolated modified Kneser-Ney, straight from the adjusted counts (not from the ARPA file)."""
    n, vocab = len(gram) - 1, len(counts[0]) + 1  # + <unk>
    if n < 0:
        return 1.0 / vocab
    if n >= len(counts):
        return _interpolated(counts, gram[1:])
    d = ngram_lm.discounts(counts[n])
    h = gram[:-1]
    followers = {g: c for g, c in counts[n].items() if g[:-1] == h}
    total = sum(followers.values())
    if not total:
        return _interpolated(counts, gram[1:])
    c = followers.get(gram, 0)
    freed = sum(d[min(x, 3) - 1] for x in followers.values())
    return (c - d[min(c, 3) - 1] if c else 0.0) / total + freed / total * _interpolated(counts, gram[1:])


def test_kenlm_reads_the_arpa_as_the_interpolated_model(word_lm):
    model, counts, sizes = word_lm
    assert model.order == 3 and sizes["1-grams"] == len(counts[0]) + 2  # + <s> and <unk>
    sentence = "the opera is a form of theatre in which music is a fundamental component zyzzyva".split()
    tokens = ["<s>"] + [w if (w,) in counts[0] else "<unk>" for w in sentence] + ["</s>"]
    expected = sum(math.log10(_interpolated(counts, tuple(tokens[max(0, i - 2): i + 1]))) for i in range(1, len(tokens)))
    assert model.score(" ".join(sentence), bos=True, eos=True) == pytest.approx(expected, abs=1e-3)


def test_the_arpa_model_is_normalised(word_lm):
    model, counts, _ = word_lm
    vocab = [g[0] for g in counts[0]] + ["<unk>"]
    for context in ([], ["the"], ["music", "is"], ["zyzzyva"]):
        state, out = kenlm.State(), kenlm.State()
        model.BeginSentenceWrite(state)
        for word in context:
            model.BaseScore(state, word, out)
            state, out = out, state
        total = sum(10 ** model.BaseScore(state, w, out) for w in vocab)
        assert total == pytest.approx(1.0, abs=1e-3), context


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The reference LM (SentencePiece + 3-gram) and classifier, trained by reference_models on real text."""
    out = str(tmp_path_factory.mktemp("models"))
    return (out, *build_reference_models(out))


def test_perplexity_ranks_wikipedia_prose_above_navigation(reference):
    out, lm, _ = reference
    assert lm["order"] == 3 and lm["tokens"] > 1000
    sp, model = perplexity.load(f"{out}/lm.sp.model", f"{out}/lm.arpa")
    prose = perplexity.perplexity("The electric guitar is a guitar that requires external amplification.", sp, model)
    menu = perplexity.perplexity("Modules | Directives | FAQ | Glossary | Sitemap | Report a bug", sp, model)
    assert prose < menu
    assert perplexity.perplexity("", sp, model) == float("inf")


def test_perplexity_buckets_follow_ccnet():
    assert [perplexity.bucket(x, 340, 520) for x in (339.9, 340, 519.9, 520)] == ["head", "middle", "middle", "tail"]
    assert perplexity.cutoffs([float(i) for i in range(101)], 30, 60) == (30.0, 60.0)
    with pytest.raises(ValueError, match="percentiles"):
        perplexity.Buckets("cc", "b", 60, 30, ("head",))


def test_the_reference_classifier_separates_prose_from_web_boilerplate(reference):
    out, _, info = reference
    assert info["train"] + info["held_out"] == len(WIKIPEDIA) + 10 and info["held_out"] > 0
    model = quality.Classifier.load(f"{out}/quality.npz")
    article = ("The violin is a wooden chordophone in the violin family. Most violins have a hollow wooden body. "
               "It is the smallest and highest-pitched instrument in the family in regular use.")
    menu = "Modules | Directives | FAQ | Glossary | Sitemap | Report a bug\nApache > HTTP Server > Documentation"
    assert model.probability(article) > 0.5 > model.probability(menu)
    assert model.probability(article) == pytest.approx(float(model.probabilities([article])[0]))
    ids = quality.ngram_ids("Hello, World", 1 << 18)
    assert list(ids) == [zlib.crc32(g.encode()) % (1 << 18) for g in ("hello", "world", "hello world")]


def test_the_classifier_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        quality.Classifier.fit(["a b", "c d"], [1, 1], buckets=64)


def test_held_out_pages_are_a_fixed_tenth_of_ids():
    ids = [f"<urn:uuid:{hashlib.md5(str(i).encode()).hexdigest()}>" for i in range(2000)]
    share = sum(reference_models.held_out(i) for i in ids) / len(ids)
    assert 0.08 < share < 0.12
    assert reference_models.chunks("a\nbb\nccc\ndddd", 4) == ["a\nbb", "ccc", "dddd"]


def test_write_raw_gives_wet_files_of_the_manual_pages_with_their_addresses(tmp_path, monkeypatch):
    from data_pipeline.curation import raw

    page = ("<html><head><title>mod_env - Apache HTTP Server Version 2.4</title></head><body>"
            "<div id='quickview'><a href='/'>Modules</a> | <a href='/dirs'>Directives</a></div>"
            "<p>This module allows for control of internal environment variables.</p></body></html>")
    roots = {"apache2-doc": str(tmp_path / "apache"), "python3.11-doc": str(tmp_path / "python")}
    manual = tmp_path / "apache/usr/share/doc/apache2-doc/manual/en/mod"
    manual.mkdir(parents=True)
    (manual / "mod_env.html").write_text(page)
    (tmp_path / "python/usr/share/doc/python3.11/html/library").mkdir(parents=True)
    (tmp_path / "python/usr/share/doc/python3.11/html/library/shlex.html").write_text(
        "<html><body><h1>shlex — Simple lexical analysis</h1><p>The shlex class makes it easy.</p></body></html>")
    paths = raw_commoncrawl.write_raw(roots, str(tmp_path / "raw"))
    assert len(paths) == raw_commoncrawl.RAW_SHARDS
    docs = []
    for path in paths:
        with open(path, "rb") as f:
            docs += read_wet(f.read(), monkeypatch)[0]
    assert sorted((d["url"], d["text"]) for d in docs) == [
        ("https://docs.python.org/3.11/library/shlex.html", "shlex — Simple lexical analysis\n\nThe shlex class makes it easy."),
        ("https://httpd.apache.org/docs/2.4/en/mod/mod_env.html",
         "mod_env - Apache HTTP Server Version 2.4\n\nModules | Directives\n\n"
         "This module allows for control of internal environment variables.")]
    assert all(d["id"] == raw_commoncrawl.record_id(d["url"]) for d in docs)
    assert raw.writer("commoncrawl") is raw_commoncrawl.write_raw
    with pytest.raises(ValueError, match="not LLaMA sources"):
        raw.build(str(tmp_path / "r"), sources=("reddit",))
