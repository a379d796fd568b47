"""Running a sweep's runs locally, one after another, each a `python -m llama_jax.train` process or all in this
process (`run_local(..., in_process=True)`, `experiments.sweep --runner=inline`; TPU pods: experiments.pod), and
what both launchers share: the training command, the run record, a run's latest step.

In one process, the interpreter's start, the imports (JAX; TensorFlow, with Keras, alone took 9.5 s once on 2
cores) and JAX's set-up are paid once for the sweep instead of once per run, which for a swarm of 20-second
proxies is the largest share of what is not training (docs/benchmarks.md, "The sweep's overheads"). Each
run's log then goes to its train.log as before; a SIGTERM during a run's training saves its checkpoint and stops
the sweep, one between runs stops it at once (the finished runs are finished, the next one has not started).

Locally every run is resumable exactly as `llama_jax.train` is: a run whose final checkpoint exists is skipped, a
killed one resumes from its latest checkpoint, and a cooldown branch (Hägele et al. 2024) starts from the
stable-phase run's checkpoint at its cooldown start (`--branch_from`, `--branch_step`). Killing the sweep stops
the running training process the way a TPU preemption does (SIGTERM: it saves a checkpoint and exits), so
running the same sweep command again finishes with the results an uninterrupted sweep gives.

A local sweep's runs share two caches under ROOT/.cache (shared_caches): JAX's persistent compilation cache and
the held-out batches and source checks of data_pipeline.stream_cache, so that a run does not compile, read or
check again what an earlier run of the sweep did.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable

import orbax.checkpoint as ocp
from etils import epath

from experiments.runs import Run

PR_SET_PDEATHSIG = 1  # prctl(2): the signal a child receives when its parent dies
STREAM_CACHE_ENV = "LLAMA_JAX_STREAM_CACHE"  # data_pipeline.stream_cache.CACHE_ENV (a test holds them equal)


def latest_step(workdir: str) -> int | None:
    """The step of the run's latest finalized checkpoint in `workdir` (None when it has none); creates nothing."""
    directory = epath.Path(workdir) / "checkpoints"
    steps = ocp.utils.checkpoint_steps(directory) if directory.exists() else []
    return max(steps, default=None)


def is_finished(run: Run, root: str) -> bool:
    """Whether `run` has its final checkpoint in its workdir under `root`."""
    return latest_step(run.workdir(root)) == run.config.train.steps


def train_command(run: Run, root: str, python: str = sys.executable, overrides: tuple[str, ...] = ()) -> list[str]:
    """The `llama_jax.train` command line of `run` in `root`: its sweep file and spec, its workdir, the branch
    it starts from, and `overrides` (`--config.x.y=v`)."""
    command = [python, "-m", "llama_jax.train", f"--config={run.config_file}:{run.arg}",
               f"--workdir={run.workdir(root)}"]
    if run.branch is not None:
        source, step = run.branch
        command += [f"--branch_from={run.workdir(root, source)}", f"--branch_step={step}"]
    return command + list(overrides)


_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """In the child, between fork and exec: receive SIGTERM when the sweep process dies (even by SIGKILL), so that
    training saves a checkpoint and stops instead of running on unsupervised."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def shared_caches(root: str) -> dict[str, str]:
    """The environment in which a sweep's runs under `root` share what each would otherwise compute again, under
    ROOT/.cache: JAX's persistent compilation cache (a program another run compiled, e.g. the held-out loss of
    the same size, or the train step of a resumed run, is loaded, not compiled; every compile is kept, however
    short, as the CPU studies' compiles take seconds) and the held-out batches and source checks
    (data_pipeline.stream_cache). A value already in the environment is kept."""
    cache = os.path.join(os.path.abspath(root), ".cache")
    wanted = {"JAX_COMPILATION_CACHE_DIR": os.path.join(cache, "jax"),
              "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
              "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
              STREAM_CACHE_ENV: os.path.join(cache, "stream")}
    return {name: os.environ.get(name, value) for name, value in wanted.items()}


def _start(command: list[str], out, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Popen `command` with its output to `out` and `env` added to this process's environment, tied to this
    process's life (_die_with_parent)."""
    with warnings.catch_warnings():
        # JAX warns that fork() in a multithreaded process may deadlock; the child runs only prctl, then exec.
        warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
                                env={**os.environ, **(env or {})})


