"""The tf.data graph: read each source's share for this host, tokenize in parallel, pack into rows, mix.

Per source:  files (this host's share, reordered every epoch) -> records, tagged with their epoch -> batches
             of records -> SentencePiece in a `tf.numpy_function` (BOS + ids + EOS per document) -> packed
             into rows of seq_len + 1 tokens by a `scan` that carries the unfinished row to the next batch
             -> shuffled rows.
Mixture:     `mix` draws rows from the sources with the Table 1 weights (exactly the draws of
             `sample_from_datasets`), so the token proportions equal the weights up to sampling error (every
             row holds seq_len + 1 tokens).
Each row keeps its source, its epoch of the source, and the source's running counts (skipped records, bytes
read, tokens made), so the Stream can account for the mixture exactly, including after a resume.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable

import tensorflow as tf  # TF_CPP_MIN_LOG_LEVEL: data_pipeline/__init__.py

from data_pipeline import spm_tokenizer as tok
from data_pipeline.sources import SourceSpec

RECORDS_PER_BATCH = 128  # documents per SentencePiece call at most (measured: 32 gave 4 points less of raw encoding speed)
BYTES_PER_CALL = 1 << 18  # and text per call at most (records_per_call)
PEEK_RECORDS = 32  # records whose mean size sets a source's records per call
SELECTOR_BLOCK = 1024  # mixture draws per selector call
PRETOKENIZED_CHUNK = 1 << 16  # tokens per record of a pretokenized shard


@dataclasses.dataclass(frozen=True)
class Host:
    """This process's place among `count` processes reading the same sources."""

    index: int = 0
    count: int = 1

    def __post_init__(self):
        if not 0 <= self.index < self.count:
            raise ValueError(f"process_index={self.index} is outside [0, process_count={self.count})")


def list_files(spec: SourceSpec, split: str) -> list[str]:
    """The shard files of `spec` for `split`, sorted; an error names the pattern when nothing matches."""
    if spec.kind == "corpus":
        pattern = f"{spec.location}/{split}-*.jsonl"
    elif spec.kind == "pretokenized":
        pattern = f"{spec.location}/{split}-*.tfrecord"
    else:
        pattern = spec.location.replace("{split}", split)
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        hint = "run `make corpus`" if spec.kind == "corpus" else "check data.sources"
        raise FileNotFoundError(f"source {spec.name!r}: no {split} files match {pattern!r}; {hint}")
    return files


def _host_files(files: list[str], host: Host) -> tuple[list[str], bool]:
    """This host's files, and whether records must still be split across hosts (fewer files than hosts)."""
    if len(files) >= host.count:
        return files[host.index::host.count], False
    return files, True


def record_reader(spec: SourceSpec, split: str, host: Host, seed: int) -> tuple[Callable, str]:
    """epoch -> one pass over this host's records of `spec`; and their format: jsonl, text, uint16 or int32."""
    if spec.kind == "tfds":
        ds = _tfds_reader(spec, split, host)
        return lambda epoch: ds, "text"
    files, split_records = _host_files(list_files(spec, split), host)
    compression = {"GZIP" if f.endswith(".gz") else "" for f in files}
    if len(compression) > 1:
        raise ValueError(f"source {spec.name!r} mixes gzipped and plain {split} files; use one kind")
    compression_type = compression.pop()
    binary = spec.kind in ("tfrecord", "pretokenized")

    def read(path):
        if binary:
            return tf.data.TFRecordDataset(path, compression_type=compression_type)
        return tf.data.TextLineDataset(path, compression_type=compression_type)

    def records(epoch):  # the files in another order every epoch, four read round-robin
        order = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed + epoch)
        records = order.interleave(read, cycle_length=min(len(files), 4))
        return records.shard(host.count, host.index) if split_records else records
    if spec.kind == "pretokenized":
        return records, pretokenized_index(spec)["dtype"]
    if spec.kind == "tfrecord":
        feature = {"text": tf.io.FixedLenFeature([], tf.string)}
        return lambda epoch: records(epoch).map(lambda r: tf.io.parse_single_example(r, feature)["text"]), "text"
    return records, "jsonl"


def pretokenized_index(spec: SourceSpec) -> dict:
    """The index.json that `python -m data_pipeline.pretokenize` wrote next to a pretokenized source's shards."""
    path = f"{spec.location}/index.json"
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"source {spec.name!r}: {path} does not exist; write it with "
                                "`python -m data_pipeline.pretokenize`")
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def _tfds_reader(spec: SourceSpec, split: str, host: Host) -> tf.data.Dataset:
    """Records of a prepared TFDS dataset: this host's even slice of the split, its text feature."""
    import tensorflow_datasets as tfds

    split_name = spec.options.get(split, split)
    text_key = spec.options.get("text", "text")
    host_split = tfds.even_splits(split_name, n=host.count)[host.index]
    try:
        ds = tfds.load(spec.location, split=host_split, data_dir=spec.options.get("data_dir"), shuffle_files=False,
                       download=False, read_config=tfds.ReadConfig(add_tfds_id=False))
    except Exception as e:  # noqa: BLE001 - TFDS raises many types; the message must name the source
        raise FileNotFoundError(f"source {spec.name!r}: TFDS dataset {spec.location!r} split {split_name!r} could "
                                f"not be loaded ({e}); prepare it with `tfds build` and set TFDS_DATA_DIR") from e
    if text_key not in ds.element_spec:
        raise KeyError(f"source {spec.name!r}: TFDS dataset {spec.location!r} has features "
                       f"{sorted(ds.element_spec)}, not {text_key!r}; add '?text=<feature>' to its spec")
    return ds.map(lambda ex: ex[text_key])


