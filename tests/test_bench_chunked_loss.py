"""The chunked cross-entropy is the plain one, computed with a fraction of the float32 logits in memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs.common import base_config
from llama_jax.model import loss
from llama_jax.model.llama import init_params
from llama_jax.train import step as train_step
from llama_jax.train.synthetic import SyntheticStream


def test_chunked_equals_plain_cross_entropy_with_gradients():
    kh, ko, kt = jax.random.split(jax.random.key(0), 3)
    hidden = jax.random.normal(kh, (2, 32, 16))
    output = jax.random.normal(ko, (16, 50))
    targets = jax.random.randint(kt, (2, 32), 0, 50)
    mask = jnp.ones((2, 32)).at[1, 20:].set(0.0)

    def plain(h, w):
        return loss.cross_entropy(jnp.einsum("btd,dv->btv", h, w), targets, mask)[0]

    def chunked(h, w):
        return loss.chunked_cross_entropy(h, w, targets, mask, chunk=8)[0]

    np.testing.assert_allclose(jax.jit(chunked)(hidden, output), jax.jit(plain)(hidden, output), rtol=1e-6)
    grads = [jax.jit(jax.grad(f, (0, 1)))(hidden, output) for f in (chunked, plain)]
    for g_chunked, g_plain in zip(*grads, strict=True):
        np.testing.assert_allclose(g_chunked, g_plain, atol=1e-5)
    assert loss.chunked_cross_entropy(hidden, output, targets, mask, chunk=8)[1] == 52.0


def test_chunk_must_divide_the_sequence():
    with pytest.raises(ValueError, match="does not divide the sequence length 32"):
        loss.chunked_cross_entropy(jnp.zeros((1, 32, 4)), jnp.zeros((4, 8)), jnp.zeros((1, 32), jnp.int32), jnp.ones((1, 32)), 5)


def _loss_and_grad(chunk: int):
    """(loss, grads, compiled temporary bytes) of the train-step loss on the tiny preset with `loss_chunk_size=chunk`."""
    config = base_config("tiny")
    config.train.seq_len, config.train.global_batch_size, config.train.loss_chunk_size = 256, 4, chunk
    config.model.n_layers = 1  # the loss is the subject; one block keeps the compile short
    params = jax.tree.map(lambda x: x.unbox() if hasattr(x, "unbox") else x,
                          init_params(train_step.model_config(config), jax.random.key(0)),
                          is_leaf=lambda x: hasattr(x, "unbox"))
    batch = next(SyntheticStream(config))
    fn = jax.jit(jax.value_and_grad(lambda p, b: train_step.loss_fn(config)(p, b)[0]))
    (value, grads) = fn(params, batch)
    return value, grads, fn.lower(params, batch).compile().memory_analysis().temp_size_in_bytes


def test_train_step_loss_with_chunks_matches_and_needs_less_memory():
    plain_loss, plain_grads, plain_bytes = _loss_and_grad(0)
    chunked_loss, chunked_grads, chunked_bytes = _loss_and_grad(32)
    np.testing.assert_allclose(chunked_loss, plain_loss, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(chunked_grads), jax.tree.leaves(plain_grads), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # Unchunked, float32 logits of 4 x 256 x 8192 x 4 bytes = 32 MiB are alive; chunked, an eighth of them.
    assert chunked_bytes < plain_bytes - 0.75 * 32 * 2**20
