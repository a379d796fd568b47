"""Checkpoint properties, each shown so that it fails when the promise breaks.

A run killed (SIGKILL) at a known step leaves its last complete checkpoint; the same command resumes from it (and
says so), never from a fresh initialisation, beside a save the kill cut short, and ends bit for bit where an
uninterrupted run ends: every logged loss, the parameters, the AdamW moments, the step and the data-stream state.
The same holds on the real mixture (a small corpus built here; the embedded corpus in the slow tier). SIGTERM
saves and exits. The mesh (8 -> 4 -> 1 devices), microbatches and remat may change on resume; a different run,
a damaged step or another number of processes is refused with nothing written.
"""

import io
import os
import shutil
import signal
import tarfile

import jax
import numpy as np
import pytest
from helpers import NOISE, files, hooked_streams, person_env, started, train_command, wait_until

from experiments.configs import debug
from llama_jax import sharding
from llama_jax.train import checkpoint
from llama_jax.train import loop as train_module
from llama_jax.train import step as ts
from llama_jax.train.loop import train
from llama_jax.train.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = debug.get_config().train.steps  # 16, a checkpoint every 5 steps
KILLED_AT = 7  # the killed run blocks after this step, its checkpoint of step 5 complete

# The stream that resumes: synthetic tokens; the real mixture on a small corpus built by the test session; the
# embedded corpus (`make test-slow` builds it first with `make corpus`).
SOURCES = ["synthetic", "mixture", pytest.param("embedded", marks=pytest.mark.slow)]


def overrides(source: str, corpus: str | None) -> dict[str, object]:
    """Config fields that differ from the debug config, for `source`."""
    if source == "synthetic":
        return {}
    vocab = 8192 if source == "embedded" else 1024  # `make corpus`'s tokenizer, the small corpus's
    return {"data.source": "mixture", "model.vocab_size": vocab, "data.corpus_dir": corpus,
            "data.shuffle_buffer": 16, "data.threads": 1, "train.eval_every": STEPS}


def config(source: str = "synthetic", corpus: str | None = None, **changes):
    c = debug.get_config().unlock()
    for path, value in {**overrides(source, corpus), **changes}.items():
        *parents, leaf = path.split(".")
        node = c
        for name in parents:
            node = node[name]
        node[leaf] = value
    return c.lock()


def losses_by_step(workdir: str) -> dict[int, float]:
    """The loss logged for each step."""
    return {r["step"]: r["loss"] for r in read_metrics(workdir) if "loss" in r}


def resumed_from(workdir: str) -> list[int]:
    """The checkpoint steps the runs in `workdir` resumed from, in order."""
    return [r["resumed_from"] for r in read_metrics(workdir) if "resumed_from" in r]


def logged_up_to(workdir: str, step: int) -> bool:
    return os.path.exists(os.path.join(workdir, "metrics.jsonl")) and max(losses_by_step(workdir), default=0) >= step


