"""Sweeps on TPU pods: ship the exact commit, wait for the slice, train detached on every worker, survive preemption
and a closed launcher; on queued resources (gcloud) or on GKE through xpk.

A sweep's runs are spread over `max_slices` lanes (a run and the cooldown branches of it share a lane, longest
lanes balanced first); each lane is one queued resource that trains its runs one after another. Per lane the
launcher is a small state machine over `gcloud compute tpus queued-resources describe --format=json`:

    absent                           -> create the queued resource (spot / reserved / best-effort passed through)
    CREATING .. PROVISIONING         -> wait ("waiting for capacity")
    ACTIVE, not started on this one  -> start the lane's worker script detached on every worker (setsid nohup),
                                        record it in <root>/<sweep>/.pod/<slice>.json (with the queued resource's
                                        createTime, so a recreated slice is started again)
    ACTIVE, started                  -> training (step N from the run's metrics.jsonl)
    SUSPENDING/SUSPENDED, FAILED     -> preempted or failed: with --watch, delete and create again; training
                                        resumes from its latest checkpoint (llama_jax.train resumes exactly)
    every run of the lane finished   -> delete the queued resource

Nothing is kept on the launcher's machine: the state lives in the cloud and in the workdirs, so `--status` and
`--watch` work from any process, at any time. Code shipping: `git archive` of the commit (which holds
requirements.lock) and the sweep file go to <root>/code/<commit>/; every worker installs the lock's dependencies
once per lock (uv, Python 3.11) and runs the commit's tree; run.json records the commit. Each worker's output goes
to <workdir>/logs/worker-<i>.log, copied every minute and at the end.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import re
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence

from etils import epath

from experiments import launch
from experiments.runs import Run
from llama_jax.perf.aot import Topology

# Software versions of TPU VMs (Cloud TPU "TPU software versions" page), by generation.
RUNTIME_VERSIONS = {"v4": "tpu-ubuntu2204-base", "v5e": "v2-alpha-tpuv5-lite", "v5p": "v2-alpha-tpuv5",
                    "v6e": "v2-alpha-tpuv6e"}
WAITING = ("CREATING", "ACCEPTED", "WAITING_FOR_RESOURCES", "PROVISIONING")  # queued-resource states before ACTIVE
GONE = ("SUSPENDING", "SUSPENDED", "FAILED", "DELETING")  # the slice is lost (or going): recreate it
TIERS = ("spot", "reserved", "best-effort")  # best-effort is a flag of `gcloud alpha` only
METADATA = "http://metadata.google.internal/computeMetadata/v1/instance/attributes"
EXTRAS = "tpu,data"  # what a worker installs: jax[tpu] and the tf.data mixture
START_ATTEMPTS = 5  # --watch retries starting a slice's workers this many polls before it gives up
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_DIR = "/llama_jax"  # where the Dockerfile puts the code


class CloudError(RuntimeError):
    """A cloud command failed, or a slice failed and is not to be recreated."""


def check_name(tpu: str) -> None:
    """A queued-resource (and TPU node) name: lowercase letters, digits and hyphens, from a letter."""
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,45}[a-z0-9])?", tpu):
        raise ValueError(f"--tpu={tpu!r} is not a queued-resource name: lowercase letters, digits and hyphens, "
                         "starting with a letter, at most 47 characters")


@dataclasses.dataclass(frozen=True)
class Slices:
    """Where and how the lanes' slices are requested: queued resources `<tpu>` (one lane) or `<tpu>-<i>`."""

    tpu: str
    zone: str
    topology: Topology
    project: str = ""
    slices: int = 1  # slices per run, joined over DCN (multi-slice: mesh.dcn_data)
    runtime_version: str = ""
    tier: str = ""  # "", "spot", "reserved" or "best-effort"

    def __post_init__(self):
        check_name(self.tpu)
        if self.tier not in ("", *TIERS):
            raise ValueError(f"tier {self.tier!r} is not one of {TIERS}")

    def name(self, lane: int, lanes: int) -> str:
        return self.tpu if lanes == 1 else f"{self.tpu}-{lane}"

    def _where(self) -> list[str]:
        return [f"--zone={self.zone}", *([f"--project={self.project}"] if self.project else [])]

    def create(self, name: str) -> list[str]:
        """The request for the slice(s) `name`: the tier's flag passed through (best-effort through `alpha`)."""
        gcloud = ["gcloud", "alpha"] if self.tier == "best-effort" else ["gcloud"]
        command = [*gcloud, "compute", "tpus", "queued-resources", "create", name, *self._where(),
                   f"--accelerator-type={self.topology.cloud_name}",
                   f"--runtime-version={self.runtime_version or RUNTIME_VERSIONS[self.topology.generation]}"]
        command += [f"--node-count={self.slices}", f"--node-prefix={name}"] if self.slices > 1 else [f"--node-id={name}"]
        return command + ([f"--{self.tier}"] if self.tier else [])

    def describe(self, name: str) -> list[str]:
        return ["gcloud", "compute", "tpus", "queued-resources", "describe", name, *self._where(), "--format=json"]

    def delete(self, name: str) -> list[str]:
        """Delete the request and its nodes (--force), without a prompt."""
        return ["gcloud", "compute", "tpus", "queued-resources", "delete", name, *self._where(), "--force",
                "--quiet"]

    def ssh(self, name: str, command: str) -> list[str]:
        """`command` on every worker (of every node, multi-slice)."""
        if self.slices > 1:
            return ["gcloud", "compute", "tpus", "queued-resources", "ssh", name, *self._where(), "--node=all",
                    "--worker=all", f"--command={command}"]
        return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", name, *self._where(), "--worker=all",
                f"--command={command}"]


