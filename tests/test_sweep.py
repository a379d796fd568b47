"""Sweeps: strict specs and deterministic names, locked run configs with steps = tokens / batch, the paper grid,
the CPU study's design, warmup-stable-decay branches that equal runs from scratch, and a sweep killed mid-way
that finishes with the uninterrupted sweep's results."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments import launch, spec, sweep
from experiments.configs.common import TABLE2
from llama_jax.perf import aot
from llama_jax.train import checkpoint, optim
from llama_jax.train.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "experiments", "configs")
DEBUG_SWEEP = os.path.join(CONFIGS, "debug_sweep.py")


# ------------------------------------------------------------------------------------------------------ specs
def test_spec_names_are_deterministic():
    assert spec.parse("size=7b,tokens=1e12").name == "7b_1T"
    assert spec.parse("size=65b,tokens=1.4e12").name == "65b_1.4T"
    assert spec.parse("size=7b,tokens=2e11,lr=3e-4,stable", knobs=("lr",), flags=("stable",)).name == "7b_200B_lr0.0003_stable"
    assert spec.parse("size=d48l2,tokens=550000").name == "d48l2_550k"


@pytest.mark.parametrize("arg,message", [
    ("size=9b,tokens=1e12", r"unknown size '9b'; this sweep has sizes \['7b'\]"),
    ("size=7b,tokens=lots", r"tokens='lots' is not a number"),
    ("size=7b,tokens=-5", r"tokens='-5' must be a positive number"),
    ("size=7b,tokens=1e12,lr=1e-3", r"unknown key 'lr'; this sweep knows size, tokens"),
    ("size=7b,tokens=1e12,fast", r"'fast' is not a key=value item or a flag"),
    ("size=7b", r"lacks tokens"),
])
def test_bad_specs_are_one_line_errors(arg, message):
    with pytest.raises(ValueError, match=message):
        spec.parse(arg, sizes=["7b"])


def test_sweep_files_reject_bad_specs_through_get_config():
    module = sweep.load(os.path.join(CONFIGS, "paper_sweep.py"))
    with pytest.raises(ValueError, match="unknown size '70b'"):
        module.get_config("size=70b,tokens=1e12")
    with pytest.raises(ValueError, match="is not a number"):
        module.get_config("size=7b,tokens=1T")


# ------------------------------------------------------------------------------------------------ expansion
def test_paper_sweep_is_table_2_in_4m_token_batches():
    runs = sweep.expand(os.path.join(CONFIGS, "paper_sweep.py"))
    names = [run.name for run in runs]
    assert names[:5] == ["7b_200B", "7b_400B", "7b_600B", "7b_800B", "7b_1T"]
    assert names[-1] == "65b_1.4T" and len(runs) == 5 + 5 + 7 + 7
    for run in runs:
        c = run.config
        assert c.is_locked
        assert c.train.global_batch_size * c.train.seq_len == 4 * 2**20
        tokens = run.parsed.tokens
        assert c.train.steps == round(tokens / 4 / 2**20)
        assert c.optimizer.peak_lr == TABLE2[c.model_preset][0] and c.optimizer.schedule == "cosine"
        assert run.branch is None
    with pytest.raises(AttributeError):  # locked: a mistyped field is an error
        runs[0].config.train.stpes = 3


def test_cpu_study_design():
    from experiments.configs import cpu_sweep

    runs = sweep.expand(os.path.join(CONFIGS, "cpu_sweep.py"))
    rows = {run.name: sweep.describe(run, {}) for run in runs}
    by_size: dict[str, list] = {}
    for run in runs:
        row = rows[run.name]
        assert row["non_embedding_params"] == cpu_sweep.NON_EMBEDDING[run.parsed.size]
        assert run.config.train.steps == round(row["tokens"] / (32 * 128))
        if "stable" not in run.name:
            by_size.setdefault(run.parsed.size, []).append(row["tokens_per_param"])
            # every budget is a cooldown branched from its size's stable phase, at its own cooldown start
            source, step = run.branch
            assert source.endswith("_stable") and step == optim.cooldown_start(run.config)
            assert step in next(r for r in runs if r.name == source).config.checkpoint.keep_steps
    sizes = sorted(cpu_sweep.NON_EMBEDDING.values())
    assert len(sizes) >= 4 and sizes[-1] / sizes[0] >= 10
    smallest = min(by_size, key=cpu_sweep.NON_EMBEDDING.get)
    assert max(by_size[smallest]) >= 100
    for ratios in by_size.values():  # from below to well above Chinchilla's 20 tokens per parameter
        assert min(ratios) < 20 and max(ratios) >= 39 and len(ratios) >= 4


def test_the_study_tokenizer_is_kept_for_its_corpus_and_retrained_for_a_rebuilt_one(small_corpus, tmp_path):
    import shutil

    from experiments import study_tokenizer as tokenizer

    corpus_dir = shutil.copytree(small_corpus, tmp_path / "corpus")
    path = tokenizer.build(str(corpus_dir), str(tmp_path / "study" / "tok"), vocab_size=600)
    trained = os.path.getmtime(path)
    assert tokenizer.build(str(corpus_dir), str(tmp_path / "study" / "tok"), vocab_size=600) == path
    assert os.path.getmtime(path) == trained  # same corpus, same size: kept
    manifest_path = corpus_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["sources"]["books"]["splits"]["train"]["shards"][0]["sha256"] = "0" * 64  # a rebuilt corpus
    manifest_path.write_text(json.dumps(manifest))
    os.utime(path, (0, 0))
    tokenizer.build(str(corpus_dir), str(tmp_path / "study" / "tok"), vocab_size=600)
    assert os.path.getmtime(path) != 0  # retrained
    with pytest.raises(ValueError, match="inside the corpus"):
        tokenizer.build(str(corpus_dir), str(corpus_dir / "tok"), vocab_size=600)


def test_unknown_sweep_file_and_bad_only_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sweep.expand(str(tmp_path / "nope.py"))
    not_a_sweep = tmp_path / "plain.py"
    not_a_sweep.write_text("def get_config():\n    return None\n")
    with pytest.raises(ValueError, match="lacks sweep, data_tokens"):
        sweep.expand(str(not_a_sweep))
    with pytest.raises(ValueError, match="matches none of the runs"):
        sweep.expand(DEBUG_SWEEP, only="65b")


def test_only_keeps_the_runs_a_match_branches_from():
    runs = sweep.expand(DEBUG_SWEEP, only="2.56k")
    assert [run.name for run in runs] == ["debug_3.84k_stable", "debug_2.56k"]


def _collected_table(path, rows) -> str:
    header = "sweep,run,step,loss,finished\n"
    path.write_text(header + "".join(f"{sweep_name},{run},10,3.0,{finished}\n" for sweep_name, run, finished in rows))
    return str(path)


def test_a_study_continued_in_a_fresh_clone_trains_only_what_its_table_lacks(tmp_path):
    table = _collected_table(tmp_path / "results.csv", [
        ("debug_sweep", "debug_3.84k_stable", True), ("debug_sweep", "debug_2.56k", True),
        ("debug_sweep", "debug_5.12k", False),  # a run collected before it finished is trained again
        ("other_sweep", "debug_5.12k", True)])   # another sweep's run of the same name is not this one
    assert sweep.collected_runs(table, "debug_sweep") == {"debug_3.84k_stable", "debug_2.56k"}
    runs = sweep.expand(DEBUG_SWEEP)
    # debug_5.12k branches from the stable phase, whose checkpoint a table does not hold: it trains again
    assert [r.name for r in sweep.without_collected(runs, {"debug_3.84k_stable", "debug_2.56k"})] == [
        "debug_3.84k_stable", "debug_5.12k"]
    assert [r.name for r in sweep.without_collected(runs, {"debug_3.84k_stable", "debug_2.56k", "debug_5.12k"})] == []
    assert [r.name for r in sweep.without_collected(runs, {"debug_2.56k"})] == ["debug_3.84k_stable", "debug_5.12k"]
    out = subprocess.run([*_sweep_command(str(tmp_path)), "--dry-run", f"--skip-collected={table}"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "1 of 3 runs already in" in out and "debug_2.56k " not in out and "debug_5.12k" in out


def test_a_missing_or_foreign_table_to_skip_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such results table"):
        sweep.collected_runs(str(tmp_path / "nope.csv"), "debug_sweep")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="lacks the columns"):
        sweep.collected_runs(str(tmp_path / "other.csv"), "debug_sweep")


# ------------------------------------------------------------------------------------------- the schedule
def test_wsd_schedule_is_warmup_then_peak_then_one_minus_sqrt_to_the_end_value():
    c = sweep.load(DEBUG_SWEEP).get_config("size=debug,tokens=5120").unlock()  # 40 steps, cooldown 10
    c.optimizer.final_lr_fraction = 0.1
    lr = optim.learning_rate_schedule(c)
    peak, end = 3e-3, 3e-4
    np.testing.assert_allclose([lr(0), lr(2), lr(4), lr(20), lr(30)], [0, peak / 2, peak, peak, peak], rtol=1e-6)
    np.testing.assert_allclose(lr(35), end + (peak - end) * (1 - np.sqrt(0.5)), rtol=1e-6)
    np.testing.assert_allclose(lr(40), end, rtol=1e-6)
    assert optim.cooldown_start(c) == 30


def test_wsd_runs_of_any_length_share_their_stable_phase():
    module = sweep.load(DEBUG_SWEEP)
    short, long = (optim.learning_rate_schedule(module.get_config(f"size=debug,tokens={t}")) for t in (2560, 5120))
    steps = np.arange(16)  # up to the shorter run's cooldown start (step 15), which is still exactly the peak
    assert np.array_equal(np.asarray(short(steps)), np.asarray(long(steps)))
    assert float(short(16)) < float(long(16))


def test_a_cooldown_fraction_outside_the_run_is_an_error():
    c = sweep.load(DEBUG_SWEEP).get_config("size=debug,tokens=2560").unlock()
    c.optimizer.cooldown_fraction = 0.9  # would start at step 2, inside the 4 warmup steps
    with pytest.raises(ValueError, match="inside the 4 warmup steps"):
        optim.learning_rate_schedule(c)


# --------------------------------------------------------------------------------------------- topologies
@pytest.mark.parametrize("cloud,libtpu,chips", [
    ("v5p-8", "v5p:2x2x1", 4), ("v5p-128", "v5p:4x4x4", 64), ("v5p-512", "v5p:4x8x8", 256),
    ("v5p-2048", "v5p:8x8x16", 1024), ("v4-2048", "v4:8x8x16", 1024), ("v5litepod-16", "v5e:4x4", 16),
    ("v6e-256", "v6e:16x16", 256),
])
def test_cloud_and_libtpu_topology_names_convert_both_ways(cloud, libtpu, chips):
    from_cloud, from_libtpu = aot.parse_topology(cloud), aot.parse_topology(libtpu)
    assert from_cloud == from_libtpu and from_cloud.chips == chips
    assert from_cloud.libtpu_name == libtpu and from_libtpu.cloud_name == cloud


@pytest.mark.parametrize("name", ["v5p-12", "v9-8", "v5p:4x", "tpu"])
def test_bad_topology_names_are_clear_errors(name):
    with pytest.raises(ValueError, match="topology="):
        aot.parse_topology(name)


# ---------------------------------------------------------------------------- branches and interrupted sweeps
def _final_losses(root: str) -> dict[str, float]:
    out = {}
    for run in sweep.expand(DEBUG_SWEEP):
        records = read_metrics(run.workdir(root))
        out[run.name] = [r["loss"] for r in records if "loss" in r][-1]
        out[run.name + "/eval"] = [r["eval/synthetic/loss"] for r in records if "eval/synthetic/loss" in r][-1]
    return out


def _sweep_command(root: str) -> list[str]:
    return [sys.executable, "-m", "experiments.sweep", f"--config={DEBUG_SWEEP}", f"--workdir={root}"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> str:
    """The debug sweep run once, start to end (also the workdirs tests/test_collect.py reads)."""
    root = str(tmp_path_factory.mktemp("sweep"))
    subprocess.run(_sweep_command(root), cwd=ROOT, check=True, capture_output=True)
    return root


@pytest.mark.slow  # 70 s: make test-slow
def test_a_sweep_killed_mid_way_finishes_with_the_same_results(uninterrupted, tmp_path):
    root = str(tmp_path)
    trunk = f"{root}/debug_sweep/debug_3.84k_stable"
    sweeper = subprocess.Popen(_sweep_command(root), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill the sweep (SIGKILL: no clean-up of its own) once the stable phase has its first checkpoint.
    while launch.latest_step(trunk) is None and sweeper.poll() is None:
        time.sleep(0.2)
    sweeper.send_signal(signal.SIGKILL)
    sweeper.wait()
    # The training process it started learns of its parent's death (SIGTERM), saves and stops.
    deadline = time.time() + 120
    while any(p for p in _train_processes(trunk)) and time.time() < deadline:
        time.sleep(0.2)
    assert not _train_processes(trunk)
    subprocess.run(_sweep_command(root), cwd=ROOT, check=True, capture_output=True)
    assert _final_losses(root) == _final_losses(uninterrupted)
    rerun = subprocess.run(_sweep_command(root), cwd=ROOT, check=True, capture_output=True, text=True)
    assert rerun.stdout.count("finished, skipped") == 3  # a finished sweep trains nothing again


def test_a_sweep_trained_in_one_process_gives_the_same_results_and_logs(uninterrupted, tmp_path):
    root = str(tmp_path)
    done = subprocess.run([*_sweep_command(root), "--runner=inline"], cwd=ROOT, check=True, capture_output=True,
                          text=True)
    assert _final_losses(root) == _final_losses(uninterrupted)  # the cooldown branches too, bit for bit
    assert "train step compiled" not in done.stdout + done.stderr  # the runs' logs are in their train.log files
    timing = {run.name: [json.loads(line) for line in open(f"{run.workdir(root)}/timing.jsonl")]
              for run in sweep.expand(DEBUG_SWEEP)}
    for name, lines in timing.items():
        assert len(lines) == 1
        assert "train step compiled" in open(f"{root}/debug_sweep/{name}/train.log").read()
    # the process's start and imports are charged once, to the first run it trained
    assert timing["debug_3.84k_stable"][0]["start_s"] > 0
    assert timing["debug_2.56k"][0]["start_s"] == timing["debug_5.12k"][0]["start_s"] == 0
    rerun = subprocess.run([*_sweep_command(root), "--runner=inline"], cwd=ROOT, check=True, capture_output=True,
                           text=True)
    assert rerun.stdout.count("finished, skipped") == 3


def _train_processes(workdir: str) -> list[str]:
    """PIDs of live processes training in `workdir`."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f"--workdir={workdir}".encode() in f.read():
                    found.append(pid)
        except OSError:
            continue
    return found