def final_state(workdir: str, c) -> tuple:
    """(TrainState on the host, data-stream state as {file: bytes}) of the workdir's latest checkpoint."""
    state, data = checkpoint.restore_latest(checkpoint.manager(workdir, c), c, ts.abstract_state(c, sharding.make_mesh(c)))
    if data[:1] == b"{":  # the synthetic stream's JSON counter
        return jax.device_get(state), {"state": data}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:  # the mixture's tar: compare its files
        return jax.device_get(state), {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def assert_same_final_state(a: str, b: str, c) -> None:
    """Bit for bit: step, parameters, AdamW moments and counts, rng, and every file of the data-stream state."""
    (state_a, data_a), (state_b, data_b) = final_state(a, c), final_state(b, c)
    assert int(state_a.step) == int(state_b.step) == STEPS
    jax.tree.map(np.testing.assert_array_equal, state_a, state_b)
    assert data_a.keys() == data_b.keys() and all(data_a[k] == data_b[k] for k in data_a), "data-stream states differ"


def refuse_fresh_initialisation(monkeypatch) -> None:
    def fresh(*args, **kwargs):
        raise AssertionError("a resumed run initialised a fresh state")

    monkeypatch.setattr(ts, "init_state", fresh)


@pytest.fixture(scope="module", params=SOURCES)
def source(request) -> tuple[str, str | None]:
    """(source, corpus directory)."""
    if request.param == "synthetic":
        return "synthetic", None
    if request.param == "mixture":
        return "mixture", request.getfixturevalue("small_corpus")
    embedded = os.path.join(ROOT, ".cache", "corpus")
    if not os.path.isfile(os.path.join(embedded, "manifest.json")):
        pytest.fail("the embedded corpus is missing: `make test-slow` builds it (`make corpus`) before the tests")
    return "embedded", embedded


@pytest.fixture(scope="module")
def runs(source, tmp_path_factory, request) -> dict[str, str]:
    """`kill_and_run` on `source` (the synthetic runs are shared with the tests that need only them)."""
    if source[0] == "synthetic":
        return request.getfixturevalue("synthetic_runs")
    return kill_and_run(*source, tmp_path_factory)


@pytest.fixture(scope="module")
def synthetic_runs(tmp_path_factory) -> dict[str, str]:
    return kill_and_run("synthetic", None, tmp_path_factory)


def kill_and_run(name: str, corpus: str | None, tmp_path_factory) -> dict[str, str]:
    """An uninterrupted run of STEPS steps, and the command killed (SIGKILL) after step KILLED_AT, both on source
    `name`. The command runs in another process, as a person starts it, while the uninterrupted run trains here;
    its data stream blocks after step KILLED_AT, so the kill lands at a known step, after the step-5 checkpoint."""
    tmp = tmp_path_factory.mktemp(f"runs_{name}")
    killed, uninterrupted, log = str(tmp / "killed"), str(tmp / "uninterrupted"), str(tmp / "killed.log")
    flags = [f"--config.{k}={v}" for k, v in overrides(name, corpus).items()]
    with started((train_command(killed, *flags, stop_at=KILLED_AT), log), env=person_env()) as (process,):
        train(config(name, corpus), uninterrupted)
        complete = os.path.join(killed, "checkpoints", "5")  # orbax renames a save into place once it is complete
        wait_until(lambda: logged_up_to(killed, KILLED_AT) and os.path.isdir(complete), process,
                   f"step {KILLED_AT} and the checkpoint of step 5")
        assert process.kill() == -signal.SIGKILL
    return {"uninterrupted": uninterrupted, "killed": killed, "console": process.stderr()}


def half_written_save(complete: str, into: str) -> None:
    """What a kill during orbax's asynchronous save leaves: the step's temporary directory, half of it written."""
    shutil.copytree(complete, into)
    for root, _, names in os.walk(into):
        for i, name in enumerate(sorted(names)):
            if name == "commit_success.txt" or i % 2:
                os.remove(os.path.join(root, name))


def test_a_killed_run_resumes_from_its_checkpoint_bit_for_bit_beside_a_save_cut_short(source, runs, tmp_path,
                                                                                         monkeypatch):
    name, corpus = source
    c = config(name, corpus)
    workdir = str(tmp_path / "workdir")
    shutil.copytree(runs["killed"], workdir)
    assert checkpoint.manager(workdir, c).all_steps() == [5]  # what the kill left: the step-5 checkpoint, complete
    assert max(losses_by_step(workdir)) == KILLED_AT
    cut_short = os.path.join(workdir, "checkpoints", "10.orbax-checkpoint-tmp")
    half_written_save(os.path.join(runs["uninterrupted"], "checkpoints", "10"), cut_short)

    refuse_fresh_initialisation(monkeypatch)
    train(c, workdir)  # the same command again

    assert resumed_from(workdir) == [5]
    assert [r["step"] for r in read_metrics(workdir) if "loss" in r] == list(range(1, STEPS + 1))  # each step once
    assert losses_by_step(workdir) == losses_by_step(runs["uninterrupted"])  # every step, exactly
    assert not os.path.exists(cut_short)  # the step-10 save was made again, complete
    assert_same_final_state(runs["uninterrupted"], workdir, c)
    if name != "synthetic":  # each metrics line carries the mixture as drawn so far: seven shares that sum to one
        last = [r for r in read_metrics(workdir) if "loss" in r][-1]
        shares = [v for k, v in last.items() if k.startswith("mixture/") and k.endswith("/share")]
        assert len(shares) == len(c.data.weights) and sum(shares) == pytest.approx(1.0)


def test_a_training_command_prints_no_library_noise(runs):
    """On a CPU machine with libtpu installed (the `tpu` extra): no TPU probing, no TensorFlow banners."""
    noise = [line for line in runs["console"].splitlines() if any(n in line for n in NOISE)]
    assert not noise, noise
    assert "resuming" not in runs["console"] and "starting at step 0" in runs["console"]


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path, monkeypatch):
    """SIGTERM (what a TPU VM receives before preemption) arrives while step 4's batch is fetched: step 4 completes,
    its checkpoint is saved and train() returns (the command exits 0)."""
    c = config(**{"checkpoint.every_steps": 1000})
    preempt = hooked_streams(train_module, 3, lambda: os.kill(os.getpid(), signal.SIGTERM))
    monkeypatch.setattr(train_module, "data_streams", preempt)
    train(c, str(tmp_path))
    assert checkpoint.manager(str(tmp_path), c).all_steps() == [4]
    assert max(losses_by_step(str(tmp_path))) == 4