# ---------------------------------------------------------------------------------------------- lanes and code
def lanes(runs: Sequence[Run], max_slices: int, cost: Callable[[Run], float] | None = None) -> list[list[Run]]:
    """`runs` spread over at most `max_slices` lanes: a run and its branches stay together, in order; groups go,
    costliest first, to the lane with the least cost so far (`cost`: trained tokens by default)."""
    if max_slices < 1:
        raise ValueError(f"--max_slices={max_slices} must be at least 1")
    cost = cost or (lambda run: run.trained_tokens)
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.branch[0] if run.branch else run.name, []).append(run)
    ordered = sorted(groups.values(), key=lambda group: -sum(cost(run) for run in group))
    out: list[list[Run]] = [[] for _ in range(min(max_slices, len(ordered)))]
    for group in ordered:
        min(out, key=lambda lane: sum(cost(run) for run in lane)).extend(group)
    order = {run.name: i for i, run in enumerate(runs)}
    return [sorted(lane, key=lambda run: order[run.name]) for lane in out]


def commit_of(repo: str = REPO, allow: Sequence[str] = ()) -> tuple[str, list[str]]:
    """The commit checked out in `repo`, and the tracked files with uncommitted changes other than `allow` (the
    sweep file, which is shipped on its own): the workers run the commit, not the working tree."""
    def git(*args: str) -> str:
        result = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True)
        if result.returncode:
            raise CloudError(f"git {' '.join(args)} failed in {repo}: {result.stderr.strip()}")
        return result.stdout

    commit = git("rev-parse", "HEAD").strip()
    allowed = {os.path.relpath(os.path.abspath(path), repo) for path in allow}
    dirty = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
             if line[3:] not in allowed]
    return commit, dirty


def lock_hash(commit: str, repo: str = REPO) -> str:
    """The first 16 hex digits of the sha256 of the commit's requirements.lock: the name of the workers' env."""
    lock = subprocess.run(["git", "-C", repo, "show", f"{commit}:requirements.lock"], capture_output=True, check=True)
    return hashlib.sha256(lock.stdout).hexdigest()[:16]


def locked_version(package: str, commit: str, repo: str = REPO) -> str:
    lock = subprocess.run(["git", "-C", repo, "show", f"{commit}:requirements.lock"], capture_output=True, text=True,
                          check=True).stdout
    match = re.search(rf"^{re.escape(package)}==(\S+)", lock, re.MULTILINE)
    if not match:
        raise CloudError(f"requirements.lock of {commit[:12]} does not pin {package}")
    return match[1]


def code_dir(root: str, commit: str) -> str:
    return f"{root.rstrip('/')}/code/{commit}"


