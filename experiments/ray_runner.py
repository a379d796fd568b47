"""Running a sweep's runs as tasks on an existing Ray cluster (`python -m experiments.sweep --runner=ray`), the
way Marin and Levanter schedule runs on TPU and GPU clusters.

Each run is one Ray task that does what experiments.launch does locally (launch.train_run): it skips a finished
run, trains the rest with `python -m llama_jax.train` in the run's workdir (output in its train.log) and returns
the run's record. A cooldown branch's task takes its source run's task as an argument, so it starts only once
the source finished. A worker that dies mid-run (a lost node, a SIGKILL) takes the training process with it
(SIGTERM: it saves a checkpoint), and Ray runs the task again (`max_retries`), which resumes from the latest
checkpoint once that process has exited (launch.train_run holds a lock on train.log while training).

The workdir root must be a path that every worker sees at the same place (NFS, Filestore, a gcsfuse mount of a
bucket): the driver and the tasks read and write the same checkpoints, and experiments.collect reads them
afterwards as it does for local runs. The workers must run the same checkout (the Dockerfile's image, or the
repository on the shared file system): sweep files are passed to them by absolute path.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from collections.abc import Callable

from experiments.runs import Run

DEFAULT_ADDRESS = "auto"  # ray.init's: RAY_ADDRESS, else the cluster `ray start --head` started on this machine


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one run reserves on the cluster: CPU cores, GPUs and TPU chips (Ray's custom resource "TPU")."""

    cpus: float = 2.0  # a CPU run's XLA threads use the cores it is given; 2 = the cores of these CPU machines
    gpus: float = 0.0
    tpu_chips: float = 0.0

    def options(self, max_retries: int) -> dict:
        """The `ray.remote(...).options(...)` of a run's task."""
        return {"num_cpus": self.cpus, "num_gpus": self.gpus, "max_retries": max_retries,
                "resources": {"TPU": self.tpu_chips} if self.tpu_chips else {}}

    def __str__(self) -> str:
        parts = [f"{self.cpus:g} CPUs"] + [f"{n:g} {what}" for n, what in ((self.gpus, "GPUs"),
                                                                           (self.tpu_chips, "TPU chips")) if n]
        return ", ".join(parts)


def _train_task(run: Run, root: str, *sources: dict) -> dict:
    """The Ray task of `run`: launch.train_run in the worker (`sources`: the records of the runs it branches from,
    there only to order the tasks). The worker's death, not a forwarded SIGTERM, stops its training process."""
    from experiments import launch  # in the worker: JAX and orbax load there, not in `sweep --help`

    return launch.train_run(run, root, log=lambda line: None, forward_sigterm=False)


def connect(address: str = DEFAULT_ADDRESS) -> None:
    """Join the Ray cluster at `address` (host:port of its head; "auto": RAY_ADDRESS, else this machine's
    `ray start --head`) as a driver, its start-up messages silenced; ConnectionError when no cluster is there."""
    import ray

    hint = "start one with `ray start --head` (it prints the address to pass as --address)"
    if not _answers(address):  # else ray.init retries an address where nothing listens for minutes
        raise ConnectionError(f"no Ray cluster at {address}: nothing listens there; {hint}")
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except ConnectionError:
        where = "auto (RAY_ADDRESS is unset and no head runs on this machine)" if address == "auto" else address
        raise ConnectionError(f"no Ray cluster at {where}; {hint}") from None


def _answers(address: str, timeout_s: float = 5.0) -> bool:
    """Whether something accepts TCP connections at `address` (host:port, optionally ray://); True when it names
    no port ("auto"), which ray.init resolves itself."""
    host, _, port = address.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        return True
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def run_ray(runs: list[Run], root: str, address: str = DEFAULT_ADDRESS, resources: Resources = Resources(),
            max_retries: int = 3, log: Callable[[str], None] = print) -> list[dict]:
    """Train `runs` as tasks on the Ray cluster at `address`, each reserving `resources` and retried up to
    `max_retries` times when its worker dies, in `root/<sweep>/<name>` (a path every worker sees); returns one
    record per run (name, status, wall seconds) in the order of `runs`, once all of them ended. Runs that stopped
    before their final step (and the branches of those) raise one ValueError naming them, after the others ended."""
    import ray

    root = root if "://" in root else os.path.abspath(root)
    connect(address)
    try:
        task = ray.remote(_train_task).options(**resources.options(max_retries))
        log(f"ray: {len(runs)} runs on the cluster at {address} ({ray.cluster_resources().get('CPU', 0):g} CPUs), "
            f"{resources} each; logs in {root}/<sweep>/<run>/train.log")
        refs: dict[str, ray.ObjectRef] = {}
        for run in runs:  # dependencies_first: a branch's source was submitted before it
            sources = [refs[run.branch[0]]] if run.branch and run.branch[0] in refs else []
            absolute = dataclasses.replace(run, config_file=os.path.abspath(run.config_file))
            refs[run.name] = task.remote(absolute, root, *sources)
        names = {ref: name for name, ref in refs.items()}
        start, records, failed = time.perf_counter(), {}, {}
        pending = list(refs.values())
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            name = names[done[0]]
            try:
                records[name] = ray.get(done[0])
            except ray.exceptions.RayError as error:
                failed[name] = error
                log(f"{name}: failed ({_cause(error)})")
                continue
            record = records[name]
            log(f"{name}: finished, skipped" if record["status"] == "skipped" else
                f"{name}: finished in {record['wall_s']:.0f} s ({time.perf_counter() - start:.0f} s into the sweep)")
    finally:
        ray.shutdown()
    if failed:
        raise ValueError(f"{len(failed)} of {len(runs)} runs stopped before their final step: {sorted(failed)}; "
                         f"see their train.log under {root}, then rerun the sweep to resume them")
    return [records[run.name] for run in runs]


def _cause(error: Exception) -> str:
    """The one-line message of the exception a task raised (or of the cluster's failure)."""
    cause = getattr(error, "cause", None) or error
    return " ".join(str(cause).split())[:300]