def resume(workdir: str, monkeypatch, *, stop_after: int | None = None, devices=None, **changes) -> None:
    """Resume `workdir` with `changes` on `devices`, where a fresh initialisation is an error; with `stop_after`,
    SIGTERM stops it (checkpoint saved) after that many steps."""
    with monkeypatch.context() as patch:
        refuse_fresh_initialisation(patch)
        if stop_after is not None:
            preempt = hooked_streams(train_module, stop_after, lambda: os.kill(os.getpid(), signal.SIGTERM))
            patch.setattr(train_module, "data_streams", preempt)
        train(config(**changes), workdir, devices)


@pytest.mark.parametrize("change", [  # each change compiles other programs: two of them in the slow tier
    "devices 8 -> 4 -> 1",
    pytest.param("microbatches 1 -> 2", marks=pytest.mark.slow),
    pytest.param("remat none -> full", marks=pytest.mark.slow),
])
def test_the_mesh_microbatches_and_remat_may_change_on_resume(synthetic_runs, tmp_path, monkeypatch, change):
    """From the killed run's checkpoint (8 devices, step 5) to the end, with `change`: the uninterrupted run's
    losses to float32 rounding. None of the three is bit-exact: each is another XLA program, whose float32 sums
    run in another order (other shardings, microbatch sums, recomputation fused differently). Largest relative
    difference over the 11 resumed steps, measured on the 2-core CPU box (2026-11-26): 1.8e-7 for each change,
    about two float32 ulps of the loss; the tolerance is ten times that. An unchanged resume is exact (above).
    8 -> 4 -> 1: 4 devices up to step 10 (then SIGTERM), 1 device from there; 2 microbatches run on 4 devices
    (8 rows = 4 shards x 2 microbatches)."""
    workdir = str(tmp_path / "workdir")
    shutil.copytree(synthetic_runs["killed"], workdir)
    if change.startswith("devices"):
        resume(workdir, monkeypatch, stop_after=4, devices=jax.devices()[:4])
        resume(workdir, monkeypatch, devices=jax.devices()[:1])
        assert resumed_from(workdir) == [5, 10]
    elif change.startswith("microbatches"):  # 8 rows over 4 data-parallel devices x 2 microbatches
        resume(workdir, monkeypatch, devices=jax.devices()[:4], **{"train.microbatches": 2})
        assert resumed_from(workdir) == [5]
    else:
        resume(workdir, monkeypatch, **{"model.remat_policy": "full"})
        assert resumed_from(workdir) == [5]
    expected, resumed = losses_by_step(synthetic_runs["uninterrupted"]), losses_by_step(workdir)
    assert sorted(resumed) == sorted(expected)
    assert [resumed[s] for s in range(1, 6)] == [expected[s] for s in range(1, 6)]  # the killed run's, kept
    steps = sorted(expected)
    np.testing.assert_allclose([resumed[s] for s in steps], [expected[s] for s in steps], rtol=2e-6)


