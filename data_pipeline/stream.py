"""`train_stream` and `eval_streams`: the iterators the trainer pulls process-local batches from.

A batch is a dict of numpy arrays, each [global_batch_size // process_count, seq_len]: `inputs`, `targets`
(inputs shifted by one), `segment_ids` (1, 2, ... per document piece in the row; no padding, so never 0),
`positions` (position within that piece) and `loss_mask` (0.0 where the input is EOS, i.e. where the target
would be the next document's BOS). A document cut by a row boundary continues in the next row as a new
segment starting at position 0, as in T5X/MaxText packing, so positions stay below seq_len.
"""

from __future__ import annotations

import atexit
import hashlib
import io
import json
import os
import tarfile
import tempfile
import weakref
from collections.abc import Callable, Iterator

import ml_collections
import numpy as np

from data_pipeline import sources, stream_cache
from data_pipeline import spm_tokenizer as tok
from data_pipeline import tfdata_graph as pipeline
from llama_jax import corpus_spec

# The version of the tf.data graph behind a saved state: an iterator state restores only into the same graph.
# 2: mixture choices drawn in blocks (pipeline.mix), 128 documents per tokenizer call.
STATE_VERSION = 2
DEFAULT_CORPUS = corpus_spec.DEFAULT_CORPUS


_LIVE: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_streams() -> None:
    for stream in list(_LIVE):
        stream.close()


def packed_batch(rows: np.ndarray, bos: int, eos: int) -> dict[str, np.ndarray]:
    """rows [batch, seq_len + 1] of packed tokens -> the five [batch, seq_len] arrays of a training batch."""
    inputs, targets = rows[:, :-1].astype(np.int32), rows[:, 1:].astype(np.int32)
    starts = inputs == bos
    starts[:, 0] = True
    index = np.arange(inputs.shape[1], dtype=np.int32)
    first = np.maximum.accumulate(np.where(starts, index, 0), axis=1)
    return {"inputs": inputs, "targets": targets,
            "segment_ids": np.cumsum(starts, axis=1, dtype=np.int32),
            "positions": (index - first).astype(np.int32),
            "loss_mask": (inputs != eos).astype(np.float32)}


