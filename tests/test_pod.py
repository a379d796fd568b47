"""TPU pods without a cloud: `python -m experiments.sweep --launch=tpu|xpk` against the scripted gcloud and xpk of
tests/fake_cloud.py. A slice that takes several polls to come up, training started detached (the launcher exits,
the run goes on, `--status` from a new process finds it), a preemption mid-run that `--watch` recovers from by
recreating the slice, with a real resume on this machine's CPU devices (the losses of an uninterrupted run), a
quota failure as one error line, a dry run that prints every command the run executed, and xpk workloads."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest
from fake_cloud import FakeCloud, free_job_id
from helpers import DEADLINE_S

from experiments import launch, pod, runs, sweep
from llama_jax.perf import aot
from llama_jax.train.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIT_CACHE = os.path.join(ROOT, "tests", "data", "aot_fit_debug_v5p-8.jsonl")  # llama_jax.aot's fits of the debug model
RUN = "debug_10.24k"  # 80 steps of 128 tokens
# The tests' sweep: one debug-model run, long enough that a preemption lands between two of its checkpoints.
SWEEP_FILE = '''"""One debug-model run of 80 steps, a checkpoint every 10."""

from experiments import spec
from experiments.configs.common import base_config


def get_config(arg="size=debug,tokens=10240"):
    s = spec.parse(arg, sizes={"debug": 64})
    c = base_config("debug")
    c.data.source = "synthetic"
    c.train.seq_len, c.train.global_batch_size = 16, 8
    c.train.steps = spec.steps_for(s.tokens, 8, 16)
    c.train.log_every, c.train.eval_every, c.train.eval_batches = 1, 1000, 1
    c.optimizer.peak_lr, c.optimizer.warmup_steps = 3e-3, 4
    c.checkpoint.every_steps = 10
    c.lock()
    return c


def sweep():
    return ["size=debug,tokens=10240"]


def data_tokens(config):
    return {}
'''
STOP = 15  # the first slice's training waits after this step for its preemption (tests/fake_cloud.py)
SLOW_SLICE = ["CREATING", "WAITING_FOR_RESOURCES", "WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE"]
QUOTA = ("Quota limit 'TPUV5PPodPerProjectPerZoneForTPUAPI' has been exceeded. Limit: 0 in zone us-east5-a. "
         "Please submit a quota increase request.")


def git(*args: str, cwd: str = ROOT) -> str:
    return subprocess.run(["git", "-C", cwd, *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> str:
    """A clone of this checkout at a commit of its working tree's tracked files (`git stash create`: the checkout
    is not touched), so that the launcher ships exactly the code under test from a clean tree."""
    snapshot = git("stash", "create") or git("rev-parse", "HEAD")
    clone = str(tmp_path_factory.mktemp("repo") / "llama_jax")
    subprocess.run(["git", "clone", "-q", "--shared", ROOT, clone], check=True)
    git("checkout", "-q", "--detach", snapshot, cwd=clone)
    return clone


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("experiment") / "pod_sweep.py"
    path.write_text(SWEEP_FILE)
    return str(path)


def cli(repo: str, fake: FakeCloud, *args: str, fit_cache: str) -> subprocess.CompletedProcess:
    """`python -m experiments.sweep ARGS` run from the clone, with the fake cloud first on PATH."""
    command = [sys.executable, "-m", "experiments.sweep", f"--fit_cache={fit_cache}", "--poll_s=0.05", *args]
    return subprocess.run(command, cwd=repo, env=fake.env(PYTHONPATH=repo), capture_output=True, text=True,
                          timeout=DEADLINE_S)


def tpu_args(sweep_file: str, root: str, *extra: str) -> list[str]:
    return [f"--config={sweep_file}", "--launch=tpu", "--topology=v5p-8", "--tpu=pod", "--zone=us-east5-a",
            f"--workdir={root}", *extra]


def launcher_calls(fake: FakeCloud) -> list[list[str]]:
    """The calls this machine made (the workers' own gcloud calls left out)."""
    return [call[1:] for call in fake.calls() if call[0] == "launcher"]


def wait_for(condition, what: str, worker_home: str, log: str) -> None:
    """Poll `condition`; fail with the worker's log when its script ended first (or at the safety deadline)."""
    deadline, pid_file = time.monotonic() + DEADLINE_S, os.path.join(worker_home, "llama_jax", "pod.pid")
    while not condition():
        ended = not os.path.exists(f"/proc/{open(pid_file).read().strip()}") if os.path.exists(pid_file) else False
        if ended or time.monotonic() > deadline:
            tail = open(log).read()[-3000:] if os.path.exists(log) else "(no log)"
            raise AssertionError(f"no {what}: {'the worker script ended' if ended else 'deadline'}; its log: {tail}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def preempted_sweep(repo, sweep_file, tmp_path_factory):
    """The whole story on one slice: launch (a slow slice), the launcher exits, status from new processes, a
    preemption mid-run, `--watch` until the run finished and its slice is deleted."""
    tmp = tmp_path_factory.mktemp("pod")
    fit_cache = str(tmp / "fits.jsonl")
    shutil.copy(FIT_CACHE, fit_cache)
    commit = git("rev-parse", "HEAD", cwd=repo)
    fake = FakeCloud(tmp, {"queued_resources": {"pod": [SLOW_SLICE, ["PROVISIONING", "ACTIVE"]]}},
                     worker_env={f"env-{pod.lock_hash(commit, repo)}": sys.executable}, preempt_after={"pod": STOP})
    root = str(tmp / "bucket")
    workdir = f"{root}/pod_sweep/{RUN}"
    out = {"fake": fake, "root": root, "workdir": workdir, "commit": commit, "repo": repo, "fit_cache": fit_cache}
    try:
        out["launch"] = cli(repo, fake, *tpu_args(sweep_file, root, "--execute", "--spot"), fit_cache=fit_cache)
        assert out["launch"].returncode == 0, out["launch"].stderr
        out["calls_at_launch"] = launcher_calls(fake)
        home = fake.worker_homes("pod")[0]
        wait_for(lambda: os.path.exists(f"{workdir}/metrics.jsonl") and any(
            r.get("step") == STOP for r in read_metrics(workdir)), f"step {STOP}", home,
            os.path.join(home, "llama_jax", f"{RUN}.worker-0.log"))
        out["status_training"] = cli(repo, fake, *tpu_args(sweep_file, root, "--status"), fit_cache=fit_cache)
        fake.preempt("pod")
        out["step_at_preemption"] = launch.latest_step(workdir)
        out["status_preempted"] = cli(repo, fake, *tpu_args(sweep_file, root, "--status"), fit_cache=fit_cache)
        out["watch"] = cli(repo, fake, *tpu_args(sweep_file, root, "--execute", "--watch", "--spot"),
                           fit_cache=fit_cache)
        assert out["watch"].returncode == 0, out["watch"].stderr
        out["status_finished"] = cli(repo, fake, *tpu_args(sweep_file, root, "--status"), fit_cache=fit_cache)
        yield out
    finally:
        fake.shutdown()


def test_a_slow_slice_is_polled_until_active_then_training_starts_detached(preempted_sweep):
    calls = preempted_sweep["calls_at_launch"]
    verbs = [" ".join(call[:5]) for call in calls]
    create = next(call for call in calls if call[:5] == ["gcloud", "compute", "tpus", "queued-resources", "create"])
    assert "--spot" in create and "--accelerator-type=v5p-8" in create and "--node-id=pod" in create
    created, ssh = verbs.index(" ".join(create[:5])), verbs.index("gcloud compute tpus tpu-vm ssh")
    describes = [v for v in verbs[created:ssh] if v.endswith("queued-resources describe")]
    assert len(describes) == len(SLOW_SLICE)  # every state passed through, started on the first ACTIVE
    assert verbs.count("gcloud compute tpus tpu-vm ssh") == 1
    # The launcher returned: the run went on without it, and a new process reads its progress.
    status = preempted_sweep["status_training"]
    assert status.returncode == 0, status.stderr
    line = next(line for line in status.stdout.splitlines() if line.startswith(RUN))
    assert line == f"{RUN}  pod  training {RUN} at step {STOP}"


def test_a_preempted_slice_is_recreated_and_the_run_resumes_exactly(preempted_sweep, sweep_file):
    steps = sweep.load(sweep_file).get_config().train.steps
    assert preempted_sweep["step_at_preemption"] == STOP + 1 < steps  # its checkpoint at the preemption
    assert "preempted (SUSPENDED by the service)" in preempted_sweep["status_preempted"].stdout
    watch_calls = launcher_calls(preempted_sweep["fake"])[len(preempted_sweep["calls_at_launch"]):]
    verbs = [" ".join(call[:5]) for call in watch_calls if call[:2] == ["gcloud", "compute"]]
    deletes = [i for i, v in enumerate(verbs) if v.endswith("delete")]
    assert len(deletes) == 2  # the preempted slice, then the finished run's
    after = [v for v in verbs[deletes[0] + 1:deletes[1]] if not v.endswith("describe")]
    assert after == ["gcloud compute tpus queued-resources create", "gcloud compute tpus tpu-vm ssh"]
    assert preempted_sweep["fake"].state()["queued_resources"] == {}  # nothing left running
    assert f"{RUN}  pod  finished" in preempted_sweep["status_finished"].stdout
    # The resumed run is the uninterrupted one: the same loss at every step.
    records = read_metrics(preempted_sweep["workdir"])
    assert {"step": preempted_sweep["step_at_preemption"], "resumed_from": preempted_sweep["step_at_preemption"]} \
        .items() <= next(r for r in records if "resumed_from" in r).items()
    # The uninterrupted run: the workers' own command, in a one-process cluster as theirs was.
    reference = os.path.join(os.path.dirname(preempted_sweep["root"]), "uninterrupted")
    config = f"--config={sweep_file}:{sweep.load(sweep_file).sweep()[0]}"
    env = {**os.environ, "SLURM_JOB_ID": str(free_job_id()), "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": "1",
           "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "PYTHONPATH": preempted_sweep["repo"]}
    subprocess.run([sys.executable, "-m", "llama_jax.train", "--multihost", config, f"--workdir={reference}"],
                   cwd=preempted_sweep["repo"], env=env, check=True, capture_output=True, timeout=DEADLINE_S)
    losses = [(r["step"], r["loss"]) for r in records if "loss" in r]
    assert [s for s, _ in losses] == list(range(1, steps + 1))
    assert losses == [(r["step"], r["loss"]) for r in read_metrics(reference) if "loss" in r]


def test_each_worker_logs_to_the_workdir_and_the_run_records_its_commit(preempted_sweep):
    log = open(os.path.join(preempted_sweep["workdir"], "logs", "worker-0.log")).read()
    assert f"resuming from the checkpoint of step {preempted_sweep['step_at_preemption']}" in log
    record = json.load(open(os.path.join(preempted_sweep["workdir"], "run.json")))
    assert record["commit"] == preempted_sweep["commit"] and record["run"] == RUN
    shipped = os.path.join(preempted_sweep["root"], "code", preempted_sweep["commit"])
    assert sorted(os.listdir(shipped)) == ["experiment", f"llama_jax-{preempted_sweep['commit']}.tar.gz"]


def test_a_dry_run_prints_every_command_the_run_executed_in_order(preempted_sweep, sweep_file):
    dry = cli(preempted_sweep["repo"], preempted_sweep["fake"],
              *tpu_args(sweep_file, preempted_sweep["root"], "--watch", "--spot"),
              fit_cache=preempted_sweep["fit_cache"])
    assert dry.returncode == 0, dry.stderr
    printed = [line[2:] for line in dry.stdout.splitlines() if line.startswith("$ ")]
    assert printed[0].startswith(f"git -C {preempted_sweep['repo']} archive ")
    executed = [shlex.join(call) for call in launcher_calls(preempted_sweep["fake"])]
    assert first_occurrences(executed) == first_occurrences(printed[1:])  # describe ran at every poll


def first_occurrences(commands: list[str]) -> list[str]:
    return list(dict.fromkeys(commands))


@pytest.mark.parametrize("scenario", [
    {"queued_resources": {"pod": [["CREATING", f"FAILED: {QUOTA}"]]}},
    {"create_errors": {"pod": f"RESOURCE_EXHAUSTED: {QUOTA}"}},
], ids=["queued resource FAILED", "create refused"])
def test_a_quota_failure_is_one_error_line(repo, sweep_file, tmp_path, scenario):
    fake = FakeCloud(tmp_path, scenario)
    fit_cache = str(tmp_path / "fits.jsonl")
    shutil.copy(FIT_CACHE, fit_cache)
    result = cli(repo, fake, *tpu_args(sweep_file, str(tmp_path / "bucket"), "--execute"), fit_cache=fit_cache)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and QUOTA in lines[0], result.stderr
    assert not any(call[:4] == ["gcloud", "compute", "tpus", "tpu-vm"] for call in launcher_calls(fake))


@pytest.mark.parametrize("args,message", [
    (["--launch=tpu", "--topology=v5p-8", "--zone=z"], "--launch=tpu needs --topology, --tpu and --zone"),
    (["--execute"], "--execute is for --launch=tpu or --launch=xpk"),
    (["--launch=tpu", "--topology=v5p-8", "--tpu=Pod_1", "--zone=z"], "is not a queued-resource name"),
    (["--launch=tpu", "--topology=v5p-8", "--tpu=pod", "--zone=z", "--max_slices=0"], "--max_slices=0 must be"),
    (["--launch=tpu", "--topology=v5p-8", "--tpu=pod", "--zone=z", "--status", "--execute"], "--status only reads"),
    (["--launch=tpu", "--topology=v5p-8", "--tpu=pod", "--zone=z", "--spot", "--reserved"], "give one of --spot"),
    (["--launch=xpk", "--topology=v5p-8", "--cluster=c"], "--launch=xpk needs --topology, --cluster and --docker-image"),
    (["--launch=xpk", "--topology=v5p-8", "--cluster=c", "--docker-image=i", "--spot"], "are for --launch=tpu"),
])
def test_bad_launch_flags_are_one_error_line(tmp_path, args, message):
    command = [sys.executable, "-m", "experiments.sweep", "--config=experiments/configs/debug_sweep.py", *args]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], \
        result.stderr


def test_xpk_workloads_are_created_listed_and_deleted_once_finished(preempted_sweep, sweep_file, tmp_path):
    fake = FakeCloud(tmp_path, {"workloads": {"pod-sweep-debug-10-24k": [
        ["QuotaReserved", "Quota reserved in ClusterQueue cluster-queue"],
        ["Admitted", "Admitted by ClusterQueue cluster-queue"]]}})
    root = str(tmp_path / "bucket")
    shutil.copy(sweep_file, os.path.join(preempted_sweep["repo"], "experiments", "configs"))  # the image holds it
    args = ["--config=experiments/configs/pod_sweep.py", "--launch=xpk", "--topology=v5p-8", "--cluster=research",
            "--docker-image=us-docker.pkg.dev/p/llama/llama_jax:abc", "--zone=us-east5-a", f"--workdir={root}"]
    run = lambda *extra: cli(preempted_sweep["repo"], fake, *args, *extra, fit_cache=preempted_sweep["fit_cache"])  # noqa: E731
    outside = cli(preempted_sweep["repo"], fake, f"--config={sweep_file}", *args[1:], "--execute",
                  fit_cache=preempted_sweep["fit_cache"])
    assert outside.returncode == 1 and outside.stderr.count("\n") == 1 and "is outside the repository" in outside.stderr
    assert not os.path.exists(root) and launcher_calls(fake) == []
    created = run("--execute")
    assert created.returncode == 0, created.stderr
    create = next(call for call in launcher_calls(fake) if call[:3] == ["xpk", "workload", "create"])
    assert {"--cluster=research", "--workload=pod-sweep-debug-10-24k", "--tpu-type=v5p-8", "--num-slices=1",
            "--docker-image=us-docker.pkg.dev/p/llama/llama_jax:abc", "--max-restarts=3",
            "--restart-on-user-code-failure"} <= set(create)
    command = next(arg for arg in create if arg.startswith("--command="))
    assert "python -m llama_jax.train --multihost" in command and f"--workdir={root}/pod_sweep/{RUN}" in command
    assert "--config.train.microbatches=1" in command  # the fit search's setting
    assert command.startswith("--command=cd /llama_jax && ") and "--config=experiments/configs/pod_sweep.py:" in command

    assert f"{RUN}  pod-sweep-debug-10-24k  quotareserved: Quota reserved in ClusterQueue cluster-queue" in \
        run("--status").stdout
    shutil.copytree(preempted_sweep["workdir"], f"{root}/pod_sweep/{RUN}", dirs_exist_ok=True)  # as if trained there
    assert f"{RUN}  pod-sweep-debug-10-24k  finished" in run("--status").stdout
    assert run("--execute").returncode == 0
    assert fake.state()["workloads"] == {}
    assert launcher_calls(fake)[-1][:3] == ["xpk", "workload", "delete"]


# ------------------------------------------------------------------------------------- the parts, on their own
def test_lanes_keep_branches_with_their_source_and_balance_the_rest():
    debug = sweep.expand(os.path.join(ROOT, "experiments", "configs", "debug_sweep.py"))
    assert [[r.name for r in lane] for lane in pod.lanes(debug, 3)] == [[r.name for r in debug]]  # one trunk
    paper = sweep.expand(os.path.join(ROOT, "experiments", "configs", "paper_sweep.py"))
    spread = pod.lanes(paper, 2)
    assert sorted(r.name for lane in spread for r in lane) == sorted(r.name for r in paper)
    for lane in spread:
        assert [paper.index(r) for r in lane] == sorted(paper.index(r) for r in lane)  # the sweep's order
    costs = [sum(r.trained_tokens for r in lane) for lane in spread]
    assert max(costs) - min(costs) <= max(r.trained_tokens for r in paper)  # greedy balance
    with pytest.raises(ValueError, match="--max_slices=0"):
        pod.lanes(paper, 0)


def test_slice_commands_match_gcloud_for_tiers_and_multi_slice():
    topology = aot.parse_topology("v5p-512")
    single = pod.Slices("pod", "z", topology, project="p", tier="reserved")
    assert single.create("pod") == ["gcloud", "compute", "tpus", "queued-resources", "create", "pod", "--zone=z",
                                    "--project=p", "--accelerator-type=v5p-512", "--runtime-version=v2-alpha-tpuv5",
                                    "--node-id=pod", "--reserved"]
    assert pod.Slices("pod", "z", topology, tier="best-effort").create("pod")[:2] == ["gcloud", "alpha"]
    multi = pod.Slices("pod", "z", topology, slices=2)
    assert {"--node-count=2", "--node-prefix=pod"} <= set(multi.create("pod"))
    assert multi.ssh("pod", "true")[:5] == ["gcloud", "compute", "tpus", "queued-resources", "ssh"]
    assert "--node=all" in multi.ssh("pod", "true") and "--worker=all" in multi.ssh("pod", "true")
    assert [single.name(i, 3) for i in range(3)] == ["pod-0", "pod-1", "pod-2"] and single.name(0, 1) == "pod"
    run = runs.Run("s", "7b_1T", "size=7b,tokens=1e12", "experiments/configs/paper_sweep.py",
                   sweep.load(os.path.join(ROOT, "experiments", "configs", "paper_sweep.py")).get_config())
    script = pod.worker_script([run], "gs://b", "c0ffee", "e" * 16, "0.13.9", {}, slices=2)
    assert "--config.mesh.dcn_data=2" in script and "--config=experiment/paper_sweep.py:size=7b,tokens=1e12" in script


def test_xpk_workload_list_is_read_from_its_table():
    # The table as xpk's README shows it (column widths from kubectl's custom columns).
    table = """[XPK] Starting xpk
Jobset Name                     Created Time           Priority   TPU VMs Needed   TPU VMs Running/Ran   TPU VMs Done      Status     Status Message                                                  Status Time
user-first-job-failed           2023-1-1T1:00:00Z      medium     4                4                     <none>            Finished   JobSet failed                                                   2023-1-1T1:05:00Z
user-third-job-running          2023-1-1T1:15:00Z      medium     4                4                     <none>            Admitted   Admitted by ClusterQueue cluster-queue                          2023-1-1T1:16:00Z
"""
    rows = pod.parse_workload_list(table)
    assert rows["user-first-job-failed"]["Status"] == "Finished"
    assert rows["user-first-job-failed"]["Status Message"] == "JobSet failed"
    assert rows["user-third-job-running"]["Status Message"] == "Admitted by ClusterQueue cluster-queue"
    assert pod.parse_workload_list("[XPK] Exiting XPK cleanly") == {}


def test_workload_names_are_valid_and_unique_per_run():
    xpk = pod.Xpk("c", aot.parse_topology("v5p-8"), "i")
    long_a = xpk.workload(runs.Run("a_very_long_sweep_name_indeed", "65b_1.4T_lr0.0003", "", "", None))
    long_b = xpk.workload(runs.Run("a_very_long_sweep_name_indeed", "65b_1.4T_lr0.0006", "", "", None))
    assert long_a != long_b
    for name in (long_a, long_b, xpk.workload(runs.Run("paper_sweep", "7b_1T", "", "", None))):
        assert len(name) <= 40 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name


def test_max_slices_spreads_the_paper_sweep_over_queued_resources(repo, tmp_path):
    fake = FakeCloud(tmp_path, {})
    dry = cli(repo, fake, "--config=experiments/configs/paper_sweep.py", "--only=^(7b|13b)_1T$", "--launch=tpu",
              "--topology=v5p-512", "--tpu=llama", "--zone=us-east5-a", "--workdir=gs://bucket/sweeps",
              "--max_slices=2", "--best-effort", fit_cache=os.path.join(ROOT, "experiments", "results", "aot_fit.jsonl"))
    assert dry.returncode == 0, dry.stderr
    creates = [line for line in dry.stdout.splitlines() if " queued-resources create " in line]
    assert [line.split()[7] for line in creates] == ["llama-0", "llama-1"]
    assert all(line.startswith("$ gcloud alpha compute tpus") and line.endswith("--best-effort") for line in creates)
    scripts = dry.stdout.split("the worker script:")[1:]
    assert [sum(f"train gs://bucket/sweeps/paper_sweep/{run} " in script.split("$ ")[0] for run in ("13b_1T", "7b_1T"))
            for script in scripts] == [1, 1]  # one run per slice
    assert fake.calls() == []  # a dry run calls nothing


def test_watch_retries_starting_workers_that_are_not_reachable_yet(repo, sweep_file, tmp_path):
    commit = git("rev-parse", "HEAD", cwd=repo)
    # Workers whose python fails at once: this test is about the launcher, not the training.
    fake = FakeCloud(tmp_path, {"ssh_failures": {"pod": 2}}, worker_env={f"env-{pod.lock_hash(commit, repo)}": "false"})
    slices = pod.Slices("pod", "us-east5-a", aot.parse_topology("v5p-8"))
    target = pod.Pod(sweep.expand(sweep_file), str(tmp_path / "bucket"), slices, sweep_file, repo=repo)
    with fake.on_path(), pytest.raises(pod.CloudError, match="gave up after 6 polls: pod: starting debug_10.24k"):
        target.launch(pod.Cloud(execute=True, log=lambda line: None), watch=True, poll_s=0, max_polls=6)
    ssh = [call for call in launcher_calls(fake) if call[:4] == ["gcloud", "compute", "tpus", "tpu-vm"]]
    assert len(ssh) == 3  # two refused, the third started the workers, and none after it
    record = json.loads((tmp_path / "bucket" / "pod_sweep" / ".pod" / "pod.json").read_text())
    assert record["commit"] == commit and record["runs"] == [RUN]
    without_watch = pod.Pod(sweep.expand(sweep_file), str(tmp_path / "bucket2"), slices, sweep_file, repo=repo)
    fake_again = FakeCloud(tmp_path / "again", {"ssh_failures": {"pod": 1}})
    with fake_again.on_path(), pytest.raises(pod.CloudError, match="Connection refused|exit 255"):
        without_watch.launch(pod.Cloud(execute=True, log=lambda line: None), watch=False, poll_s=0, max_polls=6)