def test_a_cooldown_branch_equals_the_same_run_from_scratch(uninterrupted, tmp_path):
    from llama_jax.train.loop import train

    config = sweep.load(DEBUG_SWEEP).get_config("size=debug,tokens=2560")
    scratch = train(config, str(tmp_path))
    branched = [r for r in read_metrics(f"{uninterrupted}/debug_sweep/debug_2.56k") if "loss" in r][-1]
    assert scratch["loss"] == branched["loss"] and scratch["grad_norm"] == branched["grad_norm"]


def test_a_branch_refuses_a_source_whose_learning_rates_differ(uninterrupted, tmp_path):
    from llama_jax import sharding
    from llama_jax.train import step as ts

    config = sweep.load(DEBUG_SWEEP).get_config("size=debug,tokens=2560").unlock()
    config.optimizer.peak_lr = 1e-3  # defines the run: refused outright
    config.lock()
    target = ts.abstract_state(config, sharding.make_mesh(config))
    with pytest.raises(ValueError, match="optimizer.peak_lr"):
        checkpoint.restore_branch(f"{uninterrupted}/debug_sweep/debug_3.84k_stable", 15, config, target)
    config = sweep.load(DEBUG_SWEEP).get_config("size=debug,tokens=5120").unlock()
    config.optimizer.cooldown_fraction = 0.5  # cooldown from step 20: the stable phase's step 15 differs nowhere,
    config.lock()                            # but its checkpoint at 30 is past this run's cooldown start, whose
    with pytest.raises(ValueError, match="learning rate at step 21"):  # step 20 is still the peak, 21 lower
        checkpoint.restore_branch(f"{uninterrupted}/debug_sweep/debug_3.84k_stable", 30, config, target)
    with pytest.raises(FileNotFoundError, match="no checkpoint of step 12"):
        checkpoint.restore_branch(f"{uninterrupted}/debug_sweep/debug_3.84k_stable", 12, config, target)


