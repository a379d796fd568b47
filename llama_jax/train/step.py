"""The train state, its shardings, and the one pure, compiled `train_step(state, batch) -> (state, metrics)`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from llama_jax import sharding
from llama_jax.config import ModelConfig
from llama_jax.model.llama import LLaMA, init_params
from llama_jax.model.loss import chunked_cross_entropy, cross_entropy
from llama_jax.train.optim import learning_rate_schedule, make_optimizer

BATCH_KEYS = {
    "inputs": jnp.int32,
    "targets": jnp.int32,
    "segment_ids": jnp.int32,
    "positions": jnp.int32,
    "loss_mask": jnp.float32,
}


@flax.struct.dataclass
class TrainState:
    """Everything a step reads and writes; checkpointed whole."""

    step: jax.Array  # int32 [], optimizer steps taken
    params: Any  # float32 master weights (model.param_dtype)
    opt_state: Any  # AdamW moments, sharded like the parameters
    rng: jax.Array  # uint32 [2], the run's key (LLaMA has no dropout; kept so a checkpoint holds every random stream)


def model_config(config) -> ModelConfig:
    """The experiment config's `model` section as a ModelConfig."""
    return ModelConfig.from_dict(config.model.to_dict())


def check_batch_shape(config, mesh: Mesh) -> None:
    """Raise when the global batch or sequence does not split over the mesh and the microbatches."""
    rules = sharding.logical_rules(config)
    train = config.train
    dp = sharding.data_parallel_size(mesh, rules)
    if train.global_batch_size % (dp * train.microbatches):
        raise ValueError(
            f"train.global_batch_size={train.global_batch_size} is not divisible by the data-parallel size {dp} "
            f"({sharding.describe(mesh)}) times train.microbatches={train.microbatches}; use a multiple of "
            f"{dp * train.microbatches}"
        )
    length_axes = sharding.batch_sharding(mesh, rules).spec[1]
    if train.seq_len % sharding.axis_size(mesh, length_axes):
        raise ValueError(
            f"train.seq_len={train.seq_len} is not divisible by the {sharding.axis_size(mesh, length_axes)} shards of "
            f"mesh axes {length_axes} that 'length' maps onto ({sharding.describe(mesh)})"
        )
    if train.seq_len > config.model.max_seq_len:
        raise ValueError(f"train.seq_len={train.seq_len} exceeds model.max_seq_len={config.model.max_seq_len}")


def _initializer(config) -> Callable:
    """rng -> (parameters boxed with their logical names, fresh TrainState)."""
    cfg = model_config(config)
    tx = make_optimizer(config)

    def init(rng):
        boxed = init_params(cfg, rng, length=1)
        params = nn.meta.unbox(boxed)
        return boxed, TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), rng)

    return init


def _abstract_boxed(config):
    """(boxed abstract params, abstract TrainState, optimizer) without allocating anything."""
    boxed, state = jax.eval_shape(_initializer(config), jax.random.PRNGKey(0))
    return boxed, state, make_optimizer(config)


def state_shardings(config, mesh: Mesh) -> TrainState:
    """NamedShardings of the TrainState: params by their logical names and the rules, AdamW moments like
    their parameters, scalars replicated."""
    boxed, state, tx = _abstract_boxed(config)
    param_specs = nn.get_partition_spec(boxed)
    is_spec = lambda x: isinstance(x, PartitionSpec)  # noqa: E731
    opt_specs = optax.tree_map_params(
        tx,
        lambda _, spec: spec,
        state.opt_state,
        param_specs,
        transform_non_params=lambda _: PartitionSpec(),
        is_leaf=is_spec,
    )
    specs = TrainState(PartitionSpec(), param_specs, opt_specs, PartitionSpec())
    return sharding.named_shardings(specs, state, mesh, sharding.logical_rules(config))


def abstract_state(config, mesh: Mesh) -> TrainState:
    """ShapeDtypeStructs of the TrainState, each with its NamedSharding; nothing is allocated."""
    _, state, _ = _abstract_boxed(config)
    shardings = state_shardings(config, mesh)
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), state, shardings)


def init_state(config, mesh: Mesh, rng: jax.Array) -> TrainState:
    """A fresh TrainState from key `rng` (jax.random.PRNGKey), created directly in its shardings."""
    init = _initializer(config)
    return jax.jit(lambda key: init(key)[1], out_shardings=state_shardings(config, mesh))(rng)


def batch_shardings(config, mesh: Mesh) -> dict[str, NamedSharding]:
    return {key: sharding.batch_sharding(mesh, sharding.logical_rules(config)) for key in BATCH_KEYS}


def abstract_batch(config, mesh: Mesh) -> dict[str, jax.ShapeDtypeStruct]:
    """The global batch, each array [global_batch_size, seq_len] with its sharding."""
    check_batch_shape(config, mesh)
    shape = (config.train.global_batch_size, config.train.seq_len)
    shardings = batch_shardings(config, mesh)
    return {key: jax.ShapeDtypeStruct(shape, dtype, sharding=shardings[key]) for key, dtype in BATCH_KEYS.items()}


