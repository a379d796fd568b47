"""Train-step and loop properties: gradient accumulation is exact, the schedule is the paper's, a non-finite
step stops the run with its batch saved and the last checkpoint intact, token ids outside the vocabulary are
refused before the step, config values that cannot work are named, and the loop writes its metrics."""

import json
import os

import jax
import numpy as np
import pytest

from experiments.configs import debug
from experiments.configs.common import base_config
from llama_jax import sharding
from llama_jax.train import checkpoint, synthetic
from llama_jax.train import step as ts
from llama_jax.train.loop import NonFiniteError, train
from llama_jax.train.metrics import MetricsWriter, read_metrics
from llama_jax.train.optim import decays, learning_rate_schedule


def test_microbatches_give_the_update_of_one_large_batch():
    updated = {}
    for k in (1, 4):
        c = debug.get_config().unlock()
        c.train.microbatches = k
        c.mesh.data, c.mesh.fsdp = 2, 1  # batch 8 = 4 microbatches x 2 rows, one per data shard
        c.lock()
        mesh = sharding.make_mesh(c, jax.devices()[:2])
        state = ts.init_state(c, mesh, jax.random.PRNGKey(0))
        batch = next(synthetic.train_stream(c))
        for row in range(8):  # row j*4 + i goes to microbatch i: microbatches of 32, 24, 16 and 8 target tokens,
            batch["loss_mask"][row, :4 * (row % 4)] = 0.0  # so a mean of per-microbatch means would differ
        assert [batch["loss_mask"][i::4].sum() for i in range(4)] == [32, 24, 16, 8]
        step = ts.make_train_step(c, mesh)
        for _ in range(2):  # two steps, so that the AdamW update itself (not only its first, sign-like step) counts
            state, metrics = step(state, ts.device_batch(batch, c, mesh))
        updated[k] = (jax.device_get(state.params), jax.device_get(metrics))
    np.testing.assert_allclose(updated[4][1]["loss"], updated[1][1]["loss"], rtol=1e-6)
    np.testing.assert_allclose(updated[4][1]["grad_norm"], updated[1][1]["grad_norm"], rtol=1e-5)
    # float32 sums in another order. Adam divides each gradient element by its own magnitude, so an element whose
    # gradient is at rounding level may move by a few percent of the step's learning rate (7.5e-4 at step 1);
    # all others agree to ~1e-6.
    difference = np.concatenate([np.abs(a - b).ravel() for a, b in
                                 zip(jax.tree.leaves(updated[4][0]), jax.tree.leaves(updated[1][0]), strict=True)])
    assert difference.max() < 0.05 * 3e-3 / 4 and np.mean(difference < 2e-6) > 0.999


def test_learning_rate_follows_warmup_then_cosine_to_ten_percent():
    c = base_config("llama_7b")
    c.train.steps = 10_000
    lr = learning_rate_schedule(c)
    peak = 3e-4
    assert lr(0) == 0.0
    np.testing.assert_allclose(lr(1000), peak / 2, rtol=1e-6)  # linear warmup
    np.testing.assert_allclose(lr(2000), peak, rtol=1e-6)  # end of the 2000 warmup steps
    np.testing.assert_allclose(lr(6000), 0.1 * peak + 0.9 * peak / 2, rtol=1e-5)  # half way down the cosine
    np.testing.assert_allclose(lr(10_000), 0.1 * peak, rtol=1e-6)  # 10% of the peak at the end


def test_weight_decay_skips_embeddings_and_norms_by_default():
    c = debug.get_config()
    params = ts.abstract_state(c, sharding.make_mesh(c)).params
    decayed = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(params) if decays(p, c)}
    assert "['output']" in decayed and "['layers']['feed_forward']['w1']" in decayed
    assert "['tok_embeddings']" not in decayed and "['norm']['weight']" not in decayed
    assert "['layers']['attention_norm']['weight']" not in decayed


def test_non_finite_loss_stops_with_the_batch_saved_and_the_checkpoint_intact(tmp_path, monkeypatch):
    c = debug.get_config()  # checkpoints every 5 steps
    clean_batch = synthetic.SyntheticStream.batch

    def corrupt_seventh_batch(stream, index):
        batch = clean_batch(stream, index)
        if index == 6:
            batch["loss_mask"][0, 3] = np.nan  # the loss sum, and so the loss and every gradient, become NaN
        return batch

    monkeypatch.setattr(synthetic.SyntheticStream, "batch", corrupt_seventh_batch)
    with pytest.raises(NonFiniteError, match=r"^step 7: loss=nan"):
        train(c, str(tmp_path))
    assert (tmp_path / "debug" / "step_7_process_0.npz").exists()
    assert (tmp_path / "debug" / "step_7_process_0.json").exists()
    manager = checkpoint.manager(str(tmp_path), c)
    assert manager.all_steps() == [5]  # the good checkpoint, and nothing after the bad step
    state, _ = checkpoint.restore_latest(manager, c, ts.abstract_state(c, sharding.make_mesh(c)))
    assert int(state.step) == 5


