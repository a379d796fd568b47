"""Corpus builder properties: web pages keep their boilerplate (CommonCrawl) or get C4's line filter, the
train/validation split is a deterministic function of document ids, a verified manifest makes a rebuild a
no-op and a changed file undoes that; the full offline build (slow: it downloads packages) gives >= 30 MB of
all seven kinds and a tokenizer of the tiny preset's size."""

import json
import os

import pytest

from data_pipeline import corpus
from llama_jax.corpus_spec import SOURCE_NAMES

PAGE = """<html><head><title>mod_rewrite - Apache HTTP Server</title><style>body {color: red}</style>
<script>var tracking = 1;</script></head><body>
<div class="nav"><a href="/">Modules</a> | <a href="/dirs">Directives</a> | <a href="/faq">FAQ</a></div>
<h1>Apache Module mod_rewrite</h1>
<p>This module uses a rule-based rewriting engine to rewrite requested URLs on the fly.</p>
<p>It supports an unlimited number of rules, and an unlimited number of attached conditions.</p>
<p>URL manipulations can depend on various tests, of server variables, environment variables and headers.</p>
<pre>RewriteRule  "^/foo\\.html$"  "/bar.html" [PT]
    indented</pre>
<div class="footer">Copyright 2024 The Apache Software Foundation.</div></body></html>"""


def test_web_pages_keep_their_visible_boilerplate_but_not_scripts():
    text = corpus.html_to_text(PAGE)
    assert "Modules | Directives | FAQ" in text and "Copyright 2024" in text  # navigation stays, as in WET files
    assert "tracking" not in text and "color: red" not in text
    assert '"/bar.html" [PT]\n    indented' in text  # preformatted code keeps its lines and indentation


def test_c4_keeps_only_sentence_lines_of_pages_with_three_of_them():
    text = corpus.c4_filter(corpus.html_to_text(PAGE))
    assert text.splitlines() == [
        "This module uses a rule-based rewriting engine to rewrite requested URLs on the fly.",
        "It supports an unlimited number of rules, and an unlimited number of attached conditions.",
        "URL manipulations can depend on various tests, of server variables, environment variables and headers.",
        "Copyright 2024 The Apache Software Foundation."]
    assert corpus.c4_filter("One sentence here.\nAnd another one.\nno punctuation") == ""


def test_the_validation_split_is_a_fixed_function_of_the_document_ids():
    docs = [(f"doc{i}", f"text {i}") for i in range(1000)]
    split = corpus.split_documents(docs)
    assert len(split["validation"]) == 20 and len(split["train"]) == 980
    assert corpus.split_documents(docs[::-1]) == split
    assert len(corpus.split_documents(docs[:100])["validation"]) == corpus.MIN_VALIDATION_DOCS


def test_a_split_is_not_in_id_order_so_a_shard_read_in_order_does_not_drift():
    """Ids group documents by package and language (`apache2-doc/.../da/...`, `.../de/...`): in id order a shard
    is read one group after another. In the split's hash order every stretch of a shard mixes the groups."""
    docs = [(f"manual/{lang}/page{i:03d}.html", f"{lang} text {i}") for lang in ("da", "de", "fr", "ja") for i in
            range(250)]
    train = corpus.split_documents(docs)["train"]
    assert train != sorted(train)
    for start in range(0, len(train), 100):  # each tenth of the split holds all four languages, in proportion
        langs = [doc_id.split("/")[1] for doc_id, _ in train[start:start + 100]]
        assert all(10 <= langs.count(lang) <= 40 for lang in ("da", "de", "fr", "ja")), langs


def test_a_verified_manifest_makes_the_build_a_no_op_and_a_changed_file_does_not(tmp_path, capsys):
    out = str(tmp_path)
    docs = [(f"faq#{i}", f"Question {i}?\n\nAnswer {i}, in a sentence.") for i in range(40)]
    manifest = {"version": corpus.VERSION, "sources": {"stackexchange": corpus.write_source("stackexchange", docs, out)},
                "total_bytes": 1}
    with open(f"{out}/tokenizer.model", "wb") as f:
        f.write(b"model bytes")
    manifest["tokenizer"] = {**corpus._file_entry(f"{out}/tokenizer.model", out, 0), "vocab_size": 8192}
    with open(f"{out}/manifest.json", "w") as f:
        json.dump(manifest, f)
    shards = manifest["sources"]["stackexchange"]["splits"]
    assert sum(s["docs"] for split in shards.values() for s in split["shards"]) == 40
    assert corpus.build(out, vocab_size=8192) == manifest  # verified: nothing fetched, nothing written
    assert "up to date" in capsys.readouterr().out
    assert corpus.verify(out, vocab_size=32000) is None  # another tokenizer size is another build
    path = f"{out}/{shards['train']['shards'][0]['path']}"
    with open(path, "r+b") as f:
        f.write(b"X")
    assert corpus.verify(out, vocab_size=8192) is None


@pytest.mark.slow
def test_the_offline_build_gives_30_mb_of_all_seven_kinds_and_the_tiny_tokenizer(tmp_path, capsys):
    import sentencepiece as spm

    out = str(tmp_path / "corpus")
    manifest = corpus.build(out, vocab_size=8192)
    assert manifest["total_bytes"] >= 30e6
    for name in SOURCE_NAMES:
        splits = manifest["sources"][name]["splits"]
        assert splits["train"]["docs"] > 0 and splits["validation"]["docs"] >= corpus.MIN_VALIDATION_DOCS
        assert len(splits["train"]["shards"]) >= 2
    sp = spm.SentencePieceProcessor(model_file=f"{out}/tokenizer.model")
    assert sp.vocab_size() == 8192 and (sp.bos_id(), sp.eos_id(), sp.pad_id()) == (1, 2, -1)
    capsys.readouterr()
    assert corpus.build(out, vocab_size=8192) == manifest and "up to date" in capsys.readouterr().out
    assert not any(f.endswith(".vocab") for f in os.listdir(out))


def test_an_unpack_that_fails_leaves_nothing_a_later_build_would_trust(tmp_path):
    def fail_halfway(into):
        (tmp_path / "marker").write_text("started")
        with open(os.path.join(into, "half.txt"), "w") as f:
            f.write("half")
        raise RuntimeError("dpkg-deb died")

    with pytest.raises(RuntimeError):
        corpus._unpack_once(str(tmp_path / "pkg"), fail_halfway)
    assert not (tmp_path / "pkg").exists()  # the next build unpacks again instead of reading half a package
    root = corpus._unpack_once(str(tmp_path / "pkg"), lambda into: open(os.path.join(into, "whole.txt"), "w").close())
    assert sorted(os.listdir(root)) == ["whole.txt"]
    assert corpus._unpack_once(root, fail_halfway) == root  # already unpacked: not touched again