def activation_sharding(config, mesh: Mesh):
    """The model's activation constraints bound to `mesh` by config.mesh.rules (`sharding.activation_rules`)."""
    return sharding.activation_rules(mesh, sharding.logical_rules(config))


def loss_fn(config) -> Callable:
    """(params, batch) -> ((sum of token losses, number of target tokens), ...) for one (micro)batch."""
    model = LLaMA(model_config(config))

    def loss(params, batch):
        # train.document_mask=False: plain causal attention across packed documents, as the reference code trains
        # (and cuDNN's fastest path: no mask tensor).
        segment_ids = batch["segment_ids"] if config.train.document_mask else None
        if config.train.loss_chunk_size:  # float32 logits for a chunk of positions at a time (llama_jax.model.loss)
            hidden = model.apply(
                {"params": params},
                batch["inputs"],
                positions=batch["positions"],
                segment_ids=segment_ids,
                return_hidden=True,
            )
            return chunked_cross_entropy(
                hidden, params["output"], batch["targets"], batch["loss_mask"], config.train.loss_chunk_size
            )
        logits = model.apply(
            {"params": params}, batch["inputs"], positions=batch["positions"], segment_ids=segment_ids
        )
        return cross_entropy(logits, batch["targets"], batch["loss_mask"])

    return loss


def sum_gradients(config, params, batch, param_shardings) -> tuple[jax.Array, jax.Array, Any]:
    """(loss sum, token count, gradient of the loss sum) over the batch, accumulated over
    `train.microbatches` slices with lax.scan: k microbatches give exactly the sums of one batch k times larger."""
    grad_fn = jax.value_and_grad(loss_fn(config), has_aux=True)  # d(loss sum)/d(params); the count rides along
    k = config.train.microbatches
    if k == 1:
        (loss_sum, count), grads = grad_fn(params, batch)
        return loss_sum, count, grads

    # Row j*k + i goes to microbatch i: each device keeps its own rows, so no data moves between devices.
    micro = jax.tree.map(lambda x: x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1), batch)

    def body(carry, mb):
        mb = jax.tree.map(lambda x: nn.with_logical_constraint(x, sharding.BATCH_NAMES), mb)
        (loss_sum, count), grads = grad_fn(params, mb)
        acc = jax.tree.map(jnp.add, carry, (loss_sum, count, grads))
        return (acc[0], acc[1], jax.lax.with_sharding_constraint(acc[2], param_shardings)), None

    zeros = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
    (loss_sum, count, grads), _ = jax.lax.scan(body, zeros, micro)
    return loss_sum, count, grads


def make_train_step(config, mesh: Mesh):
    """The jitted, sharded `(state, batch) -> (state, metrics)`; the input state is donated.

    metrics: loss (mean next-token cross-entropy, float32), lr (used by this update), grad_norm (before
    clipping), tokens (target tokens in the batch).
    """
    check_batch_shape(config, mesh)
    tx = make_optimizer(config)
    schedule = learning_rate_schedule(config)
    shardings = state_shardings(config, mesh)

    def train_step(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, dict[str, jax.Array]]:
        with activation_sharding(config, mesh):
            loss_sum, count, grads = sum_gradients(config, state.params, batch, shardings.params)
        count = jnp.maximum(count, 1.0)  # a batch of padding only contributes nothing, not NaN
        loss = loss_sum / count
        grads = jax.tree.map(lambda g: g / count, grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "lr": schedule(state.step), "grad_norm": optax.tree.norm(grads), "tokens": count}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return jax.jit(
        train_step,
        in_shardings=(shardings, batch_shardings(config, mesh)),
        out_shardings=(shardings, sharding.replicated(mesh)),
        donate_argnums=0,
    )


def make_eval_step(config, mesh: Mesh):
    """The jitted `(params, batch) -> (loss sum, token count)` for held-out evaluation."""
    shardings = state_shardings(config, mesh)

    def eval_step(params, batch):
        with activation_sharding(config, mesh):
            return loss_fn(config)(params, batch)

    return jax.jit(
        eval_step,
        in_shardings=(shardings.params, batch_shardings(config, mesh)),
        out_shardings=sharding.replicated(mesh),
    )


def device_batch(local_batch: dict[str, Any], config, mesh: Mesh) -> dict[str, jax.Array]:
    """The global, sharded batch from this process's rows [global_batch_size // process_count, seq_len]."""
    shape = (config.train.global_batch_size, config.train.seq_len)
    shardings = batch_shardings(config, mesh)
    return {
        key: jax.make_array_from_process_local_data(shardings[key], local_batch[key].astype(dtype), shape)
        for key, dtype in BATCH_KEYS.items()
    }
