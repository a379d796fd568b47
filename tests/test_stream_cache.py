"""What a sweep's runs share of their streams (data_pipeline.stream_cache): with the cache on, a second run gets
the same held-out batches and the same training stream as with it off, without reading a validation split or
checking a source again; a changed corpus file or another batch shape is a miss; the cache is off unless the
environment names it, and the local sweep launcher names it (with JAX's compilation cache) for its runs."""

import os
import shutil

import numpy as np
import pytest
from test_data import assert_same_batches, make_config, take

from data_pipeline import stream_cache
from data_pipeline import tfdata_graph as pipeline
from llama_jax.corpus_spec import SOURCE_NAMES


@pytest.fixture
def corpus(small_corpus, tmp_path) -> str:
    """A copy of the test corpus whose files this test may touch."""
    return str(shutil.copytree(small_corpus, tmp_path / "corpus"))


@pytest.fixture
def cache(tmp_path, monkeypatch) -> str:
    directory = str(tmp_path / "stream_cache")
    monkeypatch.setenv(stream_cache.CACHE_ENV, directory)
    return directory


@pytest.fixture
def counted(monkeypatch) -> dict[str, int]:
    """How many times each split was checked for a full row (pipeline.check_not_empty)."""
    calls = {"train": 0, "validation": 0}
    original = pipeline.check_not_empty

    def check(spec, split, rows, host):
        calls[split] += 1
        return original(spec, split, rows, host)

    monkeypatch.setattr(pipeline, "check_not_empty", check)
    return calls


def held_out(config) -> dict[str, list]:
    import data_pipeline

    return {name: list(stream) for name, stream in data_pipeline.eval_streams(config).items()}


def test_an_evaluation_that_stops_after_the_last_batch_still_keeps_and_caches_the_pass(corpus, cache, monkeypatch):
    import data_pipeline

    config = make_config(corpus)
    streams = data_pipeline.eval_streams(config)
    first = {name: [batch for _, batch in zip(range(config.train.eval_batches), stream, strict=False)]
             for name, stream in streams.items()}  # heldout.evaluate's way: the generators are never resumed
    assert len(os.listdir(cache)) == len(SOURCE_NAMES)  # stored for the sweep's next run

    def unread(*args, **kwargs):
        raise AssertionError("a held-out split was read again")

    monkeypatch.setattr(pipeline, "source_rows", unread)
    for name, stream in streams.items():  # this run's next evaluation reads memory, the next run the cache
        assert_same_batches(list(stream), first[name])
    for name, stream in data_pipeline.eval_streams(config).items():
        assert_same_batches(list(stream), first[name])


def test_a_second_run_reads_its_held_out_batches_from_the_cache_unchanged(corpus, cache, counted, monkeypatch):
    config = make_config(corpus)
    first = held_out(config)  # reads the validation splits and writes them
    assert counted["validation"] == len(SOURCE_NAMES)
    assert len(os.listdir(cache)) == len(SOURCE_NAMES)

    def unread(*args, **kwargs):
        raise AssertionError("a cached held-out split was read again")

    monkeypatch.setattr(pipeline, "source_rows", unread)
    second = held_out(config)
    assert counted["validation"] == len(SOURCE_NAMES)  # not checked again either
    for name in SOURCE_NAMES:
        assert_same_batches(second[name], first[name])
        assert not second[name][0]["inputs"].flags.writeable
    monkeypatch.undo()
    monkeypatch.delenv(stream_cache.CACHE_ENV, raising=False)
    uncached = held_out(config)
    for name in SOURCE_NAMES:
        assert_same_batches(second[name], uncached[name])


def test_a_changed_file_or_batch_shape_is_a_miss(corpus, cache, counted):
    held_out(make_config(corpus))
    validation = sorted(p for p in os.listdir(f"{corpus}/books") if p.startswith("validation"))[0]
    stat = os.stat(f"{corpus}/books/{validation}")
    os.utime(f"{corpus}/books/{validation}", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    held_out(make_config(corpus))
    assert counted["validation"] == len(SOURCE_NAMES) + 1  # only the changed source is read again
    config = make_config(corpus)
    config.train.eval_batches = 3
    assert [len(batches) for batches in held_out(config).values()] == [3] * len(SOURCE_NAMES)
    assert counted["validation"] == 2 * len(SOURCE_NAMES) + 1


def test_a_second_training_stream_skips_the_source_checks_and_is_the_same(corpus, cache, counted):
    import data_pipeline

    first = take(data_pipeline.train_stream(make_config(corpus)), 3)
    assert counted["train"] == len(SOURCE_NAMES)
    second = take(data_pipeline.train_stream(make_config(corpus)), 3)
    assert counted["train"] == len(SOURCE_NAMES)
    assert_same_batches(second, first)
    other_seed = make_config(corpus)
    other_seed.seed = 1
    data_pipeline.train_stream(other_seed)
    assert counted["train"] == 2 * len(SOURCE_NAMES)


def test_the_cache_is_off_unless_the_environment_names_it(corpus, counted, monkeypatch, tmp_path):
    monkeypatch.delenv(stream_cache.CACHE_ENV, raising=False)
    config = make_config(corpus)
    held_out(config)
    held_out(config)
    assert counted["validation"] == 2 * len(SOURCE_NAMES)
    assert stream_cache.load_rows("anything") is None


def test_an_entry_is_written_whole_and_read_back_read_only(cache):
    rows = np.arange(2 * 3 * 5, dtype=np.int32).reshape(2, 3, 5)
    stream_cache.store_rows("entry", rows)
    assert [name for name in os.listdir(cache)] == ["entry.npy"]  # no temporary left behind
    loaded = stream_cache.load_rows("entry")
    np.testing.assert_array_equal(loaded, rows)
    assert not loaded.flags.writeable
    assert not stream_cache.checked("entry")
    stream_cache.mark_checked("entry")
    assert stream_cache.checked("entry")


def test_a_local_sweep_shares_the_compilation_and_stream_caches_under_its_root(monkeypatch, tmp_path):
    from experiments import launch

    assert launch.STREAM_CACHE_ENV == stream_cache.CACHE_ENV
    for name in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", stream_cache.CACHE_ENV):
        monkeypatch.delenv(name, raising=False)
    env = launch.shared_caches(str(tmp_path / "workdirs"))
    assert env["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "workdirs" / ".cache" / "jax")
    assert env[stream_cache.CACHE_ENV] == str(tmp_path / "workdirs" / ".cache" / "stream")
    assert env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0"
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/elsewhere")  # the user's choice is kept
    assert launch.shared_caches(str(tmp_path))["JAX_COMPILATION_CACHE_DIR"] == "/elsewhere"
