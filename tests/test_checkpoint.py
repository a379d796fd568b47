"""Checkpoint properties: a run killed at any step resumes bit for bit; SIGTERM saves and exits cleanly; a
checkpoint restores onto a smaller mesh; a different run never overwrites a workdir's checkpoints."""

import os
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from experiments.configs import debug
from llama_jax import checkpoint, sharding
from llama_jax import train_step as ts
from llama_jax.metrics import read_metrics
from llama_jax.train import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = debug.get_config().train.steps


# The stream that resumes: synthetic tokens always; the real mixture (TensorFlow) in the slow tier, once
# `make corpus` has built the embedded corpus.
SOURCES = [
    "synthetic",
    pytest.param(
        "mixture",
        marks=[
            pytest.mark.slow,
            pytest.mark.skipif(not os.path.isdir(os.path.join(ROOT, ".cache", "corpus")), reason="run `make corpus`"),
        ],
    ),
]
OVERRIDES = {"synthetic": (), "mixture": ("--config.data.source=mixture", "--config.model.vocab_size=8192")}


def config(source: str = "synthetic"):
    c = debug.get_config().unlock()
    if source == "mixture":
        c.data.source = "mixture"
        c.model.vocab_size = 8192  # the embedded corpus's tokenizer
    return c.lock()


def losses_by_step(workdir: str) -> dict[int, float]:
    """The loss logged for each step."""
    return {r["step"]: r["loss"] for r in read_metrics(workdir) if "loss" in r}


def launch(workdir: str, *overrides: str) -> subprocess.Popen:
    """`python -m llama_jax.train` on the debug config, with this test session's 8 fake devices."""
    command = [sys.executable, "-m", "llama_jax.train", "--config=experiments/configs/debug.py", f"--workdir={workdir}"]
    command += list(overrides)
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_step(workdir: str, process: subprocess.Popen, step: int, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if os.path.exists(os.path.join(workdir, "metrics.jsonl")) and max(losses_by_step(workdir), default=0) >= step:
            return
        time.sleep(0.01)
    raise AssertionError(f"run did not reach step {step}: {process.poll()=} {process.stderr.read()[-2000:]}")


@pytest.fixture(scope="module", params=SOURCES)
def source(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def uninterrupted(source, tmp_path_factory) -> str:
    """The workdir of a run of STEPS steps that nothing interrupted (checkpoints every 5 steps)."""
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    train(config(source), workdir)
    return workdir


def test_run_killed_at_any_step_resumes_bit_for_bit(source, uninterrupted, tmp_path):
    workdir = str(tmp_path)
    process = launch(workdir, *OVERRIDES[source])
    wait_for_step(workdir, process, 7)  # past the step-5 checkpoint, within the next interval
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    killed_at = max(losses_by_step(workdir))
    assert killed_at < STEPS, "the run finished before it could be killed"
    train(config(source), workdir)  # the same command again: resumes from the latest checkpoint
    expected, resumed = losses_by_step(uninterrupted), losses_by_step(workdir)
    steps = [r["step"] for r in read_metrics(workdir) if "loss" in r]
    assert steps == sorted(expected)  # each step logged once: what the killed run logged past step 5 is dropped
    assert [resumed[s] for s in sorted(resumed)] == [expected[s] for s in sorted(expected)]  # exact equality


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    workdir = str(tmp_path)

    def preempt_after_step_3():
        while not os.path.exists(os.path.join(workdir, "metrics.jsonl")) or max(losses_by_step(workdir)) < 3:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)  # what a TPU VM receives before preemption

    c = config().unlock()
    c.checkpoint.every_steps = 1000
    threading.Thread(target=preempt_after_step_3, daemon=True).start()
    train(c.lock(), workdir)  # returns instead of dying: the command exits with status 0
    saved = checkpoint.manager(workdir, c).latest_step()
    assert saved is not None and 3 <= saved < STEPS
    assert saved == max(losses_by_step(workdir))


def test_restore_onto_smaller_meshes(source, uninterrupted):
    """Saved from 8 devices (fsdp=8); restored onto 4 devices and onto 1, with the same values."""
    c = config(source)
    restored = {}
    for n in (4, 1):
        mesh = sharding.make_mesh(c, jax.devices()[:n])
        state, data_state = checkpoint.restore_latest(
            checkpoint.manager(uninterrupted, c), c, ts.abstract_state(c, mesh)
        )
        assert state.params["output"].sharding.mesh.devices.size == n
        restored[n] = jax.device_get(state)
    assert int(restored[1].step) == STEPS
    jax.tree.map(np.testing.assert_array_equal, restored[4], restored[1])


def test_a_different_run_never_overwrites_the_checkpoint(source, uninterrupted):
    c = config(source).unlock()
    c.optimizer.peak_lr = 1e-2
    before = sorted(os.listdir(os.path.join(uninterrupted, "checkpoints")))
    with pytest.raises(ValueError, match=r"different run.*optimizer.peak_lr: 0.003 in the checkpoint, 0.01 now"):
        train(c.lock(), uninterrupted)
    assert sorted(os.listdir(os.path.join(uninterrupted, "checkpoints"))) == before
