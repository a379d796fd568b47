"""data_pipeline: LLaMA's seven-source pre-training mixture (Table 1) as process-local batches via tf.data.

    stream = data_pipeline.train_stream(config, process_index=i, process_count=n)
    batch = next(stream)            # inputs/targets/segment_ids/positions [B/n, seq_len] int32, loss_mask float32
    state = stream.get_state()      # bytes; stream.set_state(state) continues exactly there
    stream.report()                 # per source: target vs observed token share, documents, tokens, epochs

Importing this package does not import TensorFlow; building a stream does.
"""

import os

# TensorFlow's INFO lines (its CPU-instruction and oneDNN notices) on every import say nothing a person can act
# on; its warnings and errors still show. Set before any module of this package imports TensorFlow.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

__all__ = ["EvalStream", "Stream", "eval_streams", "packed_batch", "train_stream"]


def __getattr__(name: str):
    """The stream API, imported on first use so that `data_pipeline.corpus` and friends load without TensorFlow."""
    if name in __all__:
        from data_pipeline import stream

        return getattr(stream, name)
    raise AttributeError(f"module 'data_pipeline' has no attribute {name!r}")
