"""The benchmark runs the real training step and reports self-consistent figures (CPU smoke test)."""

import json
import runpy
from pathlib import Path

import pytest

from llama_jax.perf import decode_bench as bench_decode
from llama_jax.perf import flops
from llama_jax.perf import train_bench as bench
from llama_jax.train.step import model_config

SMALL = {"train.global_batch_size": 8, "train.seq_len": 64}
SUITE = [
    ("check_fast", "debug", {**SMALL, "train.document_mask": False}, "run"),
    ("debug_fit", "debug", SMALL, "fit"),
    ("bad_batch", "debug", {"train.global_batch_size": 3}, "run"),
    ("decode", "debug", {"decode.batch": 2, "decode.prompt_len": 8, "decode.new_tokens": 8}, "decode"),
]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "results.jsonl"
    # No time budget: on a loaded machine a budget would skip the last entries and the test would depend on timing.
    return out, bench.run_suite(SUITE, steps=2, warmup=1, out=str(out), budget_s=float("inf"))


@pytest.fixture(scope="module")
def result(suite):
    return bench.preset_config("debug", **SMALL), suite[1][0]


def test_figures_are_consistent(result):
    config, r = result
    assert r["devices"] == 8  # tests/conftest.py: 8 fake CPU devices, all used by the default mesh
    assert r["tokens_per_s_per_device"] == pytest.approx(8 * 64 / r["step_s"] / 8)  # SMALL: 8 rows of 64 tokens
    # By hand for the debug preset (dim 64, 2 layers, 4 heads of 16, SwiGLU 192, vocab 256) at 64 positions:
    # per layer 4 x 64^2 + 3 x 64 x 192 = 53,248 matmul weights; 2 layers and the 64 x 256 output: 122,880;
    # 6 x 122,880 = 737,280 plus causal attention 6 x 2 layers x 64 x 4 x 16 = 49,152: 786,432 FLOPs per token.
    per_token = 786_432
    assert flops.train_flops_per_token(model_config(config), config.train.seq_len) == per_token
    assert r["model_tflops_per_device"] == pytest.approx(r["tokens_per_s_per_device"] * per_token / 1e12)
    # 2 x 256 x 64 tables + 2 x (53,248 + 2 x 64 norms) + 64 final norm
    assert r["params"] == 139_584
    assert r["mfu"] is None  # a CPU has no dense bf16 peak to compare with
    assert len(r["losses"]) == 3 and all(loss > 0 for loss in r["losses"])
    assert r["dtype"] == "bfloat16" and r["remat"] == "save_linear" and r["attention"] == "xla"


def test_result_is_one_json_line_and_one_readable_line(result):
    _, r = result
    assert json.loads(json.dumps(r)) == r
    line = bench.format_result(r)
    assert "\n" not in line and "tokens/s/device" in line and "MFU" not in line


def test_preset_names_become_the_preset_config_file():
    argv = bench.expand_preset_argv(["bench", "--config=llama_65b", "--config.train.steps=3"])
    assert argv == ["bench", f"--config={bench.PRESET_CONFIG}:llama_65b", "--config.train.steps=3"]
    assert bench.expand_preset_argv(["bench", "--config=experiments/configs/tiny.py"])[1].endswith("tiny.py")


def test_overrides_reach_the_config_and_typos_fail():
    config = bench.preset_config("llama_1b", **{"model.attention_impl": "cudnn", "train.global_batch_size": 8})
    assert config.model.attention_impl == "cudnn" and config.train.global_batch_size == 8
    assert config.train.seq_len == 2048 and config.data.source == "synthetic"
    with pytest.raises(KeyError, match="global_batch_size"):
        bench.preset_config("llama_1b", **{"train.global_batch": 8})


def test_suite_records_every_entry_and_keeps_going_after_an_error(suite):
    out, results = suite
    assert [json.loads(line)["name"] for line in out.read_text().splitlines()] == [name for name, *_ in SUITE]
    assert results[1]["planned_memory_gib"] > 0 and results[1]["limit_gib"] is None  # a CPU states no limit
    assert "not divisible" in results[2]["error"]


def test_table_script_prints_the_runs(suite, capsys):
    out, _ = suite
    runpy.run_path(str(Path(bench.PRESET_CONFIG).parents[1] / "table.py"), run_name="table")["main"](str(out))
    table = capsys.readouterr().out
    assert "| check_fast | debug | xla | save_linear | 8 x 64 |" in table and "bad_batch:" in table
    assert "| decode | debug | float32 / bfloat16 | 2 | 8 + 8 |" in table  # the paper recipe: bf16 compute


def test_loss_difference_is_relative_and_needs_equal_lengths():
    assert bench.loss_difference({"losses": [2.0, 1.01]}, {"losses": [2.0, 1.0]}) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="same --steps"):
        bench.loss_difference({"losses": [1.0]}, {"losses": [1.0, 1.0]})


def test_a_spent_time_budget_skips_the_remaining_entries():
    results = bench.run_suite(SUITE, steps=2, warmup=1, out=None, budget_s=-1.0)  # spent before the first entry
    assert [r["name"] for r in results] == [name for name, *_ in SUITE]
    assert all(r["skipped"] == "time budget of -1 s spent" for r in results)


def test_decode_figures_are_consistent_and_the_bound_needs_a_bandwidth(suite):
    r = suite[1][-1]
    assert r["decode_tokens_per_s"] == pytest.approx(r["batch"] / r["decode_step_s"])  # every row decodes each step
    assert r["ttft_s"] > 0 and r["prefill_tokens_per_s"] == pytest.approx(r["batch"] * r["prompt_len"] / r["ttft_s"])
    params, cache = flops.decode_bytes_per_step(model_config(bench.preset_config("debug")), 2, 8 + 8 / 2)
    assert (r["param_gb_per_step"], r["cache_gb_per_step"]) == pytest.approx((params / 1e9, cache / 1e9))
    assert r["bound_tokens_per_s"] is None and "bound: n/a" in bench_decode.format_decode(r)  # a CPU
    h100 = dict(r, hbm_bandwidth_gb_per_s=3350.0, bound_tokens_per_s=2 * 3.35e12 / (params + cache), fraction_of_bound=0.5)
    assert "50% of it" in bench_decode.format_decode(h100)


def test_decode_bytes_count_weights_once_and_the_cache_per_row():
    config = model_config(bench.preset_config("llama_7b"))  # bfloat16 compute over float32 weights
    params, cache = flops.decode_bytes_per_step(config, batch=4, context=1000)
    assert params == 4 * flops.matmul_params(config)
    assert cache == 2 * 32 * 32 * 128 * 2 * 4 * 1000  # keys and values, layers, heads, head_dim, bf16, rows, positions
    assert flops.hbm_bandwidth("NVIDIA H100 80GB HBM3") == 3.35e12 and flops.hbm_bandwidth("NVIDIA H100 PCIe") == 2.0e12
    assert flops.hbm_bandwidth("TPU v5 lite") == 819e9 and flops.hbm_bandwidth("cpu") is None
