"""`python -m data_pipeline.feed_bench --config=experiments/configs/tiny.py`: how fast the data pipeline feeds a host.

Prints, measured in the same run on the same machine:
  1. SentencePiece's own batch encoding (C++ threads, no tf.data) of a mixture-weighted sample of the corpus;
  2. the whole training stream (read, tokenize, pack, mix, batch, numpy batch dict), and its ratio to (1);
  3. reading a pretokenized source (written once into .cache/pretokenized/ if missing), as rows and as a
     full training stream, at the config's seq_len and at the paper's 2048.
"""

from __future__ import annotations

import json
import os
import time

from absl import flags
from ml_collections import config_flags

from llama_jax import cli
from llama_jax.platforms import cpu_model

FLAGS = flags.FLAGS



def _timed(step, seconds: float) -> float:
    """Units per second of `step()` (which returns units done) over at least `seconds`."""
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        done += step()
    return done / elapsed


def sample_texts(corpus_dir: str, weights: dict[str, float], megabytes: float) -> list[str]:
    """Documents of the corpus train split, each source's share of `megabytes` by its weight."""
    with open(f"{corpus_dir}/manifest.json") as f:
        manifest = json.load(f)
    texts = []
    for name, weight in weights.items():
        budget = weight * megabytes * 1e6
        for shard in manifest["sources"][name]["splits"]["train"]["shards"]:
            with open(f"{corpus_dir}/{shard['path']}", encoding="utf-8") as f:
                for line in f:
                    if budget <= 0:
                        break
                    texts.append(json.loads(line)["text"])
                    budget -= len(line)
    return texts


def define_flags() -> None:
    """The command's flags (defined only when run as a command, so that importing it defines none)."""
    config_flags.DEFINE_config_file("config", "experiments/configs/tiny.py", "experiment config file")
    flags.DEFINE_integer("threads", 0, "threads for SentencePiece and tf.data; 0 = all cores")
    flags.DEFINE_float("seconds", 4.0, "seconds per measurement")
    flags.DEFINE_integer("rounds", 3, "alternating rounds of the encoding and stream measurements")
    flags.DEFINE_float("sample_mb", 8.0, "megabytes of text for the raw SentencePiece measurement")
    flags.DEFINE_string("pretokenized_source", "commoncrawl", "source to pretokenize and read")
    flags.DEFINE_bool("pretokenized", True, "also measure reading a pretokenized source")
    flags.DEFINE_string("json", "", "append the figures as one JSON line to this file (e.g. benchmarks/results/...)")


