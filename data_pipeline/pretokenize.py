"""`python -m data_pipeline.pretokenize --config=... --source=NAME --out=DIR`: tokenize a source once, for pods.

Writes the source's token stream (BOS + ids + EOS per document, in file order) as TFRecord shards of
PRETOKENIZED_CHUNK-token records (uint16 when the vocabulary fits, else int32) into
`DIR/{train,validation}-NNNNN.tfrecord`, plus `DIR/index.json` (tokenizer sha256, dtype, tokens, documents,
per-shard sizes). `config.data.sources.NAME = "pretokenized:DIR"` then streams it without a tokenizer call:
the hosts split the shards, and packing, mixing, resume and accounting are those of the text path.
"""

from __future__ import annotations

import json
import os

from absl import flags
from ml_collections import config_flags

from data_pipeline import sources
from data_pipeline import spm_tokenizer as tok
from data_pipeline import tfdata_graph as pipeline
from llama_jax import cli, corpus_spec

FLAGS = flags.FLAGS



def pretokenize(config, source: str, out_dir: str, chunks_per_shard: int = 64,
                chunk_tokens: int = pipeline.PRETOKENIZED_CHUNK) -> dict:
    """Tokenizes both splits of `source` of `config` into `out_dir`; returns the index it writes."""
    import numpy as np
    import tensorflow as tf

    corpus_dir = corpus_spec.corpus_dir(config.data)
    spec = sources.parse_spec(source, dict(config.data.get("sources", {})).get(source, ""), corpus_dir)
    if spec.kind == "pretokenized":
        raise ValueError(f"source {source!r} is already pretokenized ({spec.location})")
    sp = tok.load(corpus_spec.tokenizer_path(config.data), config.model.vocab_size)
    dtype = np.uint16 if sp.vocab_size() <= 1 << 16 else np.int32
    encoder_threads = config.data.get("threads", 0) or tok.default_threads()
    tf.io.gfile.makedirs(out_dir)
    index = {"source": source, "tokenizer_sha256": tok.fingerprint(sp), "vocab_size": sp.vocab_size(),
             "dtype": np.dtype(dtype).name, "chunk_tokens": chunk_tokens, "splits": {}}
    for split in sources.SPLITS:
        records, record_format = pipeline.record_reader(spec, split, pipeline.Host(), seed=0)
        encoder = tok.BatchEncoder(sp, record_format, config.data.get("max_doc_chars", 1 << 20), encoder_threads)
        tagged = records(0).map(lambda r: (r, tf.constant(0, tf.int64)))
        chunks = pipeline.doc_tokens(tagged, record_format, encoder, pipeline.records_per_call(records(0)))
        writer = _ShardWriter(out_dir, split, chunks_per_shard, chunk_tokens, dtype)
        docs = 0
        for tokens, _, counts, _ in chunks.with_options(pipeline.options(encoder_threads)).as_numpy_iterator():
            writer.add(tokens)
            docs += int(counts[0])
        writer.close()
        index["splits"][split] = {"tokens": writer.tokens, "docs": docs, "shards": writer.shards}
    with tf.io.gfile.GFile(f"{out_dir}/index.json", "w") as f:
        json.dump(index, f, indent=1)
    return index


class _ShardWriter:
    """Cuts a token stream into `chunk_tokens`-token records and `chunks_per_shard` records per file."""

    def __init__(self, out_dir: str, split: str, chunks_per_shard: int, chunk_tokens: int, dtype):
        import numpy as np

        self.out_dir, self.split, self.dtype = out_dir, split, dtype
        self.chunks_per_shard, self.chunk_tokens = chunks_per_shard, chunk_tokens
        self.pending = np.zeros([0], dtype)
        self.shards: list[dict] = []
        self.tokens = 0
        self._writer, self._records, self._bytes = None, 0, 0

    def add(self, tokens) -> None:
        import numpy as np

        self.pending = np.concatenate([self.pending, tokens.astype(self.dtype)])
        while len(self.pending) >= self.chunk_tokens:
            self._write(self.pending[:self.chunk_tokens])
            self.pending = self.pending[self.chunk_tokens:]

    def _write(self, chunk) -> None:
        import tensorflow as tf

        if self._writer is None:
            name = f"{self.split}-{len(self.shards):05d}.tfrecord"
            self._writer = tf.io.TFRecordWriter(f"{self.out_dir}/{name}")
            self.shards.append({"path": name, "bytes": 0, "tokens": 0})
        payload = chunk.astype(self.dtype).tobytes()
        self._writer.write(payload)
        self.shards[-1]["bytes"] += len(payload)
        self.shards[-1]["tokens"] += len(chunk)
        self.tokens += len(chunk)
        self._records += 1
        if self._records == self.chunks_per_shard:
            self._writer.close()
            self._writer, self._records = None, 0

    def close(self) -> None:
        if len(self.pending):
            self._write(self.pending)
        if self._writer is not None:
            self._writer.close()


def define_flags() -> None:
    """The command's flags (defined only when run as a command, so that importing it defines none)."""
    config_flags.DEFINE_config_file("config", None, "experiment config file (experiments/configs/*.py)")
    flags.DEFINE_string("source", None, "source name, e.g. commoncrawl")
    flags.DEFINE_string("out", None, "output directory (local or gs://)")
    flags.DEFINE_integer("chunks_per_shard", 64, "records of PRETOKENIZED_CHUNK tokens per shard")


def main(argv: list[str]) -> None:
    del argv
    index = pretokenize(FLAGS.config, FLAGS.source, FLAGS.out, FLAGS.chunks_per_shard)
    for split, entry in index["splits"].items():
        print(f"{FLAGS.source} {split}: {entry['tokens']:,} tokens, {entry['docs']:,} documents, "
              f"{len(entry['shards'])} shards in {os.path.join(FLAGS.out, '')}")


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["config", "source", "out"])
    cli.run_absl(main)