class Stream:
    """Endless training batches from the source mixture, with exact get_state/set_state and a mixture report."""

    def __init__(self, dataset, *, batch: int, names: list[str], weights: list[float], row_len: int, bos: int,
                 eos: int, bytes_per_epoch: list[int | None], fingerprint: str, specs: list, host: pipeline.Host):
        import tensorflow as tf

        self._tf = tf
        self._dataset = dataset
        self._iterator = iter(dataset)
        # `dataset` yields several batches at once (one iterator call per ~256 rows); the rows fetched but not
        # yet returned are part of the state.
        self.batch = batch
        self._pending: dict[str, np.ndarray] = {}
        self.names, self.weights, self.row_len = names, weights, row_len
        self.bos, self.eos, self.bytes_per_epoch, self.fingerprint = bos, eos, bytes_per_epoch, fingerprint
        self._specs, self._host = specs, host
        n = len(names)
        _LIVE.add(self)
        self._stats = {"rows": np.zeros(n, np.int64), "docs": np.zeros(n, np.int64), "epoch": np.zeros(n, np.int64),
                       "counts": np.zeros((n, len(tok.COUNTERS) + 2), np.int64), "batches": 0}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if not self._pending or len(self._pending["source"]) == 0:
            try:
                self._pending = {k: v.numpy() for k, v in next(self._iterator).items()}
            except self._tf.errors.OpError as e:  # a shard that became unreadable mid-run: say which
                raise pipeline.read_error(e, self._specs, "train", self._host) from e
        element = {k: v[:self.batch] for k, v in self._pending.items()}
        self._pending = {k: v[self.batch:] for k, v in self._pending.items()}
        rows, source = element["tokens"].astype(np.int32), element["source"]
        s, n = self._stats, len(self.names)
        s["rows"] += np.bincount(source, minlength=n)
        s["docs"] += np.bincount(source, weights=(rows == self.bos).sum(axis=1), minlength=n).astype(np.int64)
        np.maximum.at(s["epoch"], source, element["epoch"])
        np.maximum.at(s["counts"], source, element["counts"])  # running counts: the latest is the largest
        s["batches"] += 1
        return packed_batch(rows, self.bos, self.eos)

    def close(self) -> None:
        """Stops the tf.data threads; called for every open stream at exit, where a tokenizer call still in
        flight would otherwise abort the interpreter."""
        self._iterator = None

    def get_state(self) -> bytes:
        """The tf.data iterator checkpoint and the mixture statistics, as one tar archive."""
        with tempfile.TemporaryDirectory() as tmp:
            self._tf.train.Checkpoint(iterator=self._iterator).write(f"{tmp}/iterator")
            stats = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in self._stats.items()}
            meta = json.dumps({"version": STATE_VERSION, "fingerprint": self.fingerprint, "stats": stats}).encode()
            with open(f"{tmp}/stream.json", "wb") as f:
                f.write(meta)
            np.savez(f"{tmp}/pending.npz", **self._pending)
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                for name in sorted(os.listdir(tmp)):
                    tar.add(f"{tmp}/{name}", arcname=name)
        return buffer.getvalue()

    def set_state(self, state: bytes) -> None:
        """Continues exactly where the stream that produced `state` (by get_state) was."""
        with tempfile.TemporaryDirectory() as tmp:
            with tarfile.open(fileobj=io.BytesIO(state)) as tar:
                tar.extractall(tmp, filter="data")
            with open(f"{tmp}/stream.json") as f:
                meta = json.load(f)
            if meta.get("version", 1) != STATE_VERSION:
                raise ValueError(f"the saved data stream state was written by version {meta.get('version', 1)} of "
                                 f"the data pipeline's graph, this is version {STATE_VERSION}; resume from a "
                                 "checkpoint written by this version or start a fresh workdir")
            if meta["fingerprint"] != self.fingerprint:
                raise ValueError("the saved data stream state belongs to another data configuration (sources, "
                                 "weights, seed, seq_len, batch size, process index/count or tokenizer differ); "
                                 "restore it with the configuration it was saved with")
            self._tf.train.Checkpoint(iterator=self._iterator).read(f"{tmp}/iterator").assert_consumed()
            with np.load(f"{tmp}/pending.npz") as pending:
                self._pending = {k: pending[k] for k in pending.files}
        self._stats = {k: np.array(v, np.int64) if isinstance(v, list) else v for k, v in meta["stats"].items()}

    def report(self) -> dict:
        """Per source: target and observed token proportion, documents, tokens and epochs drawn so far."""
        s = self._stats
        total_rows = int(s["rows"].sum())
        table = []
        for i, name in enumerate(self.names):
            *_, bytes_read, tokens_made = s["counts"][i].tolist()
            per_epoch = self.bytes_per_epoch[i]
            tokens = int(s["rows"][i]) * self.row_len
            table.append({
                "name": name, "target": self.weights[i],
                "observed": int(s["rows"][i]) / total_rows if total_rows else 0.0,
                "docs": int(s["docs"][i]), "tokens": tokens,
                # Table 1's column: tokens drawn over the source's size in tokens (its size in bytes, from the
                # manifest, times the tokens per byte seen so far); else the number of passes begun.
                "epochs": tokens * bytes_read / (tokens_made * per_epoch) if per_epoch and tokens_made
                else float(s["epoch"][i]),
                "paper_epochs": corpus_spec.TABLE1[name][1] if name in corpus_spec.TABLE1 else None,  # over 1.4T tokens
                "skipped": dict(zip(tok.COUNTERS[1:], s["counts"][i][1:len(tok.COUNTERS)].tolist(), strict=True)),
            })
        return {"batches": s["batches"], "tokens": total_rows * self.row_len, "sources": table}


class EvalStream:
    """The same `batches` held-out batches of one source, every time: `for batch in stream` yields them once,
    `next(stream)` cycles through them. The first complete pass is kept in memory and every later one reads it
    (a run evaluates many times; reading and tokenizing the validation split again each time was most of an
    evaluation's cost at the CPU studies' sizes)."""

    def __init__(self, dataset, batches: int, bos: int, eos: int, *, rows: np.ndarray | None = None,
                 on_first_pass: Callable[[np.ndarray], None] | None = None):
        """`dataset` yields [batch, row_len] token rows; or `rows` ([batches, batch, row_len]) are the batches'
        rows already read (by an earlier run: stream_cache) and `dataset` is None. `on_first_pass` receives the
        rows of the first complete pass."""
        self._dataset, self.batches, self.bos, self.eos = dataset, batches, bos, eos
        self._on_first_pass = on_first_pass
        self._position = 0
        self._iterator = None
        self._kept: list[dict[str, np.ndarray]] | None = None  # the batches, once one pass has read them all
        self._open: weakref.WeakSet = weakref.WeakSet()  # generators whose tf.data iterators may be running
        if rows is not None:
            if len(rows) != batches:
                raise ValueError(f"{len(rows)} stored held-out batches, but {batches} asked for")
            self._kept = [_read_only(packed_batch(np.asarray(r, np.int32), bos, eos)) for r in rows]
        _LIVE.add(self)

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        if self._kept is not None:
            return iter(self._kept)

        def generate():
            read, rows = [], []
            for element in self._dataset.take(self.batches):
                rows.append(element.numpy().astype(np.int32))
                read.append(packed_batch(rows[-1], self.bos, self.eos))
                if len(read) == self.batches:  # kept before the last batch is yielded: a consumer that stops
                    # after `batches` of them (zip with a range, as the held-out evaluation reads) never resumes
                    # this generator, and the pass would be read again at every evaluation, never cached
                    self._kept = [_read_only(batch) for batch in read]  # shared by every later pass
                    if self._on_first_pass is not None:
                        self._on_first_pass(np.stack(rows))
                yield read[-1]

        batches = generate()
        self._open.add(batches)
        return batches

    def close(self) -> None:
        """Stops the tf.data threads of every pass begun (see Stream.close)."""
        for batches in list(self._open):
            batches.close()
        self._iterator = None

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self._batches()

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iterator is None or self._position == 0:
            self._iterator = self._batches()
        batch = next(self._iterator)
        self._position = (self._position + 1) % self.batches
        return batch

    def get_state(self) -> bytes:
        """Where in the cycle of `batches` batches `next()` is."""
        return json.dumps({"position": self._position}).encode()

    def set_state(self, state: bytes) -> None:
        """Continues the cycle where get_state() was called."""
        self._position = json.loads(state)["position"]
        self._iterator = self._batches()
        for _ in range(self._position):
            next(self._iterator)

    def report(self) -> dict:
        """The number of held-out batches and the position in their cycle."""
        return {"batches": self.batches, "position": self._position}