def use_shared_caches(root: str) -> None:
    """shared_caches(root) for training in this process: the environment (the stream cache reads it at each
    use) and JAX's configuration (read from the environment only when JAX is imported)."""
    import jax

    caches = shared_caches(root)
    os.environ.update(caches)
    jax.config.update("jax_compilation_cache_dir", caches["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(caches["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", int(caches["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]))


def run_local(runs: list[Run], root: str, log: Callable[[str], None] = print, in_process: bool = False) -> list[dict]:
    """Train `runs` one after another in `root/<sweep>/<name>`, skipping finished ones, each in a training process
    of its own or, `in_process`, all in this one; returns one record per run (name, status, wall seconds). A run
    that stops without its final checkpoint stops the sweep (ValueError)."""
    if in_process:
        from llama_jax.train import loop

        use_shared_caches(root)
        loop.configure_logging()
    return [train_run(run, root, log, in_process=in_process) for run in runs]


def train_run(run: Run, root: str, log: Callable[[str], None] = print, forward_sigterm: bool = True,
              in_process: bool = False) -> dict:
    """Train `run` in `root/<sweep>/<name>` (resuming its latest checkpoint) unless it is finished, in a process
    of its own or, `in_process`, in this one (see run_local); returns its record (name, status, wall seconds);
    ValueError when training stops without the final checkpoint. With `forward_sigterm`, a SIGTERM to this
    process is passed on to the training process, which saves a checkpoint and stops."""
    workdir = run.workdir(root)
    if is_finished(run, root):
        log(f"{run.name}: finished, skipped")
        return {"run": run.name, "status": "skipped", "wall_s": 0.0}
    os.makedirs(workdir, exist_ok=True)
    write_run_record(run, workdir)
    command = train_command(run, root)
    how = f"in this process, as {shlex.join(command[1:])} would" if in_process else f"({shlex.join(command[1:])})"
    log(f"{run.name}: training {run.config.train.steps} steps {how}; log in {workdir}/train.log")
    start = time.perf_counter()
    with open(os.path.join(workdir, "train.log"), "a") as out:
        # One training process per workdir: a rerun waits here until an interrupted run's training process
        # (which holds this file open as its output, and so the lock) has saved its checkpoint and exited.
        fcntl.flock(out, fcntl.LOCK_EX)
        if in_process:
            status = _train_here(run, root, out)
        else:
            child = _start(command, out, shared_caches(root))
            previous = signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM)) if forward_sigterm \
                else None
            try:
                status = child.wait()
            finally:
                if forward_sigterm:
                    signal.signal(signal.SIGTERM, previous)
    wall = time.perf_counter() - start
    if not is_finished(run, root):
        raise ValueError(f"{run.name} stopped (exit status {status}) before its final step "
                         f"{run.config.train.steps}; see {workdir}/train.log, then rerun the sweep to resume it")
    log(f"{run.name}: finished in {wall:.0f} s")
    return {"run": run.name, "status": "trained", "wall_s": wall}


def _train_here(run: Run, root: str, out) -> int:
    """Train `run` in this process (llama_jax.train.loop.train) with its log records, progress bar and warnings
    in `out` (its train.log) instead of the console, as a training process of its own has them; the exit status
    such a process would have had: 0, or 1 when it stopped before its final step (preempted)."""
    import contextlib
    import logging

    from llama_jax.train import loop

    root_logger = logging.getLogger()
    console = root_logger.handlers[:]
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname).1s%(asctime)s %(module)s] %(message)s"))
    root_logger.handlers[:] = [handler]
    branch = None if run.branch is None else (run.workdir(root, run.branch[0]), run.branch[1])
    try:
        with contextlib.redirect_stderr(out), contextlib.redirect_stdout(out):
            loop.train(run.config, run.workdir(root), branch=branch)
    finally:
        root_logger.handlers[:] = console
        out.flush()
    return 0 if is_finished(run, root) else 1


def write_run_record(run: Run, workdir: str, commit: str | None = None) -> None:
    """WORKDIR/run.json: the run's sweep, name, spec, config and (launched on a pod) the commit it runs, read by
    experiments.collect."""
    record = {"sweep": run.sweep, "run": run.name, "config_file": run.config_file, "arg": run.arg,
              "branch": run.branch, "config": json.loads(run.config.to_json()), "commit": commit}
    (epath.Path(workdir) / "run.json").write_text(json.dumps(record, indent=1))
