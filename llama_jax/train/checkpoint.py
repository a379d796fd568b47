"""Checkpoints with orbax: the sharded TrainState, the config and every process's data-stream state.

Layout: WORKDIR/checkpoints/<step>/{state, config, data/process_<i>.bin}. orbax writes each array shard
from the process that holds it (never through one host), saves asynchronously, keeps the last K, and
makes a step visible only once complete (a run killed mid-save leaves the previous one usable).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from ml_collections import ConfigDict

from llama_jax.train.optim import learning_rate_schedule

# Fields a resumed run may change: how it is parallelised, computed, logged and checkpointed. Everything
# else (model shape, optimizer, schedule length, data, batch) defines the run and must match the checkpoint.
MAY_CHANGE = (
    "mesh.",
    "checkpoint.",
    "train.microbatches",
    "train.loss_chunk_size",
    "train.log_every",
    "train.eval_every",
    "train.eval_batches",
    "evals.",
    "train.profile_step",
    "model.dtype",
    "model.remat_policy",
    "model.attention_impl",
    "model.scan_unroll",
    "model.linear_tokens",
)
# Fields computed from others (train.tokens_per_step = global_batch_size x seq_len): they cannot differ on their
# own, and checkpoints written before they existed lack them.
DERIVED = ("train.tokens_per_step",)


class DataStateHandler(ocp.CheckpointHandler):
    """Saves and restores each process's data-stream state as `process_<i>.bin` in the item directory (as
    grain's checkpoint handler does): every process resumes its own shard of the stream."""

    def save(self, directory: epath.Path, args: DataStateSave) -> None:
        (directory / f"process_{jax.process_index()}.bin").write_bytes(args.state)

    def restore(self, directory: epath.Path, args: DataStateRestore | None = None) -> bytes:
        return (directory / f"process_{jax.process_index()}.bin").read_bytes()


@ocp.args.register_with_handler(DataStateHandler, for_save=True)
@dataclasses.dataclass
class DataStateSave(ocp.args.CheckpointArgs):
    state: bytes  # this process's Stream.get_state()


@ocp.args.register_with_handler(DataStateHandler, for_restore=True)
@dataclasses.dataclass
class DataStateRestore(ocp.args.CheckpointArgs):
    pass


def manager(workdir: str, config) -> ocp.CheckpointManager:
    """The run's CheckpointManager: a save every `checkpoint.every_steps`, the last `checkpoint.keep` kept, and
    the steps of `checkpoint.keep_steps` saved and kept for good (where cooldown branches start)."""
    keep_steps = [int(step) for step in config.checkpoint.keep_steps]
    options = ocp.CheckpointManagerOptions(
        save_decision_policy=ocp.checkpoint_managers.AnySavePolicy(
            [
                ocp.checkpoint_managers.FixedIntervalPolicy(config.checkpoint.every_steps),
                ocp.checkpoint_managers.SpecificStepsPolicy(keep_steps),
                ocp.checkpoint_managers.PreemptionCheckpointingPolicy(),  # multi-host SIGTERM sync point
            ]
        ),
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(
            [ocp.checkpoint_managers.LatestN(config.checkpoint.keep), ocp.checkpoint_managers.CustomSteps(keep_steps)]
        ),
        enable_async_checkpointing=config.checkpoint.async_save,
    )
    directory = epath.Path(workdir).absolute() / "checkpoints"
    return ocp.CheckpointManager(directory, options=options, item_names=("state", "config", "data"))


def config_json(config) -> dict[str, Any]:
    """The config as plain JSON values (tuples become lists), as it is stored in a checkpoint."""
    return json.loads(config.to_json())


def save(mngr: ocp.CheckpointManager, step: int, state, config, data_state: bytes, *, force: bool = False) -> bool:
    """Save `state` (after `step` updates) if the interval says so, or `force`; returns whether a save started."""
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        config=ocp.args.JsonSave(config_json(config)),
        data=DataStateSave(data_state),
    )
    return mngr.save(step, args=args, force=force)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}


def check_same_run(saved: dict[str, Any], config, directory, may_differ: tuple[str, ...] = ()) -> None:
    """Raise when the checkpoint's config differs from `config` in a field that defines the run (other than
    MAY_CHANGE and the field prefixes of `may_differ`)."""
    now, then = _flatten(config_json(config)), _flatten(saved)
    differ = [
        f"{key}: {then.get(key, '<absent>')!r} in the checkpoint, {now.get(key, '<absent>')!r} now"
        for key in sorted(set(now) | set(then))
        if not key.startswith(MAY_CHANGE + DERIVED + may_differ) and now.get(key) != then.get(key)
    ]
    if differ:
        raise ValueError(
            f"{directory} holds a checkpoint of a different run; refusing to resume or overwrite it. "
            f"Differences: {'; '.join(differ)}. Use a new --workdir, or the checkpoint's settings."
        )