def main(argv: list[str]) -> None:
    del argv
    import data_pipeline
    from data_pipeline import pretokenize, sources
    from data_pipeline import spm_tokenizer as tok
    from llama_jax import corpus_spec

    config = FLAGS.config.unlock()
    threads = FLAGS.threads or os.cpu_count() or 1
    config.data.threads = threads
    corpus_dir = corpus_spec.corpus_dir(config.data)
    sp = tok.load(corpus_spec.tokenizer_path(config.data), config.model.vocab_size)
    weights = sources.mixture_weights(dict(config.data.weights), dict(config.data.sources),
                                      normalize=config.data.normalize_weights)
    seconds = FLAGS.seconds
    print(f"threads={threads} seq_len={config.train.seq_len} batch={config.train.global_batch_size} "
          f"cpus={os.cpu_count()}")

    texts = sample_texts(corpus_dir, weights, FLAGS.sample_mb)
    # Both sides count what the stream packs into rows: BOS + the document's pieces + EOS.
    n_tokens = sum(len(x) + 2 for x in sp.encode(texts, num_threads=threads))
    train = data_pipeline.train_stream(config)
    row_tokens = config.train.global_batch_size * (config.train.seq_len + 1)
    for _ in range(50):  # fill the shuffle buffers
        next(train)
    # Alternating rounds, best of each: on a shared machine the load changes between measurements.
    raw, one, rate = [], [], []
    for _ in range(FLAGS.rounds):
        raw.append(_timed(lambda: (sp.encode(texts, num_threads=threads), n_tokens)[1], seconds))
        one.append(_timed(lambda: (sp.encode(texts, num_threads=1), n_tokens)[1], seconds))
        rate.append(_timed(lambda: (next(train), row_tokens)[1], seconds))
    train.close()
    print(f"sentencepiece encode, {len(texts)} docs / {n_tokens:,} tokens with BOS and EOS: {max(raw) / 1e6:.2f} M "
          f"tokens/s on {threads} threads ({max(one) / 1e6:.2f} M on 1)")
    print(f"train stream (read, tokenize, pack, mix, batch): {max(rate) / 1e6:.2f} M tokens/s = "
          f"{max(rate) / max(raw):.0%} of sentencepiece's own parallel encoding (best of {FLAGS.rounds} rounds)")
    figures = {"command": "python -m data_pipeline.feed_bench", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "machine": f"{cpu_model()}, {os.cpu_count()} cores", "threads": threads, "seq_len": config.train.seq_len,
               "batch": config.train.global_batch_size, "rounds": FLAGS.rounds, "seconds": seconds,
               "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
               "sentencepiece_tokens_per_s": raw, "sentencepiece_1_thread_tokens_per_s": one,
               "stream_tokens_per_s": rate}
    if FLAGS.pretokenized:
        name = FLAGS.pretokenized_source
        out_dir = os.path.join(os.path.dirname(corpus_dir), "pretokenized", name)
        index_path = f"{out_dir}/index.json"
        if not os.path.exists(index_path) or json.load(open(index_path))["tokenizer_sha256"] != tok.fingerprint(sp):
            pretokenize.pretokenize(config, name, out_dir)
        for seq_len in sorted({config.train.seq_len, 2048}):
            rows, full = pretokenized_rates(config, name, out_dir, sp, seq_len, threads, seconds)
            figures[f"pretokenized_{name}_{seq_len}"] = {"rows_tokens_per_s": rows, "stream_tokens_per_s": full}
            print(f"pretokenized {name}, seq_len {seq_len}: rows {rows / 1e6:.1f} M tokens/s, train stream "
                  f"(shuffle, mix, batch dict) {full / 1e6:.1f} M tokens/s")
    if FLAGS.json:
        with open(FLAGS.json, "a") as f:
            f.write(json.dumps(figures) + "\n")


def pretokenized_rates(config, name: str, out_dir: str, sp, seq_len: int, threads: int, seconds: float,
                       ) -> tuple[float, float]:
    """Tokens/s reading pretokenized `name` as packed rows, and as a whole training stream of that source."""
    import data_pipeline
    from data_pipeline import sources
    from data_pipeline import tfdata_graph as pipeline

    spec = sources.parse_spec(name, f"pretokenized:{out_dir}", "")
    rows = pipeline.source_rows(spec, "train", 0, host=pipeline.Host(), row_len=seq_len + 1, sp=sp,
                                max_doc_chars=1, threads=threads, shuffle_buffer=0, seed=0, repeat=True)
    batches = iter(rows.batch(256).with_options(pipeline.options(threads)))
    read = _timed(lambda: next(batches)["tokens"].shape[0] * (seq_len + 1), seconds)
    config = config.copy_and_resolve_references()
    config.train.seq_len = seq_len
    config.train.global_batch_size = max(8, 262_144 // seq_len)
    config.data.weights = {k: float(k == name) for k in config.data.weights}
    config.data.sources[name] = f"pretokenized:{out_dir}"
    stream = data_pipeline.train_stream(config)
    next(stream)
    full = _timed(lambda: (next(stream), config.train.global_batch_size * (seq_len + 1))[1], seconds)
    stream.close()
    return read, full


if __name__ == "__main__":
    define_flags()
    cli.run_absl(main)