# ------------------------------------------------------------------------------------------------ collection
def test_collect_gives_one_row_per_run_and_logged_step(uninterrupted):
    from experiments import collect

    rows = collect.collect(f"{uninterrupted}/debug_sweep")
    assert {row["run"] for row in rows} == {"debug_3.84k_stable", "debug_2.56k", "debug_5.12k"}
    stable = [row for row in rows if row["run"] == "debug_3.84k_stable"]
    assert [row["step"] for row in stable] == [5, 10, 15, 20, 25, 30]  # log_every 5; evaluations merged in
    assert all(row["tokens"] == row["step"] * 8 * 16 for row in rows)
    assert all(not row["annealed"] and row["finished"] for row in stable)
    branch = [row for row in rows if row["run"] == "debug_5.12k"]
    assert [row["step"] for row in branch] == [35, 40] and branch[-1]["branch"] == "debug_3.84k_stable@30"
    assert branch[-1]["annealed"] and branch[-1]["finished"] and "eval/synthetic/loss" in branch[-1]
    assert branch[-1]["params"] == 139_584 and branch[-1]["non_embedding_params"] == 139_584 - 2 * 256 * 64
    assert branch[-1]["flops"] == pytest.approx(branch[-1]["tokens"] * 6 * (139_584 - 256 * 64), rel=0.05)


