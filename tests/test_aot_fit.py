"""TPU fit as a result: XLA's out-of-memory message becomes a report that does not fit, the fit search finds the
fewest microbatches and then the least remat that fit (or says what the config needs at the least), and every
compile is cached so that a search made once costs nothing."""

import pytest

from llama_jax.perf import aot
from llama_jax.perf import train_bench as bench

pytestmark = pytest.mark.filterwarnings("ignore:Error reading persistent compilation cache entry")
V5E = aot.parse_topology("v5e:2x2")


def debug_config():
    config = bench.preset_config("debug", **{"train.global_batch_size": 8, "train.seq_len": 64})
    config.model.remat_policy = "none"  # the preset file's paper recipe says save_linear; the search starts lighter
    return config


def test_xla_out_of_memory_messages_give_the_bytes_needed():
    message = ("RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space hbm. Used "
               "63.80G of 30.75G hbm. Exceeded hbm capacity by 33.05G.\n\nTotal hbm usage >= 65.05G:\n    reserved"
               "          1.25G\n    program          63.80G\n    arguments            0B\n")
    assert aot.needed_hbm_bytes(message) == round(65.05 * 1024**3)
    assert aot.needed_hbm_bytes("RESOURCE_EXHAUSTED: Ran out of memory in memory space hbm. Used 21.90G of 7.48G "
                                "hbm.") == round(21.9 * 1024**3)
    assert aot.needed_hbm_bytes("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
                                "temporaries (119.75G) exceeds available HBM (95.74G).") == round(119.75 * 1024**3)
    assert aot.needed_hbm_bytes("RESOURCE_EXHAUSTED: Ran out of memory in memory space hbm.") == 0
    assert aot.needed_hbm_bytes("INVALID_ARGUMENT: something else") is None


def test_a_compile_that_runs_out_of_hbm_is_a_report_that_does_not_fit(monkeypatch):
    from llama_jax.train import step as train_step

    class OutOfMemory:
        def lower(self, *args):
            return self

        def compile(self):
            raise RuntimeError("RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory "
                               "space hbm. Used 120.50G of 95.74G hbm. Exceeded hbm capacity by 24.76G.\n\n"
                               "Total hbm usage >= 121.03G:\n    reserved        530.00M\n")

    monkeypatch.setattr(train_step, "make_train_step", lambda config, mesh: OutOfMemory())
    report = aot.compile_for_topology(debug_config(), V5E)
    assert not report.fits and report.total_bytes == round(121.03 * 1024**3)
    assert "DOES NOT FIT" in aot.format_report(report) and "needs at least 121.03 GiB of 16 GiB" in aot.format_report(report)
    assert report.to_dict()["fits"] is False


def test_fit_search_takes_the_fewest_microbatches_then_the_least_remat_and_caches_every_compile(tmp_path, monkeypatch):
    cache = str(tmp_path / "fit.jsonl")
    config = debug_config()
    assert aot.microbatch_choices(config, V5E) == [1, 2]  # 8 rows over 4 chips: 2 per chip
    # Forced: 1 MiB of HBM fits nothing; the answer is the lightest setting and what it needs.
    tiny_hbm = aot.fit_search(config, V5E, cache, hbm_bytes=1 << 20)
    assert not tiny_hbm.fits and (tiny_hbm.microbatches, tiny_hbm.remat) == (2, "full")
    assert tiny_hbm.total_bytes > 1 << 20
    # The chip's 16 GiB: one microbatch, and no remat at all, fit (the full-remat compile comes from the cache).
    compiled = []
    original = aot.compile_for_topology
    monkeypatch.setattr(aot, "compile_for_topology", lambda *a, **k: compiled.append(a) or original(*a, **k))
    roomy = aot.fit_search(config, V5E, cache)
    assert roomy.fits and (roomy.microbatches, roomy.remat) == (1, "none")
    assert len(compiled) == 1  # only (1, none) was new
    # Everything is cached now: the same search compiles nothing, and the token count is not part of the key.
    monkeypatch.setattr(aot, "compile_for_topology", lambda *a, **k: pytest.fail("compiled a cached setting"))
    config.train.steps = 12345
    assert aot.fit_search(config, V5E, cache) == roomy
    assert aot.fit_search(config, V5E, str(tmp_path / "empty.jsonl"), compile_missing=False) is None