REFUSED = {  # a field that defines the run, and a value the run did not have
    "model.n_layers": 3,
    "optimizer.peak_lr": 1e-2,
    "optimizer.b2": 0.99,
    "train.steps": 20,
    "seed": 1,
    "train.global_batch_size": 16,
    "data.weights.arxiv": 0.02,  # with stackexchange 0.025: the two small sources swapped
    "data.sources.c4": "jsonl:/elsewhere/c4/{split}-*.jsonl",
}


@pytest.mark.parametrize("field", sorted(REFUSED))
def test_a_different_run_is_refused_with_nothing_written(synthetic_runs, tmp_path, field):
    workdir = str(tmp_path / "workdir")  # a copy: a run that went on would leave the shared one alone
    shutil.copytree(synthetic_runs["uninterrupted"], workdir)
    changes = {field: REFUSED[field]}
    if field == "data.weights.arxiv":
        changes["data.weights.stackexchange"] = 0.025
    before = files(workdir)
    with pytest.raises(ValueError, match=rf"different run.*{field.replace('.', '[.]')}: .* in the checkpoint"):
        train(config(**changes), workdir)
    assert files(workdir) == before  # the same files, sizes and modification times


def damage_state(step_dir: str) -> None:
    """Cut every array file of the step's state short."""
    for root, _, names in os.walk(os.path.join(step_dir, "state")):
        for name in names:
            if "ocdbt.process_" in root and os.sep + "d" in root:
                os.truncate(os.path.join(root, name), 10)


def garbage_data_state(step_dir: str) -> None:
    with open(os.path.join(step_dir, "data", "process_0.bin"), "wb") as f:
        f.write(os.urandom(64))


def another_process_count(step_dir: str) -> None:
    shutil.copy(os.path.join(step_dir, "data", "process_0.bin"), os.path.join(step_dir, "data", "process_1.bin"))


@pytest.mark.parametrize("damage,message", [
    (damage_state, r"checkpoints/16 cannot be restored \(.*\): it is damaged"),
    (garbage_data_state, r"checkpoints/16/data/process_0.bin cannot be restored \(.*\): it is damaged"),
    (another_process_count, r"checkpoints/16/data holds the data-stream states \['process_0.bin', 'process_1.bin'\], "
                            r"but this run has 1 process"),
], ids=["state cut short", "garbage data state", "another process count"])
def test_a_damaged_or_foreign_checkpoint_is_named_never_a_fresh_start(synthetic_runs, tmp_path, damage, message,
                                                                       monkeypatch):
    workdir = str(tmp_path / "workdir")
    shutil.copytree(synthetic_runs["uninterrupted"], workdir)
    damage(os.path.join(workdir, "checkpoints", "16"))
    before = files(workdir)
    refuse_fresh_initialisation(monkeypatch)
    with pytest.raises(ValueError, match=message) as refused:
        train(config(), workdir)
    assert files(workdir) == before
    if damage is garbage_data_state:  # the error's way on: move the step aside, resume from the previous one
        assert "to resume from step 15" in str(refused.value)
        shutil.move(os.path.join(workdir, "checkpoints", "16"), str(tmp_path / "16.damaged"))
        train(config(), workdir)
        assert resumed_from(workdir)[-1] == 15
        assert losses_by_step(workdir) == losses_by_step(synthetic_runs["uninterrupted"])


def test_restore_onto_smaller_meshes(synthetic_runs):
    """Saved from 8 devices (fsdp=8); restored onto 4 devices and onto 1, with the same values."""
    c = config()
    restored = {}
    for n in (4, 1):
        mesh = sharding.make_mesh(c, jax.devices()[:n])
        workdir = synthetic_runs["uninterrupted"]
        state, _ = checkpoint.restore_latest(checkpoint.manager(workdir, c), c, ts.abstract_state(c, mesh))
        assert state.params["output"].sharding.mesh.devices.size == n
        restored[n] = jax.device_get(state)
    assert int(restored[1].step) == STEPS
    jax.tree.map(np.testing.assert_array_equal, restored[4], restored[1])
