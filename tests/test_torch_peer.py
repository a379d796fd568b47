"""The side-by-side benchmark against PyTorch (benchmarks/torch_peer.py) runs both systems on the same work: two
tiny rounds of the real command, and its bookkeeping. No timing is asserted."""

import json
import os
import runpy
import subprocess
import sys

import pytest
from helpers import ROOT

from experiments.configs import debug
from llama_jax import cli
from llama_jax.perf.info import describe
from llama_jax.train.step import model_config

PEER = runpy.run_path(os.path.join(ROOT, "benchmarks", "torch_peer.py"), run_name="torch_peer")


@pytest.fixture(scope="module")
def smoke():
    """The command on the debug config: train and eval, torch eager, two rounds of one step, one thread."""
    command = [sys.executable, "-m", "benchmarks.torch_peer", "--config=experiments/configs/debug.py",
               "--parts=train,eval", "--peers=eager", "--rounds=2", "--steps=1", "--warmup=1", "--threads=1"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


def test_the_command_prints_rounds_ratios_and_one_json_line(smoke):
    record = json.loads(smoke[-1])
    assert [p["part"] for p in record["parts"]] == ["train", "eval"]
    assert record["threads"] == 1 and record["batch"] == [8, 16] and record["model"]["dtype"] == "float32"
    # the record names what ran: the config argument and the model's shape, not only the preset it started from
    assert record["config"].endswith("experiments/configs/debug.py")
    model = model_config(debug.get_config())
    shape = record["shape"]
    assert (shape["dim"], shape["n_layers"], shape["vocab_size"]) == (model.dim, model.n_layers, model.vocab_size)
    assert shape["non_embedding_params"] == describe(model)["non_embedding_params"] > 0  # the project's one count
    for part in record["parts"]:
        assert set(part["tokens_per_s"]) == {"ours", "torch_eager"}
        ratio = part["ratio"]["torch_eager"]
        assert len(ratio["rounds"]) == 2 and ratio["min"] <= ratio["median"] <= ratio["max"]
    assert sum(line.startswith(("train round", "eval round")) for line in smoke) == 4
    assert set(record["matmul_peak"]) == {"xla_gflop_per_s", "torch_gflop_per_s"}
    for part in record["parts"]:  # achieved GFLOP/s from the tokens/s, below the large matmul's
        assert set(part["gflop_per_s"]) == {"ours", "torch_eager"} and all(0 < v for v in part["gflop_per_s"].values())
        assert part["share_of_peak"]["ours"] == pytest.approx(part["gflop_per_s"]["ours"]
                                                              / max(record["matmul_peak"].values()))
    assert any("ours/torch_eager: median" in line for line in smoke)


def test_torch_trains_the_same_model_from_the_same_weights(smoke):
    # Same config, initial weights, batches, AdamW, schedule and clipping: the losses of the 3 steps agree.
    losses = json.loads(smoke[-1])["parts"][0]["losses"]
    assert losses["torch_eager_max_relative_difference"] < 1e-5 and losses["ours_last"] > 0


def test_rounds_alternate_the_order_of_the_systems():
    calls = []
    systems = {name: (lambda name=name: calls.append(name) or 1.0) for name in ("ours", "a", "b")}
    seconds, cpu = PEER["alternate"](systems, 3, lambda r, s: None)
    assert calls == ["ours", "a", "b", "a", "b", "ours", "b", "ours", "a"]
    assert seconds == {"ours": [1.0] * 3, "a": [1.0] * 3, "b": [1.0] * 3}
    assert set(cpu) == set(seconds) and all(len(v) == 3 for v in cpu.values())


def test_the_ratio_is_taken_within_each_round():
    result = PEER["summarise"]("train", 100, {"ours": [1.0, 2.0, 4.0], "torch_eager": [2.0, 2.0, 2.0]})
    assert result["tokens_per_s"]["ours"]["rounds"] == [100.0, 50.0, 25.0]
    assert result["ratio"]["torch_eager"]["rounds"] == [2.0, 1.0, 0.5]
    assert result["ratio"]["torch_eager"]["median"] == 1.0
    per_cpu = PEER["summarise"]("train", 100, {"ours": [1.0], "p": [1.0]}, {"ours": [1.0], "p": [4.0]})
    assert per_cpu["ratio"]["p"]["median"] == 1.0 and per_cpu["cpu_ratio"]["p"]["median"] == 4.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(parts=["train", "backward"]), "choose parts from"),
    (dict(peers=["jit"]), "peers from"),
    (dict(rounds=0), "--rounds=0"),
    (dict(warmup=0), "at least 1"),
])
def test_bad_choices_are_named_before_anything_starts(kwargs, message):
    settings = dict(parts=["train"], peers=["eager"], rounds=1, steps=1, warmup=1) | kwargs
    with pytest.raises(cli.UsageError, match=message):
        PEER["check_settings"](**settings)


def test_variants_change_the_named_fields_with_their_types():
    from experiments.configs import debug

    config = PEER["variant_config"](debug.get_config(), "model.linear_tokens=batch_length,model.scan_unroll=1,"
                                                        "train.document_mask=False")
    assert (config.model.linear_tokens, config.model.scan_unroll, config.train.document_mask) == ("batch_length", 1, False)
    with pytest.raises(cli.UsageError, match="model.scan_unrol=1"):
        PEER["variant_config"](debug.get_config(), "model.scan_unrol=1")
