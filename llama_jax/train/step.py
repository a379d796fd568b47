"""The train state, its shardings, and the one pure, compiled `train_step(state, batch) -> (state, metrics)`."""

from __future__ import annotations

import copy
import dataclasses
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
from llama_jax.model.llama import LLaMA, abstract_params, init_params
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


@dataclasses.dataclass(frozen=True)
class Setup:
    """What a run derives from (config, mesh), computed once by `setup` and read by the loop, evaluation, AOT
    compilation and the bench: the logical rules, optimizer, schedule and every sharding."""

    config: Any  # a private copy of the experiment config
    mesh: Mesh
    model: ModelConfig
    rules: sharding.Rules
    optimizer: optax.GradientTransformation
    schedule: optax.Schedule
    abstract_state: TrainState  # ShapeDtypeStructs, each with its NamedSharding
    state_shardings: TrainState
    batch_shardings: dict[str, NamedSharding]  # one per BATCH_KEYS entry, [batch, length]

    def init_state(self, rng: jax.Array) -> TrainState:
        """A fresh TrainState from key `rng` (jax.random.PRNGKey), created directly in its shardings."""
        tx, model = self.optimizer, self.model

        def init(key):
            params = nn.meta.unbox(init_params(model, key, length=1))
            return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), key)

        return jax.jit(init, out_shardings=self.state_shardings)(rng)

    def abstract_batch(self) -> dict[str, jax.ShapeDtypeStruct]:
        """The global batch, each array [global_batch_size, seq_len] with its sharding."""
        check_batch_shape(self.config, self.mesh)
        shape = (self.config.train.global_batch_size, self.config.train.seq_len)
        return {key: jax.ShapeDtypeStruct(shape, dtype, sharding=self.batch_shardings[key])
                for key, dtype in BATCH_KEYS.items()}

    def device_batch(self, local_batch: dict[str, Any]) -> dict[str, jax.Array]:
        """The global, sharded batch from this process's rows [global_batch_size // process_count, seq_len]."""
        shape = (self.config.train.global_batch_size, self.config.train.seq_len)
        return {
            key: jax.make_array_from_process_local_data(self.batch_shardings[key], local_batch[key].astype(dtype),
                                                        shape)
            for key, dtype in BATCH_KEYS.items()
        }


def _build(config, mesh: Mesh) -> Setup:
    config = copy.deepcopy(config)  # the caller may edit its config afterwards; references (tokens_per_step) kept
    model = model_config(config)
    rules = sharding.logical_rules(config)
    tx = make_optimizer(config)
    boxed = abstract_params(model)  # the one abstract parameter tree (cached per ModelConfig)
    params = nn.meta.unbox(boxed)
    state = TrainState(jax.ShapeDtypeStruct((), jnp.int32), params, jax.eval_shape(tx.init, params),
                       jax.eval_shape(lambda: jax.random.PRNGKey(0)))
    # NamedShardings of the TrainState: params by their logical names and the rules, AdamW moments like their
    # parameters, scalars replicated.
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
    shardings = sharding.named_shardings(specs, state, mesh, rules)
    abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), state, shardings)
    batch = {key: sharding.batch_sharding(mesh, rules) for key in BATCH_KEYS}
    return Setup(config, mesh, model, rules, tx, learning_rate_schedule(config), abstract, shardings, batch)


_SETUPS: dict[tuple[str, Mesh], Setup] = {}
_MAX_SETUPS = 16


def setup(config, mesh: Mesh) -> Setup:
    """The Setup of `config` on `mesh`. The same config contents and mesh give the same Setup object, so every
    caller below (train and eval steps, AOT, the bench) shares one computation of it."""
    key = (config.to_json(), mesh)
    if key not in _SETUPS:
        if len(_SETUPS) >= _MAX_SETUPS:
            _SETUPS.pop(next(iter(_SETUPS)))  # the oldest
        _SETUPS[key] = _build(config, mesh)
    return _SETUPS[key]


def state_shardings(config, mesh: Mesh) -> TrainState:
    """NamedShardings of the TrainState (see `Setup`)."""
    return setup(config, mesh).state_shardings


def abstract_state(config, mesh: Mesh) -> TrainState:
    """ShapeDtypeStructs of the TrainState, each with its NamedSharding; nothing is allocated."""
    return setup(config, mesh).abstract_state


def init_state(config, mesh: Mesh, rng: jax.Array) -> TrainState:
    """A fresh TrainState from key `rng` (jax.random.PRNGKey), created directly in its shardings."""
    return setup(config, mesh).init_state(rng)


def batch_shardings(config, mesh: Mesh) -> dict[str, NamedSharding]:
    return setup(config, mesh).batch_shardings


def abstract_batch(config, mesh: Mesh) -> dict[str, jax.ShapeDtypeStruct]:
    """The global batch, each array [global_batch_size, seq_len] with its sharding."""
    return setup(config, mesh).abstract_batch()


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
    run = setup(config, mesh)
    config, tx, schedule, shardings = run.config, run.optimizer, run.schedule, run.state_shardings

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
        in_shardings=(shardings, run.batch_shardings),
        out_shardings=(shardings, sharding.replicated(mesh)),
        donate_argnums=0,
    )


def make_eval_step(config, mesh: Mesh):
    """The jitted `(params, batch) -> (loss sum, token count)` for held-out evaluation."""
    run = setup(config, mesh)
    config = run.config

    def eval_step(params, batch):
        with activation_sharding(config, mesh):
            return loss_fn(config)(params, batch)

    return jax.jit(
        eval_step,
        in_shardings=(run.state_shardings.params, run.batch_shardings),
        out_shardings=sharding.replicated(mesh),
    )


def device_batch(local_batch: dict[str, Any], config, mesh: Mesh) -> dict[str, jax.Array]:
    """The global, sharded batch from this process's rows [global_batch_size // process_count, seq_len]."""
    return setup(config, mesh).device_batch(local_batch)
