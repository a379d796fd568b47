"""Data pipeline properties: the mixture matches the Table 1 weights, packing conserves tokens, a seed fixes
the stream, a resumed stream continues exactly, hosts read disjoint and complete shares, the tokenizer has
the paper's settings, and bad input is counted or named instead of hanging.

The corpus here is real text already on disk (docstrings of the Python standard library), written in the
embedded corpus's layout by the corpus builder's own writer (conftest's `small_corpus`), so that no test needs
`make corpus`.
"""

import gzip
import io
import json
import os
import tarfile

import numpy as np
import pytest
from helpers import stdlib_paragraphs

from data_pipeline import sources
from data_pipeline import spm_tokenizer as tok
from data_pipeline import tfdata_graph as pipeline
from data_pipeline.mixture_report import format_report
from experiments.configs.common import base_config
from llama_jax.corpus_spec import SOURCE_NAMES, TABLE1

VOCAB = 1024
SEQ_LEN = 32


@pytest.fixture(scope="module")
def corpus_dir(small_corpus) -> str:
    """The seven sources (each a different slice of the stdlib's docstrings) and a tokenizer trained on them."""
    return small_corpus


def make_config(corpus_dir: str, **data):
    c = base_config("tiny")
    c.model.vocab_size = VOCAB
    c.train.seq_len = SEQ_LEN
    c.train.global_batch_size = 8
    c.train.eval_batches = 2
    c.data.corpus_dir = corpus_dir
    c.data.shuffle_buffer = 64
    c.data.threads = 1
    for key, value in data.items():
        c.data[key] = value
    return c


def only(name: str) -> dict[str, float]:
    return {k: float(k == name) for k in SOURCE_NAMES}


@pytest.fixture(scope="module")
def sp(corpus_dir):
    return tok.load(f"{corpus_dir}/tokenizer.model", VOCAB)


def take(stream, n: int) -> list[dict[str, np.ndarray]]:
    return [next(stream) for _ in range(n)]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


# ---------------------------------------------------------------------------------------------- weights
PAPER_TABLE1 = {  # Table 1 of the paper, copied from it: sampling proportion, epochs over 1.4T tokens
    "commoncrawl": (0.67, 1.10),
    "c4": (0.15, 1.06),
    "github": (0.045, 0.64),
    "wikipedia": (0.045, 2.45),
    "books": (0.045, 2.23),
    "arxiv": (0.025, 1.06),
    "stackexchange": (0.02, 1.03),
}


def test_table1_is_the_papers_and_the_config_default():
    assert TABLE1 == PAPER_TABLE1 and list(TABLE1) == list(PAPER_TABLE1)  # the order fixes the stream's draws
    assert dict(base_config("tiny").data.weights) == {k: w for k, (w, _) in PAPER_TABLE1.items()}
    assert sum(w for w, _ in TABLE1.values()) == pytest.approx(1.0)


def test_weights_not_summing_to_one_are_an_error_unless_normalized():
    table = {k: w for k, (w, _) in TABLE1.items()}
    with pytest.raises(ValueError, match=r"sum to 0\.9550.*normalize_weights"):
        sources.mixture_weights({**table, "github": 0.0}, {})
    normalized = sources.mixture_weights({**table, "github": 0.0}, {}, normalize=True)
    assert "github" not in normalized and sum(normalized.values()) == pytest.approx(1.0)
    assert normalized["c4"] == pytest.approx(0.15 / 0.955)


def test_a_weight_for_an_unknown_source_names_it():
    with pytest.raises(ValueError, match="unknown source 'reddit'"):
        sources.mixture_weights({"commoncrawl": 0.5, "reddit": 0.5}, {})
    assert sources.mixture_weights({"commoncrawl": 0.5, "reddit": 0.5}, {"reddit": "jsonl:/r/*.jsonl"})
    with pytest.raises(ValueError, match="data.sources.c4='parquet:x'"):
        sources.parse_spec("c4", "parquet:x", "")


