"""Train LLaMA: `python -m llama_jax.train --config=experiments/configs/tiny.py --workdir=DIR`.

Running the same command again in the same workdir resumes from its latest checkpoint, exactly: same
parameters, optimizer state and data position. Overrides: `--config.train.steps=200`. Multi-host:
`--multihost` on TPU pods (and clusters JAX detects), or the explicit coordinator flags on GPU clusters.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import numpy as np
from absl import flags
from ml_collections import config_flags

from llama_jax import cli, sharding
from llama_jax.evaluation.evaluators.suite import Suite
from llama_jax.train import checkpoint
from llama_jax.train import step as ts
from llama_jax.train.metrics import MetricsWriter, Phases, Throughput, plot_loss_curve


class NonFiniteError(FloatingPointError):
    """The loss or gradient norm of a step was not finite."""


# config.data.source -> the module that builds its streams (`train_stream`, `eval_streams`). Imported by name, so
# llama_jax has no import of data_pipeline (which depends on llama_jax) and TensorFlow loads only for the corpus.
STREAMS = {"synthetic": "llama_jax.train.synthetic", "mixture": "data_pipeline"}


def data_streams(config) -> tuple[Iterator, Callable[[], dict[str, Iterable]]]:
    """(this process's training stream, a function building the held-out streams by source, each of which
    yields the same `train.eval_batches` batches whenever it is iterated)."""
    if config.data.source not in STREAMS:
        raise ValueError(f"data.source={config.data.source!r} is not 'mixture' or 'synthetic'")
    source = importlib.import_module(STREAMS[config.data.source])
    where = {"process_index": jax.process_index(), "process_count": jax.process_count()}
    return source.train_stream(config, **where), lambda: source.eval_streams(config, **where)


def mixture_metrics(report: dict) -> dict[str, float]:
    """The data stream's per-source token share and epochs drawn so far, as this process has drawn them:
    {'mixture/<source>/share': fraction, 'mixture/<source>/epochs': passes} (none for a synthetic stream)."""
    return {
        f"mixture/{source['name']}/{name}": float(source[key])
        for source in report.get("sources", ())
        for name, key in (("share", "observed"), ("epochs", "epochs"))
    }


def check_finite(metrics: dict[str, float], step: int, batch: dict[str, np.ndarray], workdir: str, manager) -> None:
    """Raise NonFiniteError when step `step` gave a non-finite loss or gradient norm, after writing its batch
    and metrics to WORKDIR/debug/step_<step>_process_<i>.{npz,json}; that state is never checkpointed."""
    if math.isfinite(metrics["loss"]) and math.isfinite(metrics["grad_norm"]):
        return
    manager.wait_until_finished()  # the last good checkpoint completes; nothing newer is written
    directory = os.path.join(workdir, "debug")
    os.makedirs(directory, exist_ok=True)
    stem = os.path.join(directory, f"step_{step}_process_{jax.process_index()}")
    np.savez(stem + ".npz", **batch)
    with open(stem + ".json", "w") as f:
        json.dump(metrics, f)
    raise NonFiniteError(
        f"step {step}: loss={metrics['loss']} grad_norm={metrics['grad_norm']} is not finite; batch and metrics "
        f"written to {stem}.*; the latest checkpoint (step {manager.latest_step()}) is intact and the same "
        "command resumes from it; inspect that batch, or start a new workdir with a lower optimizer.peak_lr"
    )


def check_token_ids(batch: dict[str, np.ndarray], vocab_size: int, step: int, manager) -> None:
    """Raise before step `step` runs when its batch holds token ids outside [0, vocab_size): inside the jitted step
    such an id reads no embedding row and the loss silently becomes NaN. Costs a min and a max over the batch."""
    for key in ("inputs", "targets"):
        low, high = int(batch[key].min()), int(batch[key].max())
        if low < 0 or high >= vocab_size:
            manager.wait_until_finished()  # the last good checkpoint completes; nothing newer is written
            raise ValueError(
                f"step {step}: the data stream gave token id {high if high >= vocab_size else low} in {key!r}, "
                f"outside the model's vocabulary [0, {vocab_size}) (model.vocab_size): the tokenizer and the model do "
                "not match; set model.vocab_size to the tokenizer's size or data.tokenizer to the model's tokenizer"
            )


@contextlib.contextmanager
def sigterm_flag():
    """Yields a one-element list that becomes [True] when SIGTERM arrives (TPU preemption). Multi-host jobs
    leave SIGTERM to JAX's coordination service, which makes every process reach the same preemption step
    (`CheckpointManager.reached_preemption`)."""
    received = [False]
    if jax.process_count() > 1:
        yield received
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: received.__setitem__(0, True))
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def train(config, workdir: str, devices: list | None = None, branch: tuple[str, int] | None = None) -> dict[str, float]:
    """Train `config` in `workdir` up to `config.train.steps` on `devices` (default: all), resuming from its latest
    checkpoint; a workdir without one starts from step `branch[1]` of the run in `branch[0]` when given (a
    cooldown branched from a stable phase: checkpoint.restore_branch). Returns the last step's metrics."""
    phases = Phases()  # where the wall time goes: WORKDIR/timing.jsonl
    is_main = jax.process_index() == 0
    with phases("setup"):  # mesh, checkpoint manager, shardings, restore, data streams, evaluations, init
        mesh = sharding.make_mesh(config, devices)
        manager = checkpoint.manager(workdir, config)
        run = ts.setup(config, mesh)  # rules, optimizer, schedule and shardings, derived once for the whole run
        target = run.abstract_state
        restored = checkpoint.restore_latest(manager, config, target)  # refuses a workdir of another run first
        if restored is None and branch is not None:
            restored = checkpoint.restore_branch(*branch, config, target)
        stream, make_eval_streams = data_streams(config)
        evals = Suite(config, mesh, make_eval_streams)  # config.evals: tasks resolved (and built) before training starts
        if restored is None:
            state = ts.init_state(config, mesh, jax.random.PRNGKey(config.seed))
        else:
            state, data_state = restored
            checkpoint.restore_stream(stream, data_state, manager)
        start = int(jax.device_get(state.step))
        logging.info("mesh %s; %s", sharding.describe(mesh), f"resuming from the checkpoint of step {start}" if restored
                     else "starting at step 0")

    compile_start = time.perf_counter()
    with phases("compile"):
        train_step = ts.make_train_step(config, mesh).lower(target, run.abstract_batch()).compile()
    logging.info("train step compiled in %.1f s", time.perf_counter() - compile_start)

    writer = MetricsWriter(workdir, enabled=is_main, start_step=start)
    if restored is not None:
        writer.write(start, {"resumed_from": start})
    elif evals.due(0):  # the untrained model: where accuracy-against-tokens curves start (chance)
        with phases("eval"):
            writer.write(0, {"tokens_seen": 0, **evals(state.params)})
    throughput = Throughput(config)
    tokens_per_step = config.train.tokens_per_step
    progress = _progress_bar(start, config.train.steps, enabled=is_main)
    metrics: dict[str, float] = {}
    with sigterm_flag() as preempted:
        for step in range(start, config.train.steps):
            if preempted[0] or manager.reached_preemption(step):
                if manager.latest_step() != step:
                    with phases("checkpoint"):
                        checkpoint.save(manager, step, state, config, stream.get_state(), force=True)
                logging.info("preempted: checkpoint of step %d saved, exiting", step)
                break
            if step == config.train.profile_step:
                jax.profiler.start_trace(os.path.join(workdir, "profile"))
            tick = time.perf_counter()
            batch = next(stream)
            data_wait = time.perf_counter() - tick
            check_token_ids(batch, config.model.vocab_size, step + 1, manager)
            state, device_metrics = train_step(state, run.device_batch(batch))
            # Reading the metrics every step serialises host and device, which costs little against steps
            # of a real model and lets a non-finite step be named and never checkpointed.
            metrics = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
            throughput.add(time.perf_counter() - tick, data_wait)
            phases.add("data_wait", data_wait)
            phases.add("steps", time.perf_counter() - tick - data_wait)
            if step == config.train.profile_step:
                jax.profiler.stop_trace()
            done = step + 1
            check_finite(metrics, done, batch, workdir, manager)
            progress.update(1)
            progress.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}")
            if done % config.train.log_every == 0 or done == config.train.steps:
                writer.write(done, {**metrics, "tokens_seen": done * tokens_per_step, **throughput.summary(),
                                    **mixture_metrics(stream.report())})
                throughput.reset()
            # Evaluate before saving: a run whose final checkpoint exists has its final evaluation, and an
            # evaluation does not share the cores with the background write of a checkpoint.
            if evals.due(done):
                with phases("eval"):
                    writer.write(done, {"tokens_seen": done * tokens_per_step, **evals(state.params)})
            if done == config.train.steps or manager.should_save(done):  # get_state() only when it is saved
                with phases("checkpoint"):
                    checkpoint.save(manager, done, state, config, stream.get_state(), force=True)
    progress.close()
    with phases("checkpoint"):
        manager.wait_until_finished()
        manager.close()
    writer.close()
    if is_main and os.path.exists(writer.path):
        with phases("plot"):
            logging.info("loss curve: %s", plot_loss_curve(workdir))
    if is_main:
        phases.write(workdir, start, int(jax.device_get(state.step)))
    return metrics