def ship_commands(root: str, commit: str, sweep_file: str, staging: str, repo: str = REPO) -> list[list[str]]:
    """The commit as a tarball (git archive: exactly the tracked files, requirements.lock among them) and the sweep
    file, uploaded to <root>/code/<commit>/."""
    tarball = os.path.join(staging, f"llama_jax-{commit}.tar.gz")
    target = code_dir(root, commit)
    return [["git", "-C", repo, "archive", "--format=tar.gz", f"--output={tarball}", commit],
            ["gcloud", "storage", "cp", tarball, f"{target}/"],
            ["gcloud", "storage", "cp", sweep_file, f"{target}/experiment/{os.path.basename(sweep_file)}"]]


# ---------------------------------------------------------------------------------------------- the workers
def worker_script(lane: Sequence[Run], root: str, commit: str, env_hash: str, uv_version: str,
                  overrides: dict[str, tuple[str, ...]], slices: int = 1) -> str:
    """The bash script every worker of a lane's slice runs (detached): fetch and unpack the commit, install the
    lock's dependencies once per lock, then train the lane's runs in order, each resuming its latest checkpoint,
    with the output copied to <workdir>/logs/worker-<i>.log every minute and at the end."""
    code = code_dir(root, commit)
    lines = [
        "#!/bin/bash",
        f"# llama_jax pod worker: commit {commit}, runs {' '.join(run.name for run in lane)}",
        "set -uo pipefail",
        f"worker=$(curl -sf -H 'Metadata-Flavor: Google' {METADATA}/agent-worker-number) || exit 1",
        *(["worker=$worker-$(hostname)"] if slices > 1 else []),
        "home=$HOME/llama_jax",
        f"code=$home/{commit}",
        f"env=$home/env-{env_hash}",
        'mkdir -p "$home"',
        'if [ ! -d "$code" ]; then',
        f'  gcloud storage cp {code}/llama_jax-{commit}.tar.gz "$home/" || exit 1',
        f'  rm -rf "$code.tmp" && mkdir -p "$code.tmp" && tar -xzf "$home/llama_jax-{commit}.tar.gz" -C "$code.tmp" \\',
        f'    && gcloud storage cp -r {code}/experiment "$code.tmp/" && mv "$code.tmp" "$code" || exit 1',
        "fi",
        'if [ ! -e "$env/.installed" ]; then  # the lock\'s dependencies (Python 3.11 through uv), once per lock',
        f'  python3 -m pip install -q --user uv=={uv_version} && ~/.local/bin/uv venv -q --python 3.11 "$env" \\',
        f'    && ~/.local/bin/uv pip install -q --python "$env/bin/python" -c "$code/requirements.lock" "$code[{EXTRAS}]" \\',
        '    && ~/.local/bin/uv pip uninstall -q --python "$env/bin/python" llama_jax && touch "$env/.installed" || exit 1',
        "fi",
        'cd "$code"',
        "stop=0 pid=0",
        "trap 'stop=1; kill -TERM $pid 2>/dev/null' TERM  # a preemption's SIGTERM: training saves and stops",
        "train() {  # WORKDIR ARGS...: one run; its output copied to WORKDIR/logs/worker-$worker.log",
        '  local workdir=$1; shift',
        '  local log="$home/$(basename "$workdir").worker-$worker.log" n=0',
        '  "$env/bin/python" -m llama_jax.train --multihost "$@" >> "$log" 2>&1 &',
        "  pid=$!",
        "  while kill -0 $pid 2>/dev/null; do",
        "    sleep 1; n=$((n + 1))",
        '    if [ $((n % 60)) -eq 0 ]; then gcloud storage cp -q "$log" "$workdir/logs/worker-$worker.log"; fi',
        "  done",
        "  wait $pid; local status=$?",
        '  gcloud storage cp -q "$log" "$workdir/logs/worker-$worker.log"',
        "  if [ $stop = 1 ]; then return 143; fi",
        "  return $status",
        "}",
    ]
    for run in lane:
        extra = tuple(overrides.get(run.name, ())) + ((f"--config.mesh.dcn_data={slices}",) if slices > 1 else ())
        # llama_jax.train's arguments but the config, which names the shipped copy of the sweep file
        _python, _m, _module, _config, *args = launch.train_command(run, root, python="python", overrides=extra)
        config = f"--config=experiment/{os.path.basename(run.config_file)}:{run.arg}"
        lines.append(f"train {shlex.quote(run.workdir(root))} {shlex.join([config, *args])} || exit $?")
    return "\n".join(lines) + "\n"


