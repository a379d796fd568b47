"""Multi-host for real: two processes with 4 fake CPU devices each, joined through a localhost coordinator,
train the same steps as one process with 8 devices; every process saves its own data-stream state."""

import os
import socket
import subprocess
import sys

import numpy as np

from experiments.configs import debug
from llama_jax.metrics import read_metrics
from llama_jax.train import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = debug.get_config().train.steps


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process_with_eight_devices(tmp_path):
    workdir, port = str(tmp_path / "two_processes"), free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_jax.train",
                "--config=experiments/configs/debug.py",
                f"--workdir={workdir}",
                f"--coordinator_address=localhost:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    single = str(tmp_path / "one_process")
    train(
        debug.get_config(), single
    )  # meanwhile, here: this test session has 8 devices; the mesh is fsdp=8 in both runs
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]

    losses = lambda w: [r["loss"] for r in read_metrics(w) if "loss" in r]  # noqa: E731
    assert len(losses(workdir)) == STEPS
    np.testing.assert_allclose(losses(workdir), losses(single), rtol=1e-5)
    data_dir = tmp_path / "two_processes" / "checkpoints" / str(STEPS) / "data"
    assert {"process_0.bin", "process_1.bin"} <= set(os.listdir(data_dir))