def test_collect_reads_a_half_written_line_and_a_run_without_run_json(uninterrupted, tmp_path):
    import shutil

    from experiments import collect, scaling

    copy = tmp_path / "debug_sweep"
    shutil.copytree(f"{uninterrupted}/debug_sweep", copy)
    with open(copy / "debug_2.56k" / "metrics.jsonl", "a") as f:
        f.write('{"step": 21, "loss": 3.')  # a run killed mid-write
    (copy / "debug_5.12k" / "run.json").unlink()  # launched by hand: the checkpoint's config is read instead
    rows = collect.collect(str(copy))
    assert max(row["step"] for row in rows if row["run"] == "debug_2.56k") == 20
    assert [row for row in rows if row["run"] == "debug_5.12k"][-1]["finished"]
    n, d, loss, notes = scaling.final_points(scaling.read_csv_text(collect.to_csv(rows)))
    assert sorted(d.tolist()) == [2560, 5120] and notes == ["dropped 1 run(s) not annealed: debug_3.84k_stable"]


def test_collect_command_never_overwrites_and_names_a_missing_sweep(uninterrupted, tmp_path):
    out = tmp_path / "results.csv"
    command = [sys.executable, "-m", "experiments.collect", f"--sweep={uninterrupted}/debug_sweep", f"--out={out}"]
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert first.returncode == 0 and "rows of 3 runs" in first.stdout
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 1 and "exists; pass --overwrite" in again.stderr
    missing = subprocess.run(command[:3] + [f"--sweep={tmp_path}/nothing"], cwd=ROOT, capture_output=True, text=True)
    assert missing.returncode == 1 and missing.stderr.startswith("error: --sweep=") and "is not a directory" in missing.stderr