def start_command(name: str, script_url: str) -> str:
    """The ssh command that starts a lane's worker script detached (setsid nohup: a closed ssh session or launcher
    does not stop it), unless it already runs on this worker."""
    pid = f"$HOME/llama_jax/{name}.pid"
    return (f"mkdir -p $HOME/llama_jax && gcloud storage cp -q {script_url} $HOME/llama_jax/{name}.sh && "
            f"if [ -e {pid} ] && kill -0 $(cat {pid}) 2>/dev/null; then echo already running; else "
            f"setsid nohup bash $HOME/llama_jax/{name}.sh > $HOME/llama_jax/{name}.out 2>&1 < /dev/null & "
            f"echo $! > {pid}; fi")


# ---------------------------------------------------------------------------------------------- state
def pod_dir(root: str, lane: Sequence[Run]) -> epath.Path:
    return epath.Path(root) / lane[0].sweep / ".pod"


def run_progress(run: Run, root: str) -> tuple[bool, int | None]:
    """(finished, its step or None) of `run` from its workdir: the last step of metrics.jsonl, or of its latest
    checkpoint when that is later (or the only one there)."""
    latest = launch.latest_step(run.workdir(root))
    if latest == run.config.train.steps:
        return True, latest
    metrics = epath.Path(run.workdir(root)) / "metrics.jsonl"
    step = None
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            try:
                step = json.loads(line).get("step", step)
            except json.JSONDecodeError:
                continue  # a line being written
    steps = [s for s in (step, latest) if s is not None]
    return False, max(steps) if steps else None


@dataclasses.dataclass
class LaneState:
    """What one lane is doing: its slice, the cloud's state of it, the run it trains and that run's step."""

    name: str
    state: str  # "absent", a queued-resource state, or "finished"
    initiator: str = ""
    reason: str = ""
    create_time: str = ""
    started: bool = False
    run: str = ""
    step: int | None = None

    def describe(self) -> str:
        if self.state == "finished":
            return "finished"
        if self.state == "absent":
            return "no slice requested"
        if self.state in WAITING:
            return f"waiting for capacity ({self.state})"
        if self.state == "ACTIVE":
            if not self.started:
                return "slice up, training not started"
            return f"training {self.run} at step {self.step}" if self.step is not None else f"starting {self.run}"
        if self.state == "FAILED":
            return f"failed: {self.reason or 'no reason given'}"
        if self.state in ("SUSPENDING", "SUSPENDED"):
            return f"preempted ({self.state} by the service)" if self.initiator == "SERVICE" else \
                f"{self.state.lower()} ({self.initiator.lower() or 'unknown initiator'})"
        return self.state.lower()


class Cloud:
    """Runs (or, in a dry run, prints) cloud commands; `describe` parses the JSON of a queued resource."""

    def __init__(self, execute: bool, log: Callable[[str], None] = print):
        self.execute, self.log = execute, log

    def run(self, command: list[str], quiet: bool = False) -> subprocess.CompletedProcess:
        if not quiet or not self.execute:
            self.log(f"$ {shlex.join(command)}")
        if not self.execute:
            return subprocess.CompletedProcess(command, 0, "", "")
        try:
            result = subprocess.run(command, capture_output=True, text=True)
        except FileNotFoundError:
            raise CloudError(f"{command[0]} is not installed (it is needed to {shlex.join(command[:4])})") from None
        if result.returncode:
            raise CloudError(f"{shlex.join(command[:6])} failed (exit {result.returncode}): {_last_line(result.stderr)}")
        return result

    def describe(self, slices: Slices, name: str) -> dict | None:
        """The queued resource `name` as `describe --format=json` gives it; None when it does not exist."""
        command = slices.describe(name)
        try:
            result = subprocess.run(command, capture_output=True, text=True)
        except FileNotFoundError:
            raise CloudError("gcloud is not installed (https://cloud.google.com/sdk/docs/install)") from None
        if result.returncode:
            if "NOT_FOUND" in result.stderr or "not found" in result.stderr.lower():
                return None
            raise CloudError(f"{shlex.join(command[:6])} failed (exit {result.returncode}): {_last_line(result.stderr)}")
        try:
            return json.loads(result.stdout)
        except json.JSONDecodeError:
            raise CloudError(f"{shlex.join(command[:6])} printed no JSON: {result.stdout[:200]!r}") from None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


