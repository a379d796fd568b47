"""The benchmark runs the real training step and reports self-consistent figures (CPU smoke test)."""

import json

import pytest

from llama_jax import bench, flops
from llama_jax.train_step import model_config


@pytest.fixture(scope="module")
def result():
    config = bench.preset_config("debug", **{"train.global_batch_size": 8, "train.seq_len": 64})
    return config, bench.measure(config, steps=2, warmup=1)


def test_figures_are_consistent(result):
    config, r = result
    tokens = config.train.global_batch_size * config.train.seq_len
    assert r["devices"] == 8  # tests/conftest.py: 8 fake CPU devices, all used by the default mesh
    assert r["tokens_per_s_per_device"] == pytest.approx(tokens / r["step_s"] / r["devices"])
    per_token = flops.train_flops_per_token(model_config(config), config.train.seq_len)
    assert r["model_tflops_per_device"] == pytest.approx(r["tokens_per_s_per_device"] * per_token / 1e12)
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
