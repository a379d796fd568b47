"""data_pipeline: LLaMA's seven-source pre-training mixture (Table 1) as process-local batches via tf.data.

    stream = data_pipeline.train_stream(config, process_index=i, process_count=n)
    batch = next(stream)            # inputs/targets/segment_ids/positions [B/n, seq_len] int32, loss_mask float32
    state = stream.get_state()      # bytes; stream.set_state(state) continues exactly there
    stream.report()                 # per source: target vs observed token share, documents, tokens, epochs

Importing this package does not import TensorFlow; building a stream does.
"""

import os

# TensorFlow's start-up notices say nothing a person can act on; its warnings and errors still show. Both settings
# are read when TensorFlow is first imported, so they are made here, before any module of this package imports it;
# child processes (Beam workers, test subprocesses) inherit them. A value the user set is kept.
# - TF_CPP_MIN_LOG_LEVEL=1 hides INFO lines that go through TensorFlow's own logger.
# - TF_ENABLE_ONEDNN_OPTS=0: on processors where TensorFlow turns oneDNN on by default (those with AVX-512), it
#   announces so through absl before absl's logging is initialised, which no log level hides ("All log messages
#   before absl::InitializeLog() ..." and "oneDNN custom operations are on", twice). oneDNN speeds up float
#   matmuls and convolutions; the stream runs none (it reads, tokenizes, packs and mixes integer token ids), so its
#   batches are the same bytes either way (tests/test_platform_settings.py) and its speed is unchanged
#   (docs/benchmarks.md, "oneDNN and the stream").
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

__all__ = ["EvalStream", "Stream", "eval_streams", "packed_batch", "train_stream"]


def __getattr__(name: str):
    """The stream API, imported on first use so that `data_pipeline.corpus` and friends load without TensorFlow."""
    if name in __all__:
        from data_pipeline import stream

        return getattr(stream, name)
    raise AttributeError(f"module 'data_pipeline' has no attribute {name!r}")
