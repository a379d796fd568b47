"""Running a sweep's runs: locally one after another, each a `python -m llama_jax.train` process, or on a TPU pod
slice through gcloud (commands printed, and run only when asked).

Locally every run is resumable exactly as `llama_jax.train` is: a run whose final checkpoint exists is skipped, a
killed one resumes from its latest checkpoint, and a cooldown branch (Hägele et al. 2024) starts from the
stable-phase run's checkpoint at its cooldown start (`--branch_from`, `--branch_step`). Killing the sweep stops
the running training process the way a TPU preemption does (SIGTERM: it saves a checkpoint and exits), so
running the same sweep command again finishes with the results an uninterrupted sweep gives.
"""

from __future__ import annotations

import ctypes
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

from experiments.sweep import Run
from llama_jax.perf.aot import Topology

# Software versions of TPU VMs (Cloud TPU "TPU software versions" page), by generation.
RUNTIME_VERSIONS = {"v4": "tpu-ubuntu2204-base", "v5e": "v2-alpha-tpuv5-lite", "v5p": "v2-alpha-tpuv5",
                    "v6e": "v2-alpha-tpuv6e"}
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a child receives when its parent dies


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


def _start(command: list[str], out) -> subprocess.Popen:
    """Popen `command` with its output to `out`, tied to this process's life (_die_with_parent)."""
    with warnings.catch_warnings():
        # JAX warns that fork() in a multithreaded process may deadlock; the child runs only prctl, then exec.
        warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)


def run_local(runs: list[Run], root: str, log: Callable[[str], None] = print) -> list[dict]:
    """Train `runs` one after another in `root/<sweep>/<name>`, skipping finished ones; returns one record per
    run (name, status, wall seconds). A run that exits without its final checkpoint stops the sweep (ValueError)."""
    records = []
    for run in runs:
        workdir = run.workdir(root)
        if is_finished(run, root):
            log(f"{run.name}: finished, skipped")
            records.append({"run": run.name, "status": "skipped", "wall_s": 0.0})
            continue
        os.makedirs(workdir, exist_ok=True)
        _write_run_record(run, workdir)
        command = train_command(run, root)
        log(f"{run.name}: training {run.config.train.steps} steps ({shlex.join(command[1:])}); log in {workdir}/train.log")
        start = time.perf_counter()
        with open(os.path.join(workdir, "train.log"), "a") as out:
            child = _start(command, out)
            previous = signal.signal(signal.SIGTERM, lambda *_, child=child: child.send_signal(signal.SIGTERM))
            try:
                status = child.wait()
            finally:
                signal.signal(signal.SIGTERM, previous)
        wall = time.perf_counter() - start
        if not is_finished(run, root):
            raise ValueError(f"{run.name} stopped (exit status {status}) before its final step "
                             f"{run.config.train.steps}; see {workdir}/train.log, then rerun the sweep to resume it")
        log(f"{run.name}: finished in {wall:.0f} s")
        records.append({"run": run.name, "status": "trained", "wall_s": wall})
    return records


def _write_run_record(run: Run, workdir: str) -> None:
    """WORKDIR/run.json: the run's sweep, name, spec and config, read by experiments.collect."""
    record = {"sweep": run.sweep, "run": run.name, "config_file": run.config_file, "arg": run.arg,
              "branch": run.branch, "config": json.loads(run.config.to_json())}
    (epath.Path(workdir) / "run.json").write_text(json.dumps(record, indent=1))


def tpu_commands(runs: list[Run], root: str, topology: Topology, *, tpu: str, zone: str, project: str = "",
                 slices: int = 1, runtime_version: str = "", repo_dir: str = "llama_jax",
                 overrides: dict[str, tuple[str, ...]] | None = None) -> list[list[str]]:
    """gcloud commands that run `runs` one after another on a pod slice, or on `slices` slices joined over DCN
    (multi-slice: `mesh.dcn_data` = slices): one queued-resource request, then per run one ssh to every host of
    every slice, each running the same training command (--multihost). `overrides` maps run names to extra
    `--config.*` flags (the fit search's microbatches and remat policy)."""
    project_flag = [f"--project={project}"] if project else []
    create = ["gcloud", "compute", "tpus", "queued-resources", "create", tpu, f"--zone={zone}", *project_flag,
              f"--accelerator-type={topology.cloud_name}",
              f"--runtime-version={runtime_version or RUNTIME_VERSIONS[topology.generation]}"]
    if slices > 1:
        create += [f"--node-count={slices}", f"--node-prefix={tpu}"]
        ssh = ["gcloud", "compute", "tpus", "queued-resources", "ssh", tpu, f"--zone={zone}", *project_flag,
               "--node=all", "--worker=all"]
    else:
        create += [f"--node-id={tpu}"]
        ssh = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", tpu, f"--zone={zone}", *project_flag, "--worker=all"]
    commands = [create]
    for run in runs:
        extra = tuple((overrides or {}).get(run.name, ())) + ((f"--config.mesh.dcn_data={slices}",) if slices > 1 else ())
        train = train_command(run, root, python=".venv/bin/python", overrides=extra)
        remote = f"cd {repo_dir} && make install && {shlex.join(train[:3] + ['--multihost'] + train[3:])}"
        commands.append([*ssh, f"--command={remote}"])
    return commands


def execute(commands: list[list[str]], log: Callable[[str], None] = print) -> None:
    """Run `commands` in order, stopping at the first that fails (RuntimeError naming it)."""
    for command in commands:
        log(f"$ {shlex.join(command)}")
        status = subprocess.call(command)
        if status:
            raise RuntimeError(f"exit status {status}: {shlex.join(command)}")
