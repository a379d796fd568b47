"""Sweeps on a Ray cluster (experiments.ray_runner): against a real Ray head that the tests start with
`ray start --head` (an existing cluster, as a user has one, in its own process group so that its worker
processes can be killed one by one), a sweep's runs and its cooldown branch finish with their final checkpoints,
a run whose worker is killed mid-run resumes from its checkpoint, and a finished sweep trains nothing again."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from experiments import launch, ray_runner, sweep
from llama_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEBUG_SWEEP = os.path.join(ROOT, "experiments", "configs", "debug_sweep.py")
RAY = os.path.join(os.path.dirname(sys.executable), "ray")
# Workers import this checkout (not another one the environment may have installed); no usage report is sent.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
       "RAY_USAGE_STATS_ENABLED": "0"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head():
    """The address of a one-node Ray cluster with 2 CPUs, stopped (its whole process group) after the tests."""
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths under it must stay short
    port = _free_port()
    process = subprocess.Popen([RAY, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                                f"--temp-dir={temp}", "--disable-usage-stats", "--block"], cwd=ROOT, env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"127.0.0.1:{port}"
    deadline = time.time() + 60
    while not ray_runner._answers(address, timeout_s=1) and process.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert process.poll() is None, "ray start --head exited"
    yield address
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # what the head left behind of its group
    except ProcessLookupError:
        pass
    shutil.rmtree(temp, ignore_errors=True)


def _train_processes(workdir: str) -> list[int]:
    """PIDs of live processes training in `workdir`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f"--workdir={workdir}".encode() in f.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:
            continue
    return found


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("PPid:")))


def test_a_ray_sweep_resumes_the_run_whose_worker_was_killed_and_its_branch_follows(head, tmp_path):
    root = str(tmp_path)
    runs = sweep.expand(DEBUG_SWEEP, only="2.56k")  # the stable phase (30 steps) and its cooldown branch (20)
    trunk = runs[0].workdir(root)
    command = [sys.executable, "-m", "experiments.sweep", f"--config={DEBUG_SWEEP}", "--only=2.56k", "--runner=ray",
               f"--address={head}", f"--workdir={root}"]
    sweeper = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while launch.latest_step(trunk) is None and sweeper.poll() is None:
        time.sleep(0.2)
    # SIGKILL the Ray worker running the stable phase (the training process's parent) once it has a checkpoint.
    [child] = _train_processes(trunk)
    os.kill(_parent(child), signal.SIGKILL)
    out, err = sweeper.communicate(timeout=240)
    assert sweeper.returncode == 0, err
    assert err == ""  # Ray's start-up messages stay off the console
    for run in runs:
        assert launch.latest_step(run.workdir(root)) == run.config.train.steps
    log = open(f"{trunk}/train.log").read()
    assert "starting at step 0" in log and "resuming from the checkpoint of step" in log
    assert f"{runs[1].name}: finished in" in out and out.count("ray: 2 runs on the cluster") == 1
    # The branch started from the stable phase's checkpoint at its cooldown start, once that run had finished.
    assert f"resuming from the checkpoint of step {runs[1].branch[1]}" in open(f"{runs[1].workdir(root)}/train.log").read()
    records = ray_runner.run_ray(runs, root, head, log=lambda line: None)
    assert records == [{"run": run.name, "status": "skipped", "wall_s": 0.0} for run in runs]


def test_no_cluster_at_the_address_is_one_line_error(tmp_path):
    address = f"127.0.0.1:{_free_port()}"
    with pytest.raises(ConnectionError, match=f"no Ray cluster at {address}: nothing listens there; start one"):
        ray_runner.run_ray(sweep.expand(DEBUG_SWEEP, only="2.56k"), str(tmp_path), address)


@pytest.mark.parametrize("flags,message", [
    (["--runner=ray", "--launch=xpk", "--topology=v5p-8", "--cluster=c", "--docker-image=i"],
     "--runner=ray is for --launch=local"),
    (["--runner=ray", "--cpus-per-run=0"], "--cpus_per_run=0 must be positive"),
    (["--runner=ray", "--gpus-per-run=-1"], "--gpus_per_run=-1 must be at least 0"),
    (["--runner=ray", "--tpu-chips-per-run=-4"], "--tpu_chips_per_run=-4 must be at least 0"),
])
def test_bad_ray_flags_are_usage_errors(flags, message):
    with pytest.raises(cli.UsageError, match=message):
        sweep.parse_args([f"--config={DEBUG_SWEEP}", *flags])


def test_resources_become_the_task_options():
    assert ray_runner.Resources(8, 0, 4).options(3) == {"num_cpus": 8, "num_gpus": 0, "max_retries": 3,
                                                       "resources": {"TPU": 4}}
    assert ray_runner.Resources().options(0)["resources"] == {}
    assert str(ray_runner.Resources(1, 2)) == "1 CPUs, 2 GPUs"
