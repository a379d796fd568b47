"""The automatic XLA:CPU speed settings (unrolled layer scan, one token axis in the linear layers) are chosen
for the CPU only, and they compute the training loss and its gradients of the accelerator path."""

import jax
import numpy as np
import pytest

from experiments.configs import debug
from llama_jax.config import PRESETS
from llama_jax.model.llama import init_params
from llama_jax.train import step as train_step
from llama_jax.train.synthetic import SyntheticStream

DEBUG = PRESETS["debug"]
ACCELERATOR_PATH = {"linear_tokens": "batch_length", "scan_unroll": 1}


def test_automatic_settings_are_chosen_per_platform():
    cpu = DEBUG.for_platform("cpu")
    assert (cpu.linear_tokens, cpu.scan_unroll) == ("flat", DEBUG.n_layers)
    for accelerator in ("gpu", "tpu"):
        chosen = DEBUG.for_platform(accelerator)
        assert (chosen.linear_tokens, chosen.scan_unroll) == ("batch_length", 1)
    explicit = DEBUG.replace(**ACCELERATOR_PATH).for_platform("cpu")
    assert (explicit.linear_tokens, explicit.scan_unroll) == ("batch_length", 1)
    assert DEBUG.replace(scan_unroll=1, linear_tokens="flat").for_platform("tpu").linear_tokens == "flat"


@pytest.mark.parametrize("fields, message", [(dict(scan_unroll=-1), "scan_unroll=-1"),
                                             (dict(linear_tokens="tokens"), "linear_tokens='tokens'")])
def test_bad_settings_are_named(fields, message):
    with pytest.raises(ValueError, match=message):
        DEBUG.replace(**fields)


def _packed_batch(config) -> dict:
    """A synthetic batch whose rows each hold two documents, so the document mask takes part."""
    batch = next(SyntheticStream(config))
    half = config.train.seq_len // 2
    batch["segment_ids"][:, half:] = 2
    batch["positions"][:, half:] -= half
    return batch


def _loss_and_grads(**model_fields):
    """(loss, gradients) of the training loss (document mask on) of the debug config with `model_fields`."""
    config = debug.get_config().copy_and_resolve_references()
    config.model.update(model_fields)
    params = jax.tree.map(lambda x: x.unbox(), init_params(train_step.model_config(config), jax.random.key(0)),
                          is_leaf=lambda x: hasattr(x, "unbox"))
    batch = _packed_batch(config)
    mean_loss = lambda p: (lambda total, count: total / count)(*train_step.loss_fn(config)(p, batch))  # noqa: E731
    return jax.jit(jax.value_and_grad(mean_loss))(params)


@pytest.fixture(scope="module")
def reference():
    return _loss_and_grads(**ACCELERATOR_PATH)


@pytest.mark.parametrize("fields", [
    {"linear_tokens": "flat", "scan_unroll": 1},
    {"linear_tokens": "batch_length", "scan_unroll": DEBUG.n_layers},
    {},  # automatic: both, on this CPU
    {"remat_policy": "full"},  # the unrolled loop keeps remat's recomputation apart (prevent_cse)
])
def test_cpu_settings_leave_loss_and_gradients_equal(reference, fields):
    loss, grads = _loss_and_grads(**fields)
    np.testing.assert_allclose(loss, reference[0], rtol=1e-6)
    for got, expected in zip(jax.tree.leaves(grads), jax.tree.leaves(reference[1]), strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-7, rtol=1e-5)