def records_per_call(records: tf.data.Dataset) -> int:
    """Documents per SentencePiece call for a source whose records (one pass, `records`) are text: about
    BYTES_PER_CALL of text by the mean size of the first PEEK_RECORDS, between 1 and RECORDS_PER_BATCH. A fixed
    128 made one call of the bundled books (130 kB a document) tokenize 3 MB before the source's first row came
    out: seconds of every run's start. The packed rows do not depend on it (the packer carries each call's tail
    over). Give it a dataset of its own (record_reader's pass built again): iterating the one that will be
    trained on would move its per-iteration file order. An unreadable file is left to the stream's own checks,
    which name it (read_error)."""
    try:
        sizes = [len(record) for record in records.take(PEEK_RECORDS).as_numpy_iterator()]
    except tf.errors.OpError:
        return RECORDS_PER_BATCH
    if not sizes:
        return RECORDS_PER_BATCH
    return max(1, min(RECORDS_PER_BATCH, round(BYTES_PER_CALL * len(sizes) / max(1, sum(sizes)))))


def doc_tokens(records: tf.data.Dataset, record_format: str, encoder: tok.BatchEncoder | None,
               per_call: int = RECORDS_PER_BATCH) -> tf.data.Dataset:
    """(record, epoch) -> (flat token ids with BOS/EOS, epoch, COUNTERS, bytes read) per batch of `per_call`
    records (records_per_call)."""
    n = len(tok.COUNTERS)
    newline = 1 if record_format == "jsonl" else 0  # a line's share of its file, as the manifest counts it
    if record_format in ("uint16", "int32"):  # pretokenized: records are chunks of the token stream
        dtype = tf.as_dtype(record_format)
        return records.map(lambda r, e: (tf.cast(tf.io.decode_raw(r, dtype), tf.int32), e, tf.zeros([n], tf.int64),
                                         tf.cast(tf.strings.length(r), tf.int64)))

    def encode(records, epochs):
        flat, _, counts = tf.numpy_function(encoder, [records], [tf.int32, tf.int64, tf.int64], stateful=False)
        flat.set_shape([None])
        counts.set_shape([n])
        nbytes = tf.reduce_sum(tf.cast(tf.strings.length(records), tf.int64) + newline)
        return flat, tf.reduce_max(epochs), counts, nbytes

    return records.batch(per_call).map(encode, num_parallel_calls=encoder.calls, deterministic=True)


def _pack(chunks: tf.data.Dataset, row_len: int, source_index: int, row_dtype: tf.DType) -> tf.data.Dataset:
    """Token chunks -> rows {'tokens' [row_len], 'source', 'epoch', 'counts' [7]}; the tail of a chunk opens the
    next row, so no token is lost. `counts`: the source's running COUNTERS, bytes read and tokens made when
    the row was completed. Built per chunk and then unbatched: no per-row function calls."""

    def step(state, chunk):
        leftover, total = state
        tokens, epoch, counts, nbytes = chunk
        joined = tf.concat([leftover, tokens], 0)
        rows = tf.shape(joined)[0] // row_len
        total = total + tf.concat([counts, [nbytes, tf.size(tokens, out_type=tf.int64)]], 0)
        out = {"tokens": tf.cast(tf.reshape(joined[:rows * row_len], [rows, row_len]), row_dtype),
               "source": tf.fill([rows], tf.constant(source_index, tf.int32)),
               "epoch": tf.fill([rows], tf.cast(epoch, tf.int32)),
               "counts": tf.tile(total[None], [rows, 1])}
        return (joined[rows * row_len:], total), out

    initial = (tf.zeros([0], tf.int32), tf.zeros([len(tok.COUNTERS) + 2], tf.int64))
    return chunks.scan(initial, step).unbatch()