def _read_only(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`batch` with its arrays made read-only: kept batches are shared by every pass, nobody may write into them."""
    for array in batch.values():
        array.setflags(write=False)
    return batch


# ---------------------------------------------------------------------------------------------- config
def _setup(config: ml_collections.ConfigDict, process_index: int, process_count: int):
    """What every stream of `config` needs: host, checked weights, source specs, tokenizer, sizes."""
    data = config.data
    host = pipeline.Host(process_index, process_count)
    global_batch = config.train.global_batch_size
    if global_batch % process_count:
        raise ValueError(f"train.global_batch_size={global_batch} is not divisible by process_count={process_count}")
    corpus_dir = corpus_spec.corpus_dir(data)
    spec_strings = dict(data.get("sources", {}))
    weights = sources.mixture_weights(dict(data.weights), spec_strings,
                                      normalize=data.get("normalize_weights", False))
    subsample = sources.subsample_fractions(dict(data.get("subsample", {})), weights)
    specs = {name: sources.parse_spec(name, spec_strings.get(name, ""), corpus_dir) for name in weights}
    sp = tok.load(corpus_spec.tokenizer_path(data), config.model.vocab_size)
    threads = data.get("threads", 0) or tok.default_threads()
    return host, weights, subsample, specs, sp, threads, global_batch // process_count, corpus_dir


def _bytes_per_epoch(spec: sources.SourceSpec, split: str, host: pipeline.Host, corpus_dir: str) -> int | None:
    """Bytes this host reads per epoch of a source whose shard sizes are recorded (corpus manifest or
    pretokenized index), else None."""
    if spec.kind == "corpus":
        index, prefix = f"{corpus_dir}/manifest.json", corpus_dir
    elif spec.kind == "pretokenized":
        index, prefix = f"{spec.location}/index.json", spec.location
    else:
        return None
    import tensorflow as tf

    if not tf.io.gfile.exists(index):
        return None
    with tf.io.gfile.GFile(index) as f:
        recorded = json.load(f)
    if spec.kind == "corpus":
        recorded = recorded["sources"].get(spec.name, {})
    shards = recorded.get("splits", {}).get(split, {}).get("shards", [])
    sizes = {f"{prefix}/{s['path']}": s["bytes"] for s in shards}
    files = pipeline.list_files(spec, split)
    if len(files) >= host.count:
        return sum(sizes.get(f, 0) for f in files[host.index::host.count]) or None
    return sum(sizes.get(f, 0) for f in files) // host.count or None


def _fingerprint(config, host, weights, subsample, specs, sp, local_batch) -> str:
    """sha256 of everything that decides the stream: a saved state only restores into the same."""
    key = {"seed": config.seed, "seq_len": config.train.seq_len, "local_batch": local_batch, "host": [host.index,
           host.count], "weights": weights, "specs": {k: [v.kind, v.location, dict(v.options)] for k, v in
           specs.items()}, "tokenizer": tok.fingerprint(sp), "shuffle_buffer": config.data.shuffle_buffer,
           "max_doc_chars": config.data.get("max_doc_chars", 1 << 20)}
    if any(f < 1 for f in subsample.values()):  # absent otherwise: states saved before subsampling still restore
        key["subsample"] = subsample
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _rows_fn(config, host, sp, threads) -> Callable:
    """source_rows with this config's and host's settings bound."""
    row_len = config.train.seq_len + 1

    def rows(spec, split, index, shuffle_buffer, seed, repeat, subsample=1.0):
        return pipeline.source_rows(spec, split, index, host=host, row_len=row_len, sp=sp,
                                    max_doc_chars=config.data.get("max_doc_chars", 1 << 20), threads=threads,
                                    shuffle_buffer=shuffle_buffer, seed=seed, repeat=repeat, subsample=subsample)
    return rows


def _kept(nbytes: int | None, fraction: float) -> int | None:
    """The bytes per epoch of a subsampled source: the expected share of its recorded size."""
    return None if nbytes is None else max(1, round(nbytes * fraction))


def train_stream(config: ml_collections.ConfigDict, *, process_index: int = 0, process_count: int = 1) -> Stream:
    """The process-local training stream of `config`'s source mixture (see the module docstring)."""
    host, weights, subsample, specs, sp, threads, local_batch, corpus_dir = _setup(config, process_index,
                                                                                  process_count)
    rows = _rows_fn(config, host, sp, threads)
    seed = int(config.seed)
    per_source = []
    for i, (name, spec) in enumerate(specs.items()):
        entry = _cache_key(config, spec, "train", host, sp, seed=seed, subsample=subsample[name])
        if not stream_cache.checked(entry):
            pipeline.check_not_empty(spec, "train", rows(spec, "train", i, 0, seed, False, subsample[name]), host)
            stream_cache.mark_checked(entry)
        per_source.append(rows(spec, "train", i, config.data.shuffle_buffer, seed + 7919 * (i + 1), True,
                               subsample[name]))
    # Each host draws its own sequence of sources: the global batch mixes independent draws.
    mixed = pipeline.mix(per_source, list(weights.values()), seed * 1_000_003 + host.index)
    batches_per_call = max(1, 256 // local_batch)
    dataset = mixed.batch(local_batch * batches_per_call, drop_remainder=True).prefetch(2)
    return Stream(dataset.with_options(pipeline.options(threads)), batch=local_batch, names=list(weights), weights=list(weights.values()), row_len=config.train.seq_len + 1,
                  bos=sp.bos_id(), eos=sp.eos_id(),
                  bytes_per_epoch=[_kept(_bytes_per_epoch(spec, "train", host, corpus_dir), subsample[name])
                                   for name, spec in specs.items()],
                  fingerprint=_fingerprint(config, host, weights, subsample, specs, sp, local_batch),
                  specs=list(specs.values()), host=host)


def eval_streams(config: ml_collections.ConfigDict, *, process_index: int = 0, process_count: int = 1,
                 ) -> dict[str, EvalStream]:
    """One held-out stream per source with weight > 0: the first `train.eval_batches` batches of its
    validation split, unshuffled, identical at every evaluation."""
    host, weights, _, specs, sp, threads, local_batch, _ = _setup(config, process_index, process_count)
    rows = _rows_fn(config, host, sp, threads)
    streams = {}
    batches = config.train.eval_batches
    for i, (name, spec) in enumerate(specs.items()):
        entry = _cache_key(config, spec, "validation", host, sp, local_batch=local_batch, batches=batches)
        stored = stream_cache.load_rows(entry)
        if stored is not None:  # an earlier run of the sweep read these batches
            streams[name] = EvalStream(None, batches, sp.bos_id(), sp.eos_id(), rows=stored)
            continue
        pipeline.check_not_empty(spec, "validation", rows(spec, "validation", i, 0, 0, repeat=False), host)
        # Repeated so that a small validation split still fills eval_batches batches.
        dataset = rows(spec, "validation", i, 0, 0, repeat=True).map(lambda r: r["tokens"])
        dataset = dataset.batch(local_batch, drop_remainder=True).with_options(pipeline.options(threads))
        streams[name] = EvalStream(dataset, batches, sp.bos_id(), sp.eos_id(),
                                   on_first_pass=lambda rows, entry=entry: stream_cache.store_rows(entry, rows))
    return streams


def _cache_key(config, spec: sources.SourceSpec, split: str, host: pipeline.Host, sp, **decides) -> str | None:
    """The stream_cache key of one source's `split` on this host (None: the cache is off, or the source is a
    TFDS dataset, whose files this code does not list)."""
    if stream_cache.directory() is None or spec.kind == "tfds":
        return None
    return stream_cache.key(spec, split, pipeline.list_files(spec, split), host=[host.index, host.count],
                            row_len=config.train.seq_len + 1, tokenizer=tok.fingerprint(sp),
                            max_doc_chars=config.data.get("max_doc_chars", 1 << 20), **decides)