@pytest.mark.parametrize("key,token", [("inputs", 256), ("targets", -1)])
def test_token_ids_outside_the_vocabulary_stop_the_run_before_the_step(tmp_path, monkeypatch, key, token):
    """Inside the jitted step an id past the embedding table would read no row and turn the loss into NaN; the
    loop checks each batch first and names the tokenizer/model mismatch. The step-5 checkpoint stays the last."""
    c = debug.get_config()  # vocab_size 256, checkpoints every 5 steps
    clean_batch = synthetic.SyntheticStream.batch

    def seventh_batch_from_another_tokenizer(stream, index):
        batch = clean_batch(stream, index)
        if index == 6:  # inputs and targets are views of one row: the first input and the last target are not shared
            batch[key][1, 0 if key == "inputs" else -1] = token
        return batch

    monkeypatch.setattr(synthetic.SyntheticStream, "batch", seventh_batch_from_another_tokenizer)
    with pytest.raises(ValueError, match=rf"^step 7: the data stream gave token id {token} in '{key}', outside the "
                                         r"model's vocabulary \[0, 256\) \(model.vocab_size\): the tokenizer and the "
                                         "model do not match"):
        train(c, str(tmp_path))
    assert checkpoint.manager(str(tmp_path), c).all_steps() == [5]
    assert max(r["step"] for r in read_metrics(str(tmp_path)) if "loss" in r) == 6


@pytest.mark.parametrize("field,value,message", [
    ("mesh.rules", (("batch", "fsdp"), ("embed", "model")), r"mesh.rules maps 'embed' onto \['model'\], which are "
                                                             r"not mesh axes"),
    ("train.seq_len", 128, r"train.seq_len=128 exceeds model.max_seq_len=64"),
    ("train.microbatches", 3, r"global_batch_size=8 is not divisible by the data-parallel size 8 .* times "
                              r"train.microbatches=3"),
    ("optimizer.warmup_steps", 16, r"train.steps=16 must exceed optimizer.warmup_steps=16"),
    ("data.source", "c4", r"data.source='c4' is not 'mixture' or 'synthetic'"),
])
def test_config_values_that_cannot_work_are_named(tmp_path, field, value, message):
    c = debug.get_config().unlock()
    section, name = field.split(".")
    c[section][name] = value
    with pytest.raises(ValueError, match=message):
        train(c.lock(), str(tmp_path))
    assert not os.path.exists(tmp_path / "metrics.jsonl")


def test_metrics_file_and_loss_curve(tmp_path):
    c = debug.get_config()  # 16 steps of [8, 16] tokens, logged every step, evaluated every 8
    final = train(c, str(tmp_path))
    records = read_metrics(str(tmp_path))
    train_records = [r for r in records if "loss" in r]
    assert [r["step"] for r in train_records] == list(range(1, 17))
    for key in ("lr", "grad_norm", "tokens_seen", "tokens_per_s", "step_time_s", "data_wait_fraction"):
        assert key in train_records[0]
    assert train_records[-1]["tokens_seen"] == 16 * 8 * 16
    assert train_records[0]["mfu"] is None  # no peak FLOP/s for CPUs
    assert [r["step"] for r in records if "eval/synthetic/loss" in r] == [8, 16]
    assert final["loss"] == train_records[-1]["loss"]
    assert (tmp_path / "loss.png").stat().st_size > 0
    assert any(name.startswith("events") for name in os.listdir(tmp_path / "tensorboard"))
    # where the process's wall time went: one line, its parts adding up to its total
    (timing,) = [json.loads(line) for line in (tmp_path / "timing.jsonl").read_text().splitlines()]
    assert (timing["first_step"], timing["last_step"]) == (0, 16)
    parts = {k: v for k, v in timing.items() if k.endswith("_s") and k != "total_s"}
    assert {"start_s", "setup_s", "compile_s", "steps_s", "data_wait_s", "eval_s", "checkpoint_s", "plot_s",
            "other_s"} == set(parts)
    assert all(v >= 0 for v in parts.values()) and min(timing["steps_s"], timing["eval_s"], timing["compile_s"]) > 0
    assert sum(parts.values()) == pytest.approx(timing["total_s"])


def test_a_resumed_run_drops_what_the_killed_run_logged_after_the_checkpoint(tmp_path):
    """Records past the resumed step, and a line cut short by SIGKILL, are dropped; the rest is kept."""
    lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 4, "lo')
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [1, 2, 3]
    MetricsWriter(str(tmp_path), enabled=True, start_step=2).close()
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [1, 2]


def test_an_object_store_workdir_gets_its_metrics_rewritten_not_appended(tmp_path, monkeypatch):
    """gs:// cannot append: there each logged step rewrites metrics.jsonl through etils.epath, with the same
    lines a local, appended file gets (what collect and the pod launcher's --status read)."""
    from llama_jax.train import metrics

    assert not MetricsWriter("gs://bucket/sweep/run", enabled=False).appendable
    assert MetricsWriter(str(tmp_path), enabled=False).appendable
    local = MetricsWriter(str(tmp_path / "local"), enabled=True)
    for step in (1, 2, 3):
        local.write(step, {"loss": 1.0 / step})
    local.close()

    def no_append(path, mode="r", *args, **kwargs):
        assert "a" not in mode, f"appended to {path}"
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(metrics, "open", no_append, raising=False)
    store = MetricsWriter(str(tmp_path / "store"), enabled=True)
    store.appendable = False  # as for gs://, on a local directory
    for step in (1, 2, 3):
        store.write(step, {"loss": 1.0 / step})
    store.close()
    assert (tmp_path / "store" / "metrics.jsonl").read_text() == (tmp_path / "local" / "metrics.jsonl").read_text()