def _progress_bar(start: int, total: int, enabled: bool) -> Any:
    """A tqdm bar with ETA on the console of process 0."""
    from tqdm import tqdm

    return tqdm(total=total, initial=start, disable=not enabled, desc="train", unit="step", dynamic_ncols=True)


def define_flags() -> None:
    """The command's flags; defined only when run as a program, so that importing this module defines none."""
    config_flags.DEFINE_config_file("config", None, "Experiment config file (experiments/configs/*.py).")
    flags.DEFINE_string("workdir", None, "Checkpoints, metrics and plots go here; an existing one is resumed.")
    flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() (TPU pods, SLURM, ...).")
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for explicit clusters.")
    flags.DEFINE_integer("num_processes", None, "Number of processes, with --coordinator_address.")
    flags.DEFINE_integer("process_id", None, "This process's index, with --coordinator_address.")
    flags.DEFINE_string("branch_from", None, "With --branch_step: a new workdir starts from that step of this run.")
    flags.DEFINE_integer("branch_step", None, "The checkpoint step of --branch_from to start from.")
    flags.mark_flags_as_required(["config", "workdir"])


def initialize_distributed() -> None:
    """Join the other processes of a multi-host job, from the command-line flags."""
    FLAGS = flags.FLAGS
    if FLAGS.coordinator_address is not None:
        jax.distributed.initialize(
            coordinator_address=FLAGS.coordinator_address, num_processes=FLAGS.num_processes, process_id=FLAGS.process_id
        )
    elif FLAGS.multihost:
        jax.distributed.initialize()  # TPU pods and known cluster managers describe the job themselves


def _ours(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or any(p in record.pathname for p in ("/llama_jax/", "/data_pipeline/"))


def configure_logging() -> None:
    """INFO from process 0 only; orbax and TensorFlow report every save at INFO: keep INFO from this project
    only, warnings from all."""
    logging.getLogger().setLevel(logging.INFO if jax.process_index() == 0 else logging.WARNING)
    if _ours not in logging.getLogger("absl").filters:
        logging.getLogger("absl").addFilter(_ours)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments {argv[1:]}")
    initialize_distributed()
    configure_logging()
    FLAGS = flags.FLAGS
    if (FLAGS.branch_from is None) != (FLAGS.branch_step is None):
        raise cli.UsageError("give both --branch_from=WORKDIR and --branch_step=STEP, or neither")
    branch = None if FLAGS.branch_from is None else (FLAGS.branch_from, FLAGS.branch_step)
    train(FLAGS.config, FLAGS.workdir, branch=branch)


if __name__ == "__main__":
    define_flags()
    cli.run_absl(main)
