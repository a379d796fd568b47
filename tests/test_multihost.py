"""Multi-host for real: two processes with 4 fake CPU devices each, joined through a localhost coordinator, train
the same steps as one process with 8 devices, on a plain mesh and on the hybrid ICI x DCN mesh of a two-slice pod
(each process one slice: only the data axis crosses between them); every process saves its own data-stream
state, and a checkpoint of two processes is refused by one."""

import os
import socket

import numpy as np
import pytest
from helpers import person_env, started, train_command

from experiments.configs import debug
from llama_jax import sharding
from llama_jax.train import checkpoint
from llama_jax.train import step as ts
from llama_jax.train.loop import train
from llama_jax.train.metrics import read_metrics

STEPS = debug.get_config().train.steps


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def losses(workdir: str) -> list[float]:
    return [r["loss"] for r in read_metrics(workdir) if "loss" in r]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> str:
    """The 8-device run in this test session (mesh fsdp=8)."""
    workdir = str(tmp_path_factory.mktemp("one_process"))
    train(debug.get_config(), workdir)
    return workdir


@pytest.mark.parametrize("mesh,crossing", [
    ((), "data=1 fsdp=8 sequence=1 tensor=1 (8 cpu devices in 2 processes, across fsdp)"),
    pytest.param(("--config.mesh.dcn_data=2",),
                 "data=2 fsdp=4 sequence=1 tensor=1 (8 cpu devices in 2 processes, across data)",
                 marks=pytest.mark.slow),  # two more processes: the slow tier keeps `make test` within its time
], ids=["plain", "two slices"])
def test_two_processes_match_one_process_with_eight_devices(request, tmp_path, mesh, crossing):
    workdir, port = str(tmp_path / "two_processes"), free_port()
    flags = [*mesh, f"--coordinator_address=localhost:{port}", "--num_processes=2"]
    commands = [(train_command(workdir, *flags, f"--process_id={i}"), str(tmp_path / f"{i}.log")) for i in range(2)]
    with started(*commands, env=person_env(XLA_FLAGS="--xla_force_host_platform_device_count=4")) as processes:
        one_process = request.getfixturevalue("one_process")  # meanwhile, here: 8 devices, mesh fsdp=8
        for process in processes:
            assert process.wait() == 0, process.stderr()[-3000:]
    assert f"mesh {crossing}" in processes[0].stderr()
    assert len(losses(workdir)) == STEPS
    np.testing.assert_allclose(losses(workdir), losses(one_process), rtol=1e-5)
    step_dir = os.path.join(workdir, "checkpoints", str(STEPS))
    assert {"process_0.bin", "process_1.bin"} <= set(os.listdir(os.path.join(step_dir, "data")))

    c = debug.get_config()  # the mesh may change on resume, the number of processes may not
    with pytest.raises(ValueError, match=r"data holds the data-stream states \['process_0.bin', 'process_1.bin'\], "
                                         r"but this run has 1 process"):
        checkpoint.restore_latest(checkpoint.manager(workdir, c), c, ts.abstract_state(c, sharding.make_mesh(c)))