def check_same_processes(directory: epath.Path) -> None:
    """Raise unless the checkpoint in `directory` holds the data-stream states of exactly this run's processes:
    each process resumes its own share of the stream (the mesh may change, the number of processes may not)."""
    found = sorted(path.name for path in (directory / "data").glob("process_*.bin"))
    if set(found) != {f"process_{i}.bin" for i in range(jax.process_count())}:
        raise ValueError(
            f"{directory}/data holds the data-stream states {found}, but this run has {jax.process_count()} "
            "process(es): resume with the number of processes that wrote the checkpoint (the mesh may differ)"
        )


def restore_latest(mngr: ocp.CheckpointManager, config, target) -> tuple[Any, bytes] | None:
    """(TrainState in the shardings of `target` (abstract_state), this process's data state) from the latest
    checkpoint, or None when there is none. The mesh may differ from the one that saved it. orbax lists only
    complete steps (a save cut short stays a `<step>.orbax-checkpoint-tmp` directory); a listed step that cannot
    be read is an error naming it, never a fresh start."""
    step = mngr.latest_step()
    if step is None:
        return None
    directory = mngr.directory / str(step)
    with _naming_damage(mngr, step):
        saved_config = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    check_same_run(saved_config, config, directory)
    check_same_processes(directory)
    with _naming_damage(mngr, step):
        restored = mngr.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), data=DataStateRestore())
        )
    return restored["state"], restored["data"]


def restore_stream(stream, data_state: bytes, mngr: ocp.CheckpointManager) -> None:
    """Continue `stream` where the latest checkpoint left this process's data stream."""
    with _naming_damage(mngr, mngr.latest_step(), f"data/process_{jax.process_index()}.bin"):
        stream.set_state(data_state)


@contextlib.contextmanager
def _naming_damage(mngr: ocp.CheckpointManager, step: int, item: str = ""):
    """Turn any failure to read the checkpoint of `step` into one error naming it and the way on."""
    try:
        yield
    except Exception as error:  # tensorstore, JSON, tar and stream errors alike: the step cannot be resumed
        where = mngr.directory / str(step) / item
        earlier = [s for s in mngr.all_steps() if s < step]
        way_on = (f"move {mngr.directory / str(step)} out of {mngr.directory} to resume from step {earlier[-1]}"
                  if earlier else "start a new workdir")
        cause = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise ValueError(f"{where} cannot be restored ({cause}): it is damaged or was written by other code; "
                         f"nothing was changed. To go on, {way_on}") from error


# What a cooldown branch (Hägele et al. 2024) may change of the run it starts from: the schedule's length.
BRANCH_MAY_DIFFER = ("train.steps", "optimizer.cooldown_fraction")


def restore_branch(source_workdir: str, step: int, config, target) -> tuple[Any, bytes]:
    """(TrainState, this process's data state) of step `step` of the run in `source_workdir`, to start `config`'s
    run from: the two may differ only in BRANCH_MAY_DIFFER, and their learning rates must agree on every step
    before `step` (a warmup-stable-decay cooldown branched from the stable phase), so the branch continues
    exactly the run it would have been from scratch."""
    directory = epath.Path(source_workdir).absolute() / "checkpoints"
    if not directory.exists():
        raise FileNotFoundError(f"{directory} does not exist: nothing to branch from; run the stable-phase run first")
    options = ocp.CheckpointManagerOptions(read_only=True, create=False)
    source = ocp.CheckpointManager(directory, options=options, item_names=("state", "config", "data"))
    if step not in source.all_steps():
        raise FileNotFoundError(
            f"{source.directory} has no checkpoint of step {step} to branch from (it has {source.all_steps()}); "
            f"run the stable-phase run with checkpoint.keep_steps including {step} first"
        )
    directory = directory / str(step)
    with _naming_damage(source, step):
        saved = source.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    check_same_run(saved, config, directory, may_differ=BRANCH_MAY_DIFFER)
    steps = np.arange(step)
    theirs, ours = learning_rate_schedule(ConfigDict(saved))(steps), learning_rate_schedule(config)(steps)
    if not np.array_equal(np.asarray(theirs), np.asarray(ours)):
        first = int(np.argmax(np.asarray(theirs) != np.asarray(ours)))
        raise ValueError(
            f"cannot branch from {directory}: its learning rate at step {first} was {float(theirs[first]):.6g}, this "
            f"run's is {float(ours[first]):.6g}; a branch must share every step before it (optimizer.schedule='wsd' "
            "with the cooldown starting at the branch step)"
        )
    check_same_processes(directory)
    with _naming_damage(source, step):
        restored = source.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), data=DataStateRestore())
        )
    source.close()
    return restored["state"], restored["data"]
