"""What the runs of a sweep share of their streams, on disk: each source's held-out batches and the check that
a source yields a full row. A run of the CPU studies spent most of its start-up reading and tokenizing the
seven validation splits and building fourteen tf.data graphs only to see that each source is not empty
(experiments/results/cpu_isoflop_timing.json: setup and the first evaluation); every run of a sweep on the
same corpus, tokenizer and batch shape gets the same answers, so the first run writes them and the others read.

The cache is off unless the environment names a directory (CACHE_ENV; experiments.launch sets it for a local
sweep's runs, under the sweep's workdir). An entry's key is the sha256 of everything that decides it: the
source's kind, location and options, the split, each file's path, size and modification time, the host, the
row length, the batch, the tokenizer's fingerprint, the document cut, the subsample fraction and the number of
batches, so a changed corpus file or tokenizer is a miss, never a stale answer. Entries are written whole (to a
temporary name, then renamed) and read-only once read.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile

import numpy as np

CACHE_ENV = "LLAMA_JAX_STREAM_CACHE"
VERSION = 1  # of the entries' layout and of what decides them: bump when either changes


def directory() -> str | None:
    """The cache directory the environment names, or None (the cache is off)."""
    return os.environ.get(CACHE_ENV) or None


def key(spec, split: str, files: list[str], **decides) -> str | None:
    """The entry key of `spec`'s `split` read from `files` with the settings `decides` (JSON-serialisable), or
    None when a file cannot be stat'ed (then nothing is cached)."""
    try:
        import tensorflow as tf

        stats = [[path, tf.io.gfile.stat(path).length, tf.io.gfile.stat(path).mtime_nsec] for path in files]
    except Exception:  # noqa: BLE001 - a file system that cannot stat is a cache miss, not an error
        return None
    entry = {"version": VERSION, "source": [spec.name, spec.kind, spec.location, dict(spec.options)],
             "split": split, "files": stats, **decides}
    return hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()


def _path(entry: str, suffix: str) -> str | None:
    root = directory()
    return None if root is None else os.path.join(root, f"{entry}{suffix}")


def checked(entry: str | None) -> bool:
    """Whether a run has already seen the source of `entry` yield a full row."""
    path = entry and _path(entry, ".checked")
    return bool(path) and os.path.exists(path)


def mark_checked(entry: str | None) -> None:
    """Records that the source of `entry` yields a full row."""
    path = entry and _path(entry, ".checked")
    if path:
        _write(path, b"")


def load_rows(entry: str | None) -> np.ndarray | None:
    """The held-out token rows stored under `entry` ([batches, batch, row_len] int32, read-only), or None."""
    path = entry and _path(entry, ".npy")
    if not path or not os.path.exists(path):
        return None
    rows = np.load(path)
    rows.setflags(write=False)
    return rows


def store_rows(entry: str | None, rows: np.ndarray) -> None:
    """Stores the held-out token rows of one complete pass under `entry`."""
    path = entry and _path(entry, ".npy")
    if path:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(rows, dtype=np.int32))
        _write(path, buffer.getvalue())


def _write(path: str, payload: bytes) -> None:
    """Writes `payload` to `path` whole: a reader sees the old file, no file, or the new one, never part."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(payload)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