# ---------------------------------------------------------------------------------------------- tokenizer
def test_tokenizer_has_the_paper_ids_and_round_trips_real_text(sp, corpus_dir):
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()) == (0, 1, 2, -1)
    assert sp.id_to_piece(3) == "<0x00>" and sp.id_to_piece(13) == "<0x0A>"  # byte pieces at 3..258, as Meta's
    with open(f"{corpus_dir}/github/validation-00000-of-00002.jsonl", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    texts.append("Ünïcödé — ελληνικά, 日本語 and\ttabs,\n    indented code\n")
    for text in texts:
        assert sp.decode(sp.encode(text)) == text


def test_tokenizer_splits_digits_and_falls_back_to_bytes(sp):
    pieces = [p for p in sp.encode("in 2023 and 1.4T", out_type=str) if p.strip("▁")]
    digits = [p for p in pieces if any(ch.isdigit() for ch in p)]
    assert digits and all(len(p.strip("▁")) == 1 for p in digits)
    emoji = sp.encode("🦙", out_type=str)
    assert [p for p in emoji if p.startswith("<0x")] == ["<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"]
    assert sp.decode(sp.encode("🦙")) == "🦙"  # no <unk>: unknown characters become bytes
    assert 0 not in sp.encode("🦙 龘")


def test_a_tokenizer_of_another_size_is_a_clear_error(corpus_dir):
    with pytest.raises(ValueError, match=f"{VOCAB} pieces but the model has vocab_size=8192"):
        tok.load(f"{corpus_dir}/tokenizer.model", 8192)


# ---------------------------------------------------------------------------------------------- packing
def test_packed_batch_shifts_targets_and_marks_documents():
    bos, eos = 1, 2
    rows = np.array([[7, 8, 2, 1, 5, 6, 2, 1, 9]])  # the tail of a document, one whole, the start of a third
    batch = __import__("data_pipeline").packed_batch(rows, bos, eos)
    np.testing.assert_array_equal(batch["inputs"], [[7, 8, 2, 1, 5, 6, 2, 1]])
    np.testing.assert_array_equal(batch["targets"], [[8, 2, 1, 5, 6, 2, 1, 9]])
    np.testing.assert_array_equal(batch["segment_ids"], [[1, 1, 1, 2, 2, 2, 2, 3]])
    np.testing.assert_array_equal(batch["positions"], [[0, 1, 2, 0, 1, 2, 3, 0]])
    np.testing.assert_array_equal(batch["loss_mask"], [[1, 1, 0, 1, 1, 1, 0, 1]])  # EOS -> next BOS not trained
    assert {k: v.dtype for k, v in batch.items()} == {"inputs": np.int32, "targets": np.int32, "segment_ids":
                                                      np.int32, "positions": np.int32, "loss_mask": np.float32}


def one_pass(spec, sp, split="train", seed=0, row_len=SEQ_LEN + 1):
    rows = pipeline.source_rows(spec, split, 0, host=pipeline.Host(), row_len=row_len, sp=sp, max_doc_chars=1 << 20,
                                threads=1, shuffle_buffer=0, seed=seed, repeat=False)
    return np.stack([r["tokens"] for r in rows.with_options(pipeline.options(1)).as_numpy_iterator()])


def test_packing_conserves_every_token_in_order(corpus_dir, sp):
    spec = sources.parse_spec("wikipedia", "", corpus_dir)
    records, record_format = pipeline.record_reader(spec, "train", pipeline.Host(), seed=0)
    texts = [r.numpy() for r in records(0)]
    expected = tok.BatchEncoder(sp, record_format, 1 << 20, 1)(np.array(texts, dtype=object))[0]
    rows = one_pass(spec, sp)
    assert rows.dtype == np.uint16  # the vocabulary fits: shuffle buffers and resume state stay small
    assert 0 <= len(expected) - rows.size < SEQ_LEN + 1  # only the last, unfilled row is left
    np.testing.assert_array_equal(rows.ravel(), expected[:rows.size])
    assert (rows == sp.bos_id()).sum() == (expected[:rows.size] == sp.bos_id()).sum()


def test_records_per_call_follows_document_size_and_leaves_the_rows_as_they_are(corpus_dir, sp, monkeypatch):
    import tensorflow as tf

    def records(sizes):
        return tf.data.Dataset.from_tensor_slices(tf.constant([b"x" * n for n in sizes], tf.string))

    assert pipeline.records_per_call(records([130_000] * 40)) == 2  # books: a few documents per call, not 3 MB
    assert pipeline.records_per_call(records([10_000_000])) == 1
    assert pipeline.records_per_call(records([500] * 40)) == pipeline.RECORDS_PER_BATCH  # wikipedia-sized: capped
    assert pipeline.records_per_call(records([])) == pipeline.RECORDS_PER_BATCH
    spec = sources.parse_spec("books", "", corpus_dir)
    by_size = one_pass(spec, sp)
    for fixed in (1, 3, pipeline.RECORDS_PER_BATCH):
        monkeypatch.setattr(pipeline, "records_per_call", lambda records, fixed=fixed: fixed)  # and no peek
        np.testing.assert_array_equal(one_pass(spec, sp), by_size)


# ---------------------------------------------------------------------------------------------- the stream
@pytest.fixture(scope="module")
def drawn(corpus_dir):
    """A stream of the whole mixture after 40 batches of 64 rows, and its report."""
    import data_pipeline

    c = make_config(corpus_dir)
    c.train.global_batch_size = 64
    stream = data_pipeline.train_stream(c)
    batches = take(stream, 40)
    return stream, batches, stream.report()


def test_observed_token_proportions_match_table_1(corpus_dir):
    """32,768 rows of 9 tokens: the smallest source (2%) has sigma = 0.077 points, so the test's 4 sigma is 15% of
    its weight, and a weight 30% off on any source (0.6 points on StackExchange) lies 7.7 sigma from Table 1's
    value, beyond the tolerance by 3.7 sigma; the sizing is checked below."""
    import data_pipeline

    rows_per_batch, batches, seq_len = 1024, 32, 8
    c = make_config(corpus_dir, shuffle_buffer=16)
    c.train.global_batch_size, c.train.seq_len = rows_per_batch, seq_len
    stream = data_pipeline.train_stream(c)
    take(stream, batches)
    report, rows = stream.report(), rows_per_batch * batches
    assert report["tokens"] == rows * (seq_len + 1)
    assert sum(s["tokens"] for s in report["sources"]) == report["tokens"]
    assert [s["name"] for s in report["sources"]] == list(PAPER_TABLE1)
    for s in report["sources"]:
        weight = PAPER_TABLE1[s["name"]][0]
        sigma = np.sqrt(weight * (1 - weight) / rows)
        off = 0.3 * weight * (1 - weight) / (1 + 0.3 * weight)  # the proportion moved by a weight 30% too large
        assert off - 4 * sigma > 3 * np.sqrt((weight + off) * (1 - weight - off) / rows)  # the sizing of this test
        assert abs(s["observed"] - weight) < 4 * sigma, s
        assert s["target"] == weight and s["docs"] > 0 and s["epochs"] > 0


def test_each_row_holds_text_of_the_source_drawn_for_it(drawn, corpus_dir, sp):
    """Counted from the rows' own text, not from the stream's report: on the fixed seed, row i of the stream is a
    piece of the documents of the source that tf.data's `sample_from_datasets` draws i-th with Table 1's weights.
    Two sources swapped anywhere (names, weights, readers), even the two smallest, would show."""
    import tensorflow as tf

    stream, batches, report = drawn
    texts = []
    for name in stream.names:  # each source's training text, as the corpus files hold it
        lines = []
        for path in sorted(tf.io.gfile.glob(f"{corpus_dir}/{name}/train-*.jsonl")):
            with open(path, encoding="utf-8") as f:
                lines += [json.loads(line)["text"] for line in f]
        texts.append("\n".join(lines))
    rows = np.concatenate([np.concatenate([b["inputs"], b["targets"][:, -1:]], axis=1) for b in batches])
    weights = [w for w, _ in TABLE1.values()]
    sources = [tf.data.Dataset.range(i * 10**9, (i + 1) * 10**9) for i in range(len(weights))]
    seed = make_config(corpus_dir).seed * 1_000_003  # how the stream seeds the draws of process 0
    draws = tf.data.Dataset.sample_from_datasets(sources, weights=weights, seed=seed)
    drawn_sources = next(draws.batch(len(rows)).as_numpy_iterator()) // 10**9

    found = []
    for row in rows:  # the sources whose text holds every document piece of the row
        pieces = np.split(row, np.flatnonzero((row == sp.bos_id()) | (row == sp.eos_id())))
        pieces = [text for p in pieces if (text := sp.decode([int(t) for t in p if t > sp.eos_id()]))]
        found.append({i for i, source_text in enumerate(texts) if all(text in source_text for text in pieces)})
    assert all(int(drawn) in holders for drawn, holders in zip(drawn_sources, found, strict=True))
    assert sum(len(holders) > 1 for holders in found) < 0.05 * len(rows)  # 33 tokens of text name their source
    counts = np.bincount(drawn_sources, minlength=len(texts))
    assert [s["tokens"] // (SEQ_LEN + 1) for s in report["sources"]] == counts.tolist()
    assert counts[SOURCE_NAMES.index("arxiv")] != counts[SOURCE_NAMES.index("stackexchange")]  # a swap would show


def test_batches_have_the_interface_shapes_and_documents_start_with_bos(drawn, sp):
    _, batches, _ = drawn
    for b in batches[:5]:
        assert {k: v.shape for k, v in b.items()} == {k: (64, SEQ_LEN) for k in
                                                      ("inputs", "targets", "segment_ids", "positions", "loss_mask")}
        np.testing.assert_array_equal(b["inputs"][:, 1:], b["targets"][:, :-1])
        starts = b["positions"] == 0
        assert (b["inputs"][starts & (np.arange(SEQ_LEN) > 0)] == sp.bos_id()).all()
        assert b["inputs"].max() < VOCAB and b["inputs"].min() >= 0


def test_the_report_prints_as_the_mixture_table(drawn):
    _, _, report = drawn
    table = format_report(report)
    assert all(name in table for name in SOURCE_NAMES) and "observed" in table
    assert json.loads(json.dumps(report)) == report


def test_the_mixture_draws_exactly_what_sample_from_datasets_draws():
    import tensorflow as tf

    weights = [w for w, _ in TABLE1.values()]
    for seed in (0, 1_000_003 * 5 + 1):
        def sources():  # element k of source i is i * 10**9 + k: the draws show which source and in what order
            return [tf.data.Dataset.range(i * 10**9, (i + 1) * 10**9) for i in range(len(weights))]
        n = 3 * pipeline.SELECTOR_BLOCK + 5  # across selector blocks
        expected = tf.data.Dataset.sample_from_datasets(sources(), weights=weights, seed=seed,
                                                        stop_on_empty_dataset=True)
        drawn = pipeline.mix(sources(), weights, seed)
        np.testing.assert_array_equal(next(drawn.batch(n).as_numpy_iterator()),
                                      next(expected.batch(n).as_numpy_iterator()))


def test_the_same_seed_gives_the_same_stream_and_another_seed_another(corpus_dir):
    import data_pipeline

    a = take(data_pipeline.train_stream(make_config(corpus_dir)), 3)
    assert_same_batches(a, take(data_pipeline.train_stream(make_config(corpus_dir)), 3))
    c = make_config(corpus_dir)
    c.seed = 1
    b = take(data_pipeline.train_stream(c), 3)
    assert not all(np.array_equal(x["inputs"], y["inputs"]) for x, y in zip(a, b, strict=True))


def test_a_resumed_stream_continues_exactly_with_its_statistics(corpus_dir):
    import data_pipeline

    stream = data_pipeline.train_stream(make_config(corpus_dir))
    take(stream, 5)
    state = stream.get_state()
    expected, expected_report = take(stream, 4), stream.report()
    resumed = data_pipeline.train_stream(make_config(corpus_dir))
    resumed.set_state(state)
    assert_same_batches(take(resumed, 4), expected)
    assert resumed.report() == expected_report
    other = make_config(corpus_dir)
    other.train.seq_len = 16
    with pytest.raises(ValueError, match="another data configuration"):
        data_pipeline.train_stream(other).set_state(state)
    with pytest.raises(ValueError, match="version 1 of the data pipeline's graph"):  # e.g. a checkpoint of older code
        resumed.set_state(with_version(state, 1))


def with_version(state: bytes, version: int) -> bytes:
    """A saved stream state whose stream.json claims another version of the tf.data graph."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(state)) as saved, tarfile.open(fileobj=out, mode="w") as changed:
        for member in saved.getmembers():
            data = saved.extractfile(member).read()
            if member.name == "stream.json":
                data = json.dumps({**json.loads(data), "version": version}).encode()
            member.size = len(data)
            changed.addfile(member, io.BytesIO(data))
    return out.getvalue()


def test_hosts_read_disjoint_shares_that_cover_each_source(corpus_dir):
    for split in ("train", "validation"):  # train: 2+ files, split by file; validation: split by record too
        spec = sources.parse_spec("c4", "", corpus_dir)
        everything = [r.numpy() for r in pipeline.record_reader(spec, split, pipeline.Host(), 0)[0](0)]
        shares = [[r.numpy() for r in pipeline.record_reader(spec, split, pipeline.Host(i, 3), 0)[0](0)]
                  for i in range(3)]
        assert all(shares) and sum(len(s) for s in shares) == len(everything)
        assert set().union(*map(set, shares)) == set(everything)


def test_each_process_gets_its_share_of_the_global_batch(corpus_dir):
    import data_pipeline

    batch = next(data_pipeline.train_stream(make_config(corpus_dir), process_index=1, process_count=2))
    assert batch["inputs"].shape == (4, SEQ_LEN)
    with pytest.raises(ValueError, match="process_index=2 is outside"):
        data_pipeline.train_stream(make_config(corpus_dir), process_index=2, process_count=2)


def test_eval_streams_give_the_same_held_out_batches_every_time(corpus_dir):
    import data_pipeline

    streams = data_pipeline.eval_streams(make_config(corpus_dir))
    assert sorted(streams) == sorted(SOURCE_NAMES)
    first = list(streams["books"])
    assert len(first) == 2 and first[0]["inputs"].shape == (8, SEQ_LEN)
    assert_same_batches(list(streams["books"]), first)
    assert_same_batches([next(streams["books"]) for _ in range(4)], first + first)
    # later passes read the first one's batches, kept read-only, not the validation split again
    streams["books"]._dataset = None
    assert_same_batches(list(streams["books"]), list(data_pipeline.eval_streams(make_config(corpus_dir))["books"]))
    assert not list(streams["books"])[0]["inputs"].flags.writeable


# ---------------------------------------------------------------------------------------------- readers
def test_tfrecord_gzipped_jsonl_and_pretokenized_sources_give_the_rows_of_the_text(corpus_dir, sp, tmp_path):
    import tensorflow as tf

    from data_pipeline.pretokenize import pretokenize

    spec = sources.parse_spec("arxiv", "", corpus_dir)
    reference = one_pass(spec, sp)
    files = pipeline.list_files(spec, "train")
    os.makedirs(tmp_path / "gz")
    for path in files:
        with open(path, "rb") as f, gzip.open(tmp_path / "gz" / (os.path.basename(path) + ".gz"), "wb") as g:
            g.write(f.read())
        with tf.io.TFRecordWriter(str(tmp_path / (os.path.basename(path) + ".tfrecord"))) as w:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    text = json.loads(line)["text"].encode()
                    w.write(tf.train.Example(features=tf.train.Features(feature={
                        "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[text]))})).SerializeToString())
    for spec_string in (f"jsonl:{tmp_path}/gz/{{split}}-*.jsonl.gz", f"tfrecord:{tmp_path}/{{split}}-*.tfrecord"):
        np.testing.assert_array_equal(one_pass(sources.parse_spec("arxiv", spec_string, ""), sp), reference)

    whole = pretokenize(make_config(corpus_dir), "arxiv", str(tmp_path / "one"), chunks_per_shard=1 << 20)
    assert whole["splits"]["train"]["tokens"] - reference.size < SEQ_LEN + 1
    np.testing.assert_array_equal(one_pass(sources.parse_spec("arxiv", f"pretokenized:{tmp_path}/one/", ""), sp),
                                  reference)  # one shard: the same rows in the same order
    shards = pretokenize(make_config(corpus_dir), "arxiv", str(tmp_path / "many"), chunks_per_shard=2,
                         chunk_tokens=4096)
    assert len(shards["splits"]["train"]["shards"]) > 1
    many = one_pass(sources.parse_spec("arxiv", f"pretokenized:{tmp_path}/many", ""), sp)
    assert 0 <= shards["splits"]["train"]["tokens"] - many.size < SEQ_LEN + 1


def test_a_tfds_dataset_is_read_by_name_and_split_across_hosts(corpus_dir, sp, tmp_path):
    import tensorflow_datasets as tfds

    paragraphs = stdlib_paragraphs()[:300]

    class StdlibDocstrings(tfds.core.GeneratorBasedBuilder):
        """Docstring paragraphs of the Python standard library: a local TFDS dataset for the adapter."""

        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
                {"content": tfds.features.Text()}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(paragraphs[30:]),
                    "validation": self._generate_examples(paragraphs[:30])}

        def _generate_examples(self, texts):
            for i, text in enumerate(texts):
                yield i, {"content": text}

    StdlibDocstrings(data_dir=str(tmp_path)).download_and_prepare()
    spec = sources.parse_spec("wikipedia", f"tfds:stdlib_docstrings?text=content&data_dir={tmp_path}", "")
    shares = [[r.numpy().decode() for r in pipeline.record_reader(spec, "train", pipeline.Host(i, 2), 0)[0](0)]
              for i in range(2)]
    assert sorted(shares[0] + shares[1]) == sorted(paragraphs[30:]) and not set(shares[0]) & set(shares[1])
    assert one_pass(spec, sp, "validation").size > 0
    with pytest.raises(FileNotFoundError, match="'wikipedia': TFDS dataset 'no_such_dataset'"):
        pipeline.record_reader(sources.parse_spec("wikipedia", "tfds:no_such_dataset", ""), "train",
                               pipeline.Host(), 0)


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_records_are_skipped_and_counted_never_hung_on(corpus_dir, tmp_path):
    import data_pipeline

    paragraphs = stdlib_paragraphs()
    one_line = " ".join(p.replace("\n", " ") for p in paragraphs)
    while len(one_line) < 1_200_000:  # a single 1.2 MB line of real text, longer than the 1 MiB a record may hold
        one_line += " " + one_line
    one_line = one_line[:1_200_000]
    good = [json.dumps({"text": p}) + "\n" for p in paragraphs[:200]]
    bad = [b"\xff\xfe not utf-8\n", b"{not json\n", b'{"text": 5}\n', b'{"text": "   "}\n', b'{"title": "x"}\n',
           (json.dumps({"text": one_line}) + "\n").encode()]
    for split in ("train", "validation"):
        with open(tmp_path / f"{split}-0.jsonl", "wb") as f:
            f.writelines([g.encode() for g in good[:100]] + bad + [g.encode() for g in good[100:]])
    c = make_config(corpus_dir, weights=only("books"), sources={"books": f"jsonl:{tmp_path}/{{split}}-*.jsonl"})
    c.train.global_batch_size = 256
    stream = data_pipeline.train_stream(c)
    for batches in range(1, 200):  # until one epoch of the file has been read
        next(stream)
        if batches % 10 == 0:
            (books,) = [s for s in stream.report()["sources"] if s["name"] == "books"]
            if books["epochs"] >= 1:
                break
    passes = books["skipped"]["empty"]  # counted each time the file is read
    assert passes >= 1 and books["epochs"] >= 1
    assert books["skipped"] == {"invalid_utf8": passes, "malformed": 3 * passes, "empty": passes,
                                "split_long": passes}
    texts, counts = tok.BatchEncoder(tok.load(f"{corpus_dir}/tokenizer.model"), "jsonl", 1 << 20, 1).texts(
        np.array([*map(str.encode, good), *bad], dtype=object))
    assert counts.tolist() == [201, 1, 3, 1, 1]  # COUNTERS: documents kept, then each kind of skip
    assert "".join(texts[-2:]) == one_line and max(map(len, texts)) == 1 << 20  # cut into pieces, none lost


def test_missing_files_and_empty_sources_are_errors_that_name_them(corpus_dir, tmp_path):
    import data_pipeline

    c = make_config(corpus_dir, sources={"github": f"jsonl:{tmp_path}/nowhere/{{split}}-*.jsonl"})
    with pytest.raises(FileNotFoundError, match=r"'github': no train files match '.*nowhere/train-\*\.jsonl'"):
        data_pipeline.train_stream(c)
    (tmp_path / "train-0.jsonl").write_text('{"text": ""}\n{"text": "  "}\n')
    c = make_config(corpus_dir, sources={"github": f"jsonl:{tmp_path}/{{split}}-*.jsonl"})
    with pytest.raises(ValueError, match="source 'github' .* yields no complete row"):
        data_pipeline.train_stream(c)
    (tmp_path / "train-0.jsonl").unlink()
    (tmp_path / "train-0.jsonl.gz").write_bytes(b"not gzip at all")
    c = make_config(corpus_dir, sources={"github": f"jsonl:{tmp_path}/{{split}}-*.jsonl.gz"})
    with pytest.raises(RuntimeError, match=r"source 'github': cannot read file .*train-0\.jsonl\.gz: inflate.*incorrect header"):
        data_pipeline.train_stream(c)


# ---------------------------------------------------------------------------------------------- subsampling
def documents_read(spec, sp, subsample: float) -> tuple[list[int], int]:
    """The training documents of `spec` in the order the packed rows hold them over the first two epochs and some
    of the third, each as its index in the file order of epoch 0, read back from the rows themselves; and the
    number of documents."""
    records, record_format = pipeline.record_reader(spec, "train", pipeline.Host(), seed=0)
    encoder = tok.BatchEncoder(sp, record_format, 1 << 20, 1)
    index = {tuple(encoder(np.array([r.numpy()], dtype=object))[0]): i for i, r in enumerate(records(0))}
    dataset = pipeline.source_rows(spec, "train", 0, host=pipeline.Host(), row_len=SEQ_LEN + 1, sp=sp,
                                   max_doc_chars=1 << 20, threads=1, shuffle_buffer=0, seed=0, repeat=True,
                                   subsample=subsample)
    rows = []
    for row in dataset.with_options(pipeline.options(1)).as_numpy_iterator():
        if row["epoch"] > 2:  # a row's epoch is its tokenizer batch's last: epoch 2's rows hold all of epoch 1
            break
        rows.append(row["tokens"])
    tokens = np.concatenate(rows)
    starts = np.flatnonzero(tokens == sp.bos_id())
    pieces = [tuple(tokens[a:b]) for a, b in zip(starts[:-1], starts[1:], strict=True)]  # the last may be cut
    assert all(p in index for p in pieces)
    return [index[p] for p in pieces], len(index)


def test_subsample_keeps_the_same_fraction_of_documents_in_every_epoch(corpus_dir, sp):
    spec = sources.parse_spec("wikipedia", "", corpus_dir)
    full, docs = documents_read(spec, sp, 1.0)
    assert full[:docs] == list(range(docs)) and sorted(full[docs:2 * docs]) == list(range(docs))
    read, _ = documents_read(spec, sp, 0.25)
    kept = sorted(set(read))
    assert read[:len(kept)] == kept  # epoch 0: a subsequence of the file order, no document twice
    assert sorted(read[len(kept):2 * len(kept)]) == kept  # epoch 1: the same documents, not a fresh draw
    sd = np.sqrt(docs * 0.25 * 0.75)
    assert abs(len(kept) - 0.25 * docs) < 4 * sd, (len(kept), docs)


def test_a_subsampled_stream_repeats_its_source_as_a_run_four_times_as_long(corpus_dir):
    """With a quarter of wikipedia's documents, the stream has read it about 4 times as often after the same
    batches; the held-out split is never subsampled, and the subsample is part of what a saved state must match."""
    import data_pipeline

    epochs = {}
    for fraction in (1.0, 0.25):
        c = make_config(corpus_dir, weights=only("wikipedia"), subsample={"wikipedia": fraction})
        c.train.global_batch_size = 64
        stream = data_pipeline.train_stream(c)
        take(stream, 30)
        (wiki,) = [s for s in stream.report()["sources"] if s["name"] == "wikipedia"]
        epochs[fraction] = wiki["epochs"]
        if fraction == 1.0:
            state, evals = stream.get_state(), list(data_pipeline.eval_streams(c)["wikipedia"])
    assert 3.0 < epochs[0.25] / epochs[1.0] < 5.3, epochs
    assert_same_batches(list(data_pipeline.eval_streams(c)["wikipedia"]), evals)
    with pytest.raises(ValueError, match="another data configuration"):
        data_pipeline.train_stream(c).set_state(state)


@pytest.mark.parametrize("subsample,message", [
    ({"wikipedia": 0.0}, r"data.subsample.wikipedia=0.0 must be a fraction in \(0, 1\]"),
    ({"wikipedia": 1.5}, r"data.subsample.wikipedia=1.5 must be a fraction"),
    ({"wikipedai": 0.5}, r"unknown source 'wikipedai'"),
])
def test_bad_subsample_fractions_are_errors_that_name_them(subsample, message):
    with pytest.raises(ValueError, match=message):
        sources.subsample_fractions(subsample, dict.fromkeys(SOURCE_NAMES, 1 / 7))