def source_rows(spec: SourceSpec, split: str, source_index: int, *, host: Host, row_len: int,
                sp: tok.spm.SentencePieceProcessor, max_doc_chars: int, threads: int, shuffle_buffer: int,
                seed: int, repeat: bool, subsample: float = 1.0) -> tf.data.Dataset:
    """Rows {'tokens' [row_len], 'source', 'epoch', 'counts' [7]} of one source, endless when `repeat`, from the
    `subsample` fraction of its records whose hash falls below it (the same records in every epoch).

    Shuffling is of files (per epoch) and of packed rows (`shuffle_buffer` rows), not of raw documents:
    the shuffle buffer is part of the resume state, and rows stored as uint16 keep it small.
    """
    records, record_format = record_reader(spec, split, host, seed)
    if spec.kind == "pretokenized" and pretokenized_index(spec)["tokenizer_sha256"] != tok.fingerprint(sp):
        raise ValueError(f"source {spec.name!r}: {spec.location} was tokenized with another tokenizer than "
                         "config.data.tokenizer; pretokenize it again with this one")
    epochs = tf.data.Dataset.range(2**62 if repeat else 1)
    tagged = epochs.flat_map(lambda e: records(e).map(lambda r: (r, e)))
    if subsample < 1:
        buckets = 1 << 30
        threshold = tf.constant(int(subsample * buckets), tf.int64)
        tagged = tagged.filter(lambda r, e: tf.strings.to_hash_bucket_fast(r, buckets) < threshold)
    encoder = tok.BatchEncoder(sp, record_format, max_doc_chars, threads) if record_format in ("jsonl", "text") \
        else None
    row_dtype = tf.uint16 if sp.vocab_size() <= 1 << 16 else tf.int32
    per_call = records_per_call(records(0)) if encoder is not None else RECORDS_PER_BATCH
    rows = _pack(doc_tokens(tagged, record_format, encoder, per_call), row_len, source_index, row_dtype)
    if shuffle_buffer > 1:  # file order is the same on all hosts (they split it); row order is per host
        rows = rows.shuffle(shuffle_buffer, seed=seed * 1_000_003 + host.index, reshuffle_each_iteration=False)
    return rows


def mix(datasets: list[tf.data.Dataset], weights: list[float], seed: int) -> tf.data.Dataset:
    """Elements of `datasets` drawn with probabilities `weights`: exactly the sequence of
    `tf.data.Dataset.sample_from_datasets(datasets, weights, seed, stop_on_empty_dataset=True)`.

    That op draws each choice in its own tf.data function call (`stateless_multinomial` on log(weights), seeded
    by the next pair of `Dataset.random(seed)`): measured 26 us of CPU a row on 2 cores, a quarter of what the
    whole stream may spend per row to keep pace with SentencePiece. Here the same op on the same seed pairs
    runs SELECTOR_BLOCK times per call: 12 us a row.
    """
    if len(datasets) == 1:  # as sample_from_datasets: no draws at all
        return datasets[0]
    logits = tf.math.log(tf.constant([weights], tf.float32))

    def choose(seeds):  # [2 * SELECTOR_BLOCK] int64 -> [SELECTOR_BLOCK] dataset indices
        return tf.map_fn(lambda seed: tf.random.stateless_categorical(logits, 1, seed, dtype=tf.int64)[0, 0],
                         tf.reshape(seeds, [SELECTOR_BLOCK, 2]), fn_output_signature=tf.int64)

    choices = tf.data.Dataset.random(seed=seed).batch(2 * SELECTOR_BLOCK).map(choose).unbatch()
    return tf.data.Dataset.choose_from_datasets(datasets, choices, stop_on_empty_dataset=True)


def check_not_empty(spec: SourceSpec, split: str, rows: tf.data.Dataset, host: Host) -> None:
    """A clear error, instead of an endless search, when one pass over a source yields no full row."""
    try:
        empty = not any(True for _ in rows.take(1))
    except tf.errors.OpError as e:
        raise read_error(e, [spec], split, host) from e
    if empty:
        raise ValueError(f"source {spec.name!r} ({spec.kind}:{spec.location}, split {split!r}) yields no "
                         "complete row of tokens in one pass: its files are empty, invalid, or shorter than "
                         "seq_len + 1 tokens; give it weight 0 or fix its files")


def read_error(error: tf.errors.OpError, specs: list[SourceSpec], split: str, host: Host) -> RuntimeError:
    """An error naming the source, and the file if its first record is unreadable, behind a tf.data failure."""
    for spec in specs:
        if spec.kind == "tfds":
            continue
        for path in _host_files(list_files(spec, split), host)[0]:
            read = tf.data.TFRecordDataset if spec.kind in ("tfrecord", "pretokenized") else tf.data.TextLineDataset
            try:
                for _ in read(path, compression_type="GZIP" if path.endswith(".gz") else "").take(1):
                    pass
            except tf.errors.OpError as e:
                return RuntimeError(f"source {spec.name!r}: cannot read file {path}: {_message(e)}; "
                                    "fix or remove the file")
    names = ", ".join(f"{s.name!r} ({s.kind}:{s.location})" for s in specs)
    return RuntimeError(f"reading the {split} split of {names} failed: {_message(error)}")


def _message(error: tf.errors.OpError) -> str:
    """TF's error message without its function-node and op decorations."""
    return re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\].*$", "", error.message)


def options(threads: int) -> tf.data.Options:
    """Deterministic, with TF's threads bounded: a busy tf.data next to a JAX step slows the step (17% on 2 cores)."""
    opts = tf.data.Options()
    opts.deterministic = True
    # `threads` tokenizer calls can each hold a pool thread while SentencePiece works on its own threads;
    # as many again run the rest of the graph (measured: 2 threads in all was slower)
    opts.threading.private_threadpool_size = 2 * threads
    opts.threading.max_intra_op_parallelism = 1
    # The only Python in the graph is the tokenizer call, a pure function of its input.
    opts.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    return opts