def lane_state(cloud: Cloud, slices: Slices, name: str, lane: Sequence[Run], root: str) -> LaneState:
    """The lane's state from the cloud and the workdirs (reads only)."""
    progress = [(run, *run_progress(run, root)) for run in lane]
    current = next(((run, step) for run, done, step in progress if not done), None)
    resource = cloud.describe(slices, name)
    if current is None:
        return LaneState(name, "finished", run=lane[-1].name, create_time=(resource or {}).get("createTime", ""))
    run, step = current
    if resource is None:
        return LaneState(name, "absent", run=run.name, step=step)
    state = resource.get("state", {})
    record = pod_dir(root, lane) / f"{name}.json"
    started = record.exists() and json.loads(record.read_text()).get("create_time") == resource.get("createTime")
    reason = state.get("failedData", {}).get("error", {}).get("message", "")
    return LaneState(name, state.get("state", "STATE_UNSPECIFIED"), state.get("stateInitiator", ""), reason,
                     resource.get("createTime", ""), started, run.name, step)


# ---------------------------------------------------------------------------------------------- the lifecycle
def recorded_commit(runs: Sequence[Run], root: str) -> str | None:
    """The commit the runs' run.json files record (None when none does); runs launched at different commits are
    an error."""
    commits = set()
    for run in runs:
        record = epath.Path(run.workdir(root)) / "run.json"
        if record.exists() and (commit := json.loads(record.read_text()).get("commit")):
            commits.add(commit)
    if len(commits) > 1:
        raise CloudError(f"the runs under {root} were launched at different commits {sorted(commits)}")
    return commits.pop() if commits else None


