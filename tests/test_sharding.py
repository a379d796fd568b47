"""Sharding properties: every mesh computes the same training steps; shardings follow the rules; bad shapes fail clearly."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from experiments.configs.common import base_config
from llama_jax import sharding
from llama_jax.train import step as ts
from llama_jax.train import synthetic

STEPS = 3


def debug_config(**mesh):
    c = base_config("debug")
    c.train.steps = 10
    c.train.seq_len = 16
    c.train.global_batch_size = 8
    c.optimizer.warmup_steps = 2
    c.data.source = "synthetic"
    for axis, size in mesh.items():
        c.mesh[axis] = size
    return c


def run_steps(config, devices=None, steps=STEPS) -> list[float]:
    """Losses of `steps` steps on the synthetic stream, on a mesh over `devices`."""
    mesh = sharding.make_mesh(config, devices)
    step = ts.make_train_step(config, mesh)
    state = ts.init_state(config, mesh, jax.random.PRNGKey(config.seed))
    stream = synthetic.train_stream(config)
    losses = []
    for _ in range(steps):
        state, metrics = step(state, ts.device_batch(next(stream), config, mesh))
        losses.append(float(metrics["loss"]))
    return losses


@pytest.fixture(scope="module")
def reference_losses():
    return run_steps(debug_config(data=1, fsdp=1), jax.devices()[:1])


@pytest.mark.parametrize(
    "mesh,n_devices",
    [
        (dict(data=8, fsdp=1), 8),  # 8x1x1x1: pure data parallel
        (dict(data=2, fsdp=2, tensor=2), 8),  # 2x2x1x2
        (dict(data=1, fsdp=2, tensor=4), 8),  # 1x2x1x4
        (dict(data=1, fsdp=2, sequence=2, tensor=1), 4),  # sequence parallel
        (dict(data=1, fsdp=-1), 2),
    ],
)
def test_every_mesh_gives_the_one_device_losses(mesh, n_devices, reference_losses):
    losses = run_steps(debug_config(**mesh), jax.devices()[:n_devices])
    np.testing.assert_allclose(losses, reference_losses, rtol=2e-5)
    assert losses[-1] < losses[0]


def test_param_and_optimizer_shardings_follow_the_rules():
    config = debug_config(data=2, fsdp=2, tensor=2)
    mesh = sharding.make_mesh(config)
    state = ts.abstract_state(config, mesh)
    layers = state.params["layers"]
    fsdp = ("fsdp", "sequence")
    assert layers["attention"]["wq"].sharding.spec == PartitionSpec(None, fsdp, "tensor", None)
    assert layers["attention"]["wo"].sharding.spec == PartitionSpec(None, "tensor", None, fsdp)
    assert layers["feed_forward"]["w1"].sharding.spec == PartitionSpec(None, fsdp, "tensor")
    assert layers["feed_forward"]["w2"].sharding.spec == PartitionSpec(None, "tensor", fsdp)
    assert layers["attention_norm"]["weight"].sharding.spec == PartitionSpec(None, None)
    assert state.params["tok_embeddings"].sharding.spec == PartitionSpec("tensor", fsdp)
    assert state.params["output"].sharding.spec == PartitionSpec(fsdp, "tensor")
    # AdamW's moments are sharded exactly like their parameters; its step counters are replicated.
    adam = state.opt_state[1][0]
    for moments in (adam.mu, adam.nu):
        assert jax.tree.map(lambda m: m.sharding, moments) == jax.tree.map(lambda p: p.sharding, state.params)
    assert adam.count.sharding.spec == PartitionSpec()
    batch = ts.abstract_batch(config, mesh)
    assert batch["inputs"].sharding.spec == PartitionSpec(("data", "fsdp"), "sequence")


def test_activations_are_sharded_in_the_compiled_step():
    """The model's logical constraints reach the compiled program (they are silently dropped without a mesh)."""
    config = debug_config(data=2, fsdp=2, tensor=2)
    mesh = sharding.make_mesh(config)
    lowered = ts.make_train_step(config, mesh).lower(ts.abstract_state(config, mesh), ts.abstract_batch(config, mesh))
    text = lowered.as_text()
    # [batch, length, embed] activations: batch over data+fsdp; [batch, length, mlp]: mlp over tensor.
    assert "sdy.sharding_constraint %" in text
    assert '[{"data", "fsdp"}, {"sequence"}, {}]> : tensor<8x16x64xf32>' in text
    assert '[{"data", "fsdp"}, {"sequence"}, {"tensor"}]> : tensor<8x16x192xf32>' in text


def test_mesh_of_the_wrong_size_is_an_error():
    with pytest.raises(ValueError, match="has 6 devices per slice but there are 8"):
        sharding.make_mesh(debug_config(data=3, fsdp=2))
    with pytest.raises(ValueError, match="cannot fill 8 devices"):
        sharding.make_mesh(debug_config(data=3, fsdp=-1))


def test_batch_not_divisible_by_data_parallel_size_is_an_error():
    config = debug_config(data=8, fsdp=1)
    config.train.global_batch_size = 12
    with pytest.raises(ValueError, match="global_batch_size=12 is not divisible by the data-parallel size 8"):
        ts.make_train_step(config, sharding.make_mesh(config))


def test_sequence_not_divisible_by_the_sequence_axis_is_an_error():
    config = debug_config(data=1, fsdp=2, sequence=4)
    config.train.seq_len = 18
    with pytest.raises(ValueError, match="seq_len=18 is not divisible by the 4 shards of mesh axes sequence"):
        ts.abstract_batch(config, sharding.make_mesh(config))


def test_dimension_not_divisible_by_its_axis_is_an_error():
    config = debug_config(data=1, fsdp=1, tensor=8)  # debug has 4 heads
    with pytest.raises(ValueError, match=r"\['layers'\]\['attention'\]\['wk'\].*dimension 2 \(size 4\).*tensor"):
        ts.abstract_state(config, sharding.make_mesh(config))


def test_logical_name_without_rule_is_an_error():
    config = debug_config()
    config.mesh.rules = tuple(rule for rule in config.mesh.rules if rule[0] != "mlp")
    with pytest.raises(ValueError, match=r"\['mlp'\] have no rule"):
        ts.abstract_state(config, sharding.make_mesh(config))


def test_multi_slice_mesh_splits_data_parallelism_across_slices():
    """dcn_data=2 over 8 devices: two slices of 4; -1 fills each slice; the hybrid mesh keeps the axis names."""
    config = debug_config(data=1, fsdp=-1, dcn_data=2)
    assert sharding.mesh_shape(config, 8) == ((1, 4, 1, 1), (2, 1, 1, 1))
    with pytest.raises(ValueError, match="dcn_data \\* mesh.dcn_fsdp = 3 does not divide the 8 devices"):
        sharding.mesh_shape(debug_config(dcn_data=3), 8)
