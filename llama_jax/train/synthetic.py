"""Synthetic token batches with the data pipeline's Stream interface, free of TensorFlow (`data.source =
"synthetic"`): for tests, benchmarks and accelerators without the corpus.

Each row is an arithmetic progression modulo the vocabulary with a random start and a random stride in
[1, 8], so a model can learn it (the loss falls from ln(vocab) towards ln(8)/length) and a training curve
means something. Batch i is a pure function of (seed, stream, i): the state is one counter, resume is exact,
and every process draws the same global batch and keeps its own rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np

MAX_STRIDE = 8


class SyntheticStream:
    """Iterator of process-local batches {inputs, targets, segment_ids, positions, loss_mask}, each
    [global_batch_size // process_count, seq_len]."""

    def __init__(self, config, *, process_index: int = 0, process_count: int = 1, stream: int = 0):
        batch = config.train.global_batch_size
        if batch % process_count:
            raise ValueError(f"train.global_batch_size={batch} is not divisible by process_count={process_count}")
        self.global_batch = batch
        self.local_batch = batch // process_count
        self.seq_len = config.train.seq_len
        self.vocab_size = config.model.vocab_size
        self.seed = config.seed
        self.stream = stream
        self.process_index = process_index
        self.index = 0

    def __iter__(self) -> SyntheticStream:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self.batch(self.index)
        self.index += 1
        return batch

    def batch(self, index: int) -> dict[str, np.ndarray]:
        """Batch number `index` of this stream (this process's rows)."""
        rng = np.random.default_rng([self.seed, self.stream, index])
        start = rng.integers(0, self.vocab_size, size=(self.global_batch, 1))
        stride = rng.integers(1, MAX_STRIDE + 1, size=(self.global_batch, 1))
        tokens = (start + stride * np.arange(self.seq_len + 1)) % self.vocab_size
        rows = slice(self.process_index * self.local_batch, (self.process_index + 1) * self.local_batch)
        tokens = tokens[rows].astype(np.int32)
        shape = (self.local_batch, self.seq_len)
        return {
            "inputs": tokens[:, :-1],
            "targets": tokens[:, 1:],
            "segment_ids": np.ones(shape, np.int32),
            "positions": np.broadcast_to(np.arange(self.seq_len, dtype=np.int32), shape).copy(),
            "loss_mask": np.ones(shape, np.float32),
        }

    def get_state(self) -> bytes:
        return json.dumps({"index": self.index}).encode()

    def set_state(self, state: bytes) -> None:
        self.index = json.loads(state.decode())["index"]

    def report(self) -> dict:
        return {"source": "synthetic", "batches": self.index}


class SyntheticEvalStream(SyntheticStream):
    """Held-out synthetic batches: iterating yields the same `train.eval_batches` batches every time."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.batches = config.train.eval_batches

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return (self.batch(i) for i in range(self.batches))


def train_stream(config, *, process_index: int = 0, process_count: int = 1) -> SyntheticStream:
    """The synthetic training stream."""
    return SyntheticStream(config, process_index=process_index, process_count=process_count, stream=0)


def eval_streams(config, *, process_index: int = 0, process_count: int = 1) -> dict[str, SyntheticEvalStream]:
    """One held-out synthetic stream (other draws than the training stream's)."""
    where = {"process_index": process_index, "process_count": process_count}
    return {"synthetic": SyntheticEvalStream(config, **where, stream=1)}