@dataclasses.dataclass
class Pod:
    """A sweep's lanes on queued resources, advanced by `advance` (one pass of the state machine)."""

    runs: list[Run]
    root: str
    slices: Slices
    sweep_file: str
    max_slices: int = 1
    overrides: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    cost: Callable[[Run], float] | None = None
    repo: str = REPO

    def __post_init__(self):
        self._start_failures: dict[str, int] = {}
        self.lanes = lanes(self.runs, self.max_slices, self.cost)
        self.names = [self.slices.name(i, len(self.lanes)) for i in range(len(self.lanes))]

    def status(self, cloud: Cloud) -> list[tuple[str, str, str]]:
        """(run, slice, state) of every run: finished, waiting for capacity, training at step N, preempted, ..."""
        rows = []
        for name, lane in zip(self.names, self.lanes, strict=True):
            current = lane_state(cloud, self.slices, name, lane, self.root)
            for run in lane:
                if run_progress(run, self.root)[0]:
                    text = "finished"
                elif run.name == current.run:
                    text = current.describe()
                else:
                    text = f"queued behind {current.run} on {name}"
                rows.append((run.name, name, text))
        return rows

    def ship(self, cloud: Cloud) -> str:
        """Upload the commit and the sweep file; record the commit in each run's run.json (a run that trained at
        another commit is refused: it would resume with other code). Returns the commit."""
        commit, dirty = commit_of(self.repo, allow=[self.sweep_file])
        if dirty:
            message = (f"uncommitted changes in {', '.join(dirty[:5])}: the workers run commit {commit[:12]}; "
                       "commit (or stash) them first")
            if cloud.execute:
                raise CloudError(message)
            cloud.log(f"# note: {message}")
        for run in self.runs if cloud.execute else ():  # a dry run reads nothing remote
            record = epath.Path(run.workdir(self.root)) / "run.json"
            if record.exists() and launch.latest_step(run.workdir(self.root)) is not None:
                before = json.loads(record.read_text()).get("commit")
                if before and before != commit:
                    raise CloudError(f"{run.name} trained at commit {before[:12]}, the checkout is {commit[:12]}: "
                                     "check out that commit to continue it, or launch into a new --workdir")
        staging = tempfile.gettempdir()
        for command in ship_commands(self.root, commit, self.sweep_file, staging, self.repo):
            cloud.run(command)
        if cloud.execute:
            os.remove(os.path.join(staging, f"llama_jax-{commit}.tar.gz"))
            for run in self.runs:
                record = epath.Path(run.workdir(self.root)) / "run.json"
                if not (record.exists() and json.loads(record.read_text()).get("commit") == commit):
                    epath.Path(run.workdir(self.root)).mkdir(parents=True, exist_ok=True)
                    launch.write_run_record(run, run.workdir(self.root), commit=commit)
        return commit

    def script_url(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{self.lanes[0][0].sweep}/.pod/{name}.sh"

    def start(self, cloud: Cloud, lane_index: int, commit: str, create_time: str) -> None:
        """Upload the worker script of the lane's unfinished runs, start it detached on every worker, and record
        the start against the queued resource's createTime."""
        name, lane = self.names[lane_index], self.lanes[lane_index]
        todo = [run for run in lane if not (cloud.execute and run_progress(run, self.root)[0])]
        script = worker_script(todo, self.root, commit, lock_hash(commit, self.repo),
                               locked_version("uv", commit, self.repo), self.overrides, self.slices.slices)
        path = os.path.join(tempfile.gettempdir(), f"llama_jax-{name}-{commit[:12]}.sh")
        if cloud.execute:
            with open(path, "w") as f:
                f.write(script)
        else:
            cloud.log(f"# {path}, the worker script:\n" + "\n".join(f"#   {line}" for line in script.splitlines()))
        cloud.run(["gcloud", "storage", "cp", path, self.script_url(name)])
        cloud.run(self.slices.ssh(name, start_command(name, self.script_url(name))))
        if cloud.execute:
            os.remove(path)
            record = {"slice": name, "create_time": create_time, "commit": commit, "runs": [r.name for r in todo],
                      "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
            pod_dir(self.root, lane).mkdir(parents=True, exist_ok=True)
            (pod_dir(self.root, lane) / f"{name}.json").write_text(json.dumps(record, indent=1))

    def advance(self, cloud: Cloud, commit: str, recreate: bool) -> list[LaneState]:
        """One pass over the lanes: create what is absent, start what came up, delete what finished, and (with
        `recreate`) delete what was preempted, or failed after it had trained, so that the next pass creates it
        again. A slice that failed before it ever trained (quota, a bad request), or any loss without
        `recreate`, is a CloudError with the cloud's reason. Returns the lanes' states after the pass."""
        states = []
        for i, name in enumerate(self.names):
            state = lane_state(cloud, self.slices, name, self.lanes[i], self.root)
            ran_before = (pod_dir(self.root, self.lanes[i]) / f"{name}.json").exists()
            if state.state == "finished":
                if state.create_time:
                    cloud.log(f"{name}: every run finished; deleting the slice")
                    cloud.run(self.slices.delete(name))
            elif state.state == "absent":
                cloud.run(self.slices.create(name))
                state.state = "CREATING"
            elif state.state == "ACTIVE" and not state.started:
                cloud.log(f"{name}: ACTIVE; starting {state.run} on every worker")
                try:
                    self.start(cloud, i, commit, state.create_time)
                except CloudError as error:  # workers not reachable yet (ssh keys propagating, a VM booting)
                    failures = self._start_failures[name] = self._start_failures.get(name, 0) + 1
                    if not recreate or failures >= START_ATTEMPTS:
                        raise
                    cloud.log(f"{name}: start failed ({error}); again at the next poll")
                    states.append(state)
                    continue
                self._start_failures.pop(name, None)
                state.started = True
            elif state.state == "FAILED" and not (recreate and ran_before):
                raise CloudError(f"queued resource {name} FAILED: {state.reason or 'no reason given'}")
            elif state.state in GONE:
                if not recreate:
                    raise CloudError(f"queued resource {name} is {state.describe()}; run --watch to recreate it "
                                     f"and resume {state.run} from its latest checkpoint")
                if state.state != "DELETING":
                    cloud.log(f"{name}: {state.describe()}; deleting it, to request it again")
                    cloud.run(self.slices.delete(name))
            states.append(state)
        return states

    def launch(self, cloud: Cloud, *, watch: bool, poll_s: float, max_polls: int | None = None) -> list[LaneState]:
        """Ship the code, then advance until every lane trains (with `watch`: until every run finished), polling
        every `poll_s` seconds; `watch` on a launched sweep continues at the commit its runs record, from any
        checkout. A dry run prints the commands of each transition instead, in order."""
        recorded = recorded_commit(self.runs, self.root) if cloud.execute and watch else None
        commit = recorded or self.ship(cloud)
        if not cloud.execute:
            self._print_plan(cloud, commit, watch, poll_s)
            return []
        return self._loop(cloud, commit, watch, poll_s, max_polls)

    def _loop(self, cloud: Cloud, commit: str, watch: bool, poll_s: float, max_polls: int | None) -> list[LaneState]:
        polls, last = 0, None
        while True:
            states = self.advance(cloud, commit, recreate=watch)
            report = "; ".join(f"{s.name}: {s.describe()}" for s in states)
            if report != last:
                cloud.log(report)
                last = report
            if all(s.state == "finished" or (not watch and s.state == "ACTIVE" and s.started) for s in states):
                return states
            polls += 1
            if max_polls is not None and polls >= max_polls:
                raise CloudError(f"gave up after {polls} polls: {report}")
            time.sleep(poll_s)

    def _print_plan(self, cloud: Cloud, commit: str, watch: bool, poll_s: float) -> None:
        """The commands `--execute` runs after shipping, in order, lane by lane."""
        for i, name in enumerate(self.names):
            cloud.log(f"# lane {i}: {', '.join(run.name for run in self.lanes[i])} on {name}; its state, every "
                      f"{poll_s:g} s (NOT_FOUND: request it; FAILED: stop with failedData's reason; ACTIVE: start)")
            cloud.run(self.slices.describe(name))
            cloud.run(self.slices.create(name))
            self.start(cloud, i, commit, create_time="")
        if watch:
            cloud.log(f"# --watch: every {poll_s:g} s, describe each slice and read each run's workdir; a slice "
                      "preempted (SUSPENDED) or failed after training is deleted, created and started again as "
                      "above; once every run of a lane finished, its slice is deleted:")
            for name in self.names:
                cloud.run(self.slices.delete(name))
        else:
            cloud.log("# then return: `--status` shows each run's state, `--watch` recreates preempted slices "
                      "and deletes finished ones")


# ---------------------------------------------------------------------------------------------- GKE through xpk
@dataclasses.dataclass(frozen=True)
class Xpk:
    """Workloads on a GKE cluster through xpk: one JobSet per run, restarted by JobSet on failure."""

    cluster: str
    topology: Topology
    docker_image: str
    zone: str = ""
    project: str = ""
    slices: int = 1
    max_restarts: int = 3

    def _where(self) -> list[str]:
        return [f"--cluster={self.cluster}", *([f"--zone={self.zone}"] if self.zone else []),
                *([f"--project={self.project}"] if self.project else [])]

    def workload(self, run: Run) -> str:
        """A workload name (lowercase, digits, hyphens; at most 40 characters) unique to the run."""
        name = re.sub(r"[^a-z0-9-]+", "-", f"{run.sweep}-{run.name}".lower()).strip("-")
        if len(name) > 40:
            name = name[:31].rstrip("-") + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
        return name

    def create(self, run: Run, root: str, overrides: tuple[str, ...] = (), repo: str = REPO) -> list[str]:
        """The workload of `run`: the image's copy of the repository runs its training command; so the sweep file
        must be one of the repository's files (the image holds nothing else)."""
        inside = os.path.relpath(os.path.abspath(run.config_file), repo)
        if inside.startswith(".."):
            raise CloudError(f"{run.config_file} is outside the repository {repo}: the image (Dockerfile) holds only "
                             "the repository, so put the sweep file in experiments/configs/ and rebuild the image")
        extra = tuple(overrides) + ((f"--config.mesh.dcn_data={self.slices}",) if self.slices > 1 else ())
        _python, _m, _module, _config, *args = launch.train_command(run, root, python="python", overrides=extra)
        train = ["python", "-m", "llama_jax.train", "--multihost", f"--config={inside}:{run.arg}", *args]
        command = f"cd {IMAGE_DIR} && " + shlex.join(train)
        return ["xpk", "workload", "create", *self._where(), f"--workload={self.workload(run)}",
                f"--tpu-type={self.topology.cloud_name}", f"--num-slices={self.slices}",
                f"--docker-image={self.docker_image}", f"--command={command}", f"--max-restarts={self.max_restarts}",
                "--restart-on-user-code-failure"]

    def list(self) -> list[str]:
        return ["xpk", "workload", "list", *self._where()]

    def delete(self, run: Run) -> list[str]:
        return ["xpk", "workload", "delete", *self._where(), f"--workload={self.workload(run)}", "--force"]


def parse_workload_list(text: str) -> dict[str, dict[str, str]]:
    """`xpk workload list`'s table (fixed-width columns under a header starting `Jobset Name`) -> {jobset: row}."""
    lines = text.splitlines()
    header = next((i for i, line in enumerate(lines) if line.lstrip().startswith("Jobset Name")), None)
    if header is None:
        return {}
    head = lines[header]
    names = re.findall(r"\S+(?: \S+)*", head)
    starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", head)]
    rows = {}
    for line in lines[header + 1:]:
        if not line.strip() or line.startswith("[XPK]"):
            continue
        cells = [line[start:end].strip() for start, end in zip(starts, [*starts[1:], None], strict=True)]
        row = dict(zip(names, cells, strict=True))
        rows[row["Jobset Name"]] = row
    return rows


@dataclasses.dataclass
class XpkSweep:
    """A sweep's runs as xpk workloads: one per run (JobSet restarts a failed one up to --max_restarts times, and
    each restart resumes the run's latest checkpoint); a branch is created once the run it branches from finished."""

    runs: list[Run]
    root: str
    xpk: Xpk
    overrides: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    def _listed(self, cloud: Cloud) -> dict[str, dict[str, str]]:
        return parse_workload_list(cloud.run(self.xpk.list(), quiet=True).stdout) if cloud.execute else {}

    def status(self, cloud: Cloud) -> list[tuple[str, str, str]]:
        """(run, workload, state) of every run from `xpk workload list` and the workdirs."""
        listed = self._listed(cloud)
        rows = []
        for run in self.runs:
            done, step = run_progress(run, self.root)
            row = listed.get(self.xpk.workload(run))
            if done:
                text = "finished"
            elif row is None:
                text = "no workload"
            elif row.get("Status") == "Finished":
                text = f"stopped: {row.get('Status Message', '')}"
            elif step is None:
                text = f"{row.get('Status', '').lower()}: {row.get('Status Message', '')}"
            else:
                text = f"training at step {step}"
            rows.append((run.name, self.xpk.workload(run), text))
        return rows

    def advance(self, cloud: Cloud) -> bool:
        """Create the workload of every unfinished run that has none (a branch once its source finished), delete
        those of finished runs; a workload that stopped short of its run's end is an error. Whether all finished."""
        listed = self._listed(cloud)
        finished = {run.name for run in self.runs if cloud.execute and run_progress(run, self.root)[0]}
        for run in self.runs:
            name, row = self.xpk.workload(run), listed.get(self.xpk.workload(run))
            if run.name in finished:
                if row is not None:
                    cloud.log(f"{run.name}: finished; deleting workload {name}")
                    cloud.run(self.xpk.delete(run))
            elif row is not None and row.get("Status") == "Finished":
                raise CloudError(f"workload {name} stopped before {run.name}'s last step ({row.get('Status Message')}"
                                 f"), after its restarts; see its logs (kubectl logs), then delete it with "
                                 f"{shlex.join(self.xpk.delete(run))} and launch again to resume")
            elif row is None:
                if cloud.execute and run.branch and run.branch[0] not in finished:
                    continue  # it starts from its source's checkpoint
                cloud.run(self.xpk.create(run, self.root, tuple(self.overrides.get(run.name, ()))))
        return len(finished) == len(self.runs)

    def launch(self, cloud: Cloud, *, watch: bool, poll_s: float, max_polls: int | None = None) -> None:
        """Create the workloads; with `watch`, keep advancing every `poll_s` seconds until every run finished."""
        for run in self.runs:
            self.xpk.create(run, self.root)  # refuses a sweep file the image does not hold, before anything runs
        if not cloud.execute:
            cloud.run(self.xpk.list())
            self.advance(cloud)
            if watch:
                cloud.log(f"# --watch: every {poll_s:g} s the list again; a branch's workload is created once its "
                          "source finished, a finished run's workload is deleted:")
                for run in self.runs:
                    cloud.run(self.xpk.delete(run))
            return
        for run in self.runs:  # the commit is the image's (its tag names it: see Dockerfile)
            if not (epath.Path(run.workdir(self.root)) / "run.json").exists():
                epath.Path(run.workdir(self.root)).mkdir(parents=True, exist_ok=True)
                launch.write_run_record(run, run.workdir(self.root))
        polls = 0
        while not self.advance(cloud) and watch:
            polls += 1
            if max_polls is not None and polls >= max_polls:
                raise CloudError(f"gave up after {polls} polls")
            time.sleep(poll_s)
