"""A scripted stand-in for `gcloud`, `xpk` and a TPU VM's metadata server, on PATH, for the pod launcher's tests.

`FakeCloud(tmp_path, scenario)` writes executable shims `gcloud`, `xpk` and `curl` into tmp_path/bin; each runs
this file, which records the call (argv, one JSON line in calls.jsonl) and answers from state.json in the formats
of the real tools:

- `gcloud compute tpus queued-resources create/describe/delete` (and `gcloud alpha ...`): the flags the real
  command accepts (an unknown one exits 2 as gcloud does); `describe --format=json` prints the QueuedResource
  resource (name, createTime, tpu.nodeSpec, the tier, state.state, state.stateInitiator, failedData.error). Each
  describe moves a queued resource one state along the scenario's list for its incarnation (the last repeats);
  a missing one is `NOT_FOUND` on stderr, exit 1.
- `gcloud compute tpus tpu-vm ssh NAME --worker=all --command=CMD` (and `queued-resources ssh --node=all`): CMD
  runs under bash on every worker of an ACTIVE slice, each a directory of its own as HOME, with the environment a
  TPU VM gives: `curl` of the metadata server's agent-worker-number, and the cluster description that
  `jax.distributed.initialize()` reads (here SLURM's variables, which JAX detects on a CPU machine as it detects
  the TPU metadata on a TPU VM). A recreated slice starts with fresh worker directories, as fresh VMs do.
- `gcloud storage cp [-r] SRC DST` between local paths (the tests' bucket is a directory; gs:// is refused).
- `xpk workload create/list/delete`: the flags of xpk's parser; `list` prints xpk's fixed-width table, each call
  moving a workload along its scenario's (Status, Status Message) list.

The one thing a worker does not do here is install the lock's dependencies (pip has no index on a test machine):
each worker's VM image holds the env directory named in `worker_env`, whose `bin/python` is this interpreter.
With `preempt_after={NAME: STEP}`, the first VMs of NAME train up to step STEP and wait there for their
preemption (`preempt`), so that it lands at a known step.

The scenario: {"queued_resources": {NAME: [[state, ...] per incarnation]}, "create_errors": {NAME: message},
"ssh_failures": {NAME: n}, "workers": N, "workloads": {WORKLOAD: [[status, message], ...]}}; a state
"FAILED: message" fails with that message, "SUSPENDED" is a preemption (stateInitiator SERVICE). `preempt(name)`
preempts an ACTIVE slice now: its training processes get SIGTERM, as a TPU VM's do, and its state becomes
SUSPENDED.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.abspath(__file__)
PROJECT = "fake-project"


# ---------------------------------------------------------------------------------------------- the test's side
class FakeCloud:
    """The shims and the state they share; `calls()` is every call made, in order."""

    def __init__(self, tmp_path, scenario: dict, worker_env: dict[str, str] | None = None,
                 preempt_after: dict[str, int] | None = None):
        self.dir = str(tmp_path / "cloud")
        self.bin = os.path.join(self.dir, "bin")
        os.makedirs(self.bin)
        for tool in ("gcloud", "xpk", "curl"):
            path = os.path.join(self.bin, tool)
            with open(path, "w") as f:
                f.write(f'#!/bin/sh\nexec {sys.executable} {HERE} {self.dir} {tool} "$@"\n')
            os.chmod(path, 0o755)
        state = {"scenario": scenario, "queued_resources": {}, "workloads": {}, "clock": 0,
                 "worker_env": worker_env or {}, "preempt_after": preempt_after or {}}
        _save(self.dir, state)

    def env(self, **extra: str) -> dict[str, str]:
        """This process's environment with the shims first on PATH (the real gcloud is never reached)."""
        return {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}", **extra}

    @contextlib.contextmanager
    def on_path(self):
        previous = os.environ["PATH"]
        os.environ["PATH"] = f"{self.bin}:{previous}"
        try:
            yield self
        finally:
            os.environ["PATH"] = previous

    def calls(self) -> list[list[str]]:
        """Every call, in order: ["launcher" or "worker", tool, *argv]."""
        path = os.path.join(self.dir, "calls.jsonl")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def state(self) -> dict:
        return _load(self.dir)

    def preempt(self, name: str) -> None:
        """Preempt the ACTIVE slice `name`: SIGTERM to its workers' processes (they save a checkpoint and stop),
        then state SUSPENDED, initiated by the service."""
        with _locked(self.dir) as state:
            resource = state["queued_resources"][name]
            assert resource["state"] == "ACTIVE", f"{name} is {resource['state']}, not ACTIVE"
            _stop_workers(self.dir, name, resource)
            resource.update(state="SUSPENDED", initiator="SERVICE", states=["SUSPENDED"])

    def shutdown(self) -> None:
        """Stop every worker still running (a test's clean-up, whatever it left)."""
        with _locked(self.dir) as state:
            for name, resource in state["queued_resources"].items():
                _stop_workers(self.dir, name, resource)

    def worker_homes(self, name: str) -> list[str]:
        resource = self.state()["queued_resources"][name]
        return [_home(self.dir, name, resource["incarnation"], i) for i in range(resource["workers"])]


# ---------------------------------------------------------------------------------------------- state
def _load(directory: str) -> dict:
    with open(os.path.join(directory, "state.json")) as f:
        return json.load(f)


def _save(directory: str, state: dict) -> None:
    path = os.path.join(directory, "state.json")
    with open(path + ".tmp", "w") as f:
        json.dump(state, f, indent=1)
    os.replace(path + ".tmp", path)


@contextlib.contextmanager
def _locked(directory: str):
    """The shared state under a file lock, saved on leaving."""
    with open(os.path.join(directory, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = _load(directory)
        try:
            yield state
        finally:  # a call that fails (exits) keeps what it changed before, as the cloud would
            _save(directory, state)


def _home(directory: str, name: str, incarnation: int, worker: int) -> str:
    return os.path.join(directory, "vms", f"{name}-{incarnation}", f"worker-{worker}")


def _stop_workers(directory: str, name: str, resource: dict) -> None:
    """SIGTERM every process group a worker script of this slice started (its pid files), and wait for them."""
    groups = []
    for worker in range(resource["workers"]):
        home = os.path.join(_home(directory, name, resource["incarnation"], worker), "llama_jax")
        for entry in os.listdir(home) if os.path.isdir(home) else []:
            if entry.endswith(".pid"):
                with open(os.path.join(home, entry)) as f:
                    groups.append(int(f.read().strip()))
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + 300
    while any(_alive(pgid) for pgid in groups):
        if time.monotonic() > deadline:
            for pgid in groups:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
            raise AssertionError(f"the workers of {name} did not stop within 300 s of SIGTERM")
        time.sleep(0.1)


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) still counts in killpg; look at the state in /proc
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


# ---------------------------------------------------------------------------------------------- the shims' side
def fail(message: str, status: int = 1):
    print(message, file=sys.stderr)
    sys.exit(status)


def flags(args: list[str], allowed: set[str], command: str) -> tuple[list[str], dict[str, str]]:
    """Positional arguments and --flag=value / --flag values; an unknown flag exits 2 as gcloud does."""
    positional, values = [], {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-"):
            key, has_value, value = arg.partition("=")
            if key not in allowed:
                fail(f"ERROR: ({command}) unrecognized arguments: {arg}", 2)
            if not has_value and allowed and key in VALUED and i + 1 < len(args):
                i += 1
                value = args[i]
            values[key] = value if (has_value or key in VALUED) else "true"
        else:
            positional.append(arg)
        i += 1
    return positional, values


VALUED = {"--zone", "--project", "--accelerator-type", "--runtime-version", "--node-id", "--node-count",
          "--node-prefix", "--format", "--worker", "--node", "--command", "--cluster", "--workload", "--tpu-type",
          "--num-slices", "--docker-image", "--max-restarts", "--filter-by-status", "--filter-by-job"}
CREATE = {"--zone", "--project", "--accelerator-type", "--runtime-version", "--node-id", "--node-count",
          "--node-prefix", "--spot", "--reserved", "--best-effort", "--async", "--quiet", "-q"}


def queued_resource_json(name: str, zone: str, resource: dict) -> dict:
    """The QueuedResource resource as the TPU API (and `describe --format=json`) gives it."""
    parent = f"projects/{PROJECT}/locations/{zone}"
    state = {"state": resource["state"]}
    if resource["state"] == "FAILED":
        state["failedData"] = {"error": {"code": 8, "message": resource["reason"]}}
    if resource["state"] in ("SUSPENDING", "SUSPENDED"):
        state["stateInitiator"] = resource["initiator"]
        state[f"{resource['state'].lower()}Data"] = {}
    node = {"acceleratorType": resource["accelerator_type"], "runtimeVersion": resource["runtime_version"],
            "networkConfig": {"enableExternalIps": True, "network": "default"}}
    out = {"createTime": resource["create_time"], "name": f"{parent}/queuedResources/{name}",
           "state": state, "tpu": {"nodeSpec": [{"node": node, "nodeId": name, "parent": parent}]}}
    if resource["tier"]:
        out[{"spot": "spot", "best-effort": "bestEffort", "reserved": "guaranteed"}[resource["tier"]]] = \
            {"reserved": True} if resource["tier"] == "reserved" else {}
    return out


def queued_resources(directory: str, verb: str, args: list[str], alpha: bool) -> None:
    command = f"gcloud{'.alpha' if alpha else ''}.compute.tpus.queued-resources.{verb}"
    if verb == "create":
        allowed = CREATE if alpha else CREATE - {"--best-effort"}
    else:
        allowed = {"describe": {"--zone", "--project", "--format"}, "delete": {"--zone", "--project", "--force",
                   "--quiet", "-q", "--async"}, "ssh": {"--zone", "--project", "--node", "--worker", "--command"}
                   }.get(verb)
        if allowed is None:
            fail(f"ERROR: ({command}) Invalid choice: '{verb}'", 2)
    positional, values = flags(args, allowed, command)
    if len(positional) != 1 or "--zone" not in values:
        fail(f"ERROR: ({command}) QUEUED_RESOURCE and --zone are required", 2)
    name, zone = positional[0], values["--zone"]
    missing = f"ERROR: ({command}) NOT_FOUND: Resource '{f'projects/{PROJECT}/locations/{zone}'}" \
              f"/queuedResources/{name}' was not found"
    with _locked(directory) as state:
        resources, scenario = state["queued_resources"], state["scenario"]
        if verb == "create":
            if not {"--accelerator-type", "--runtime-version"} <= set(values):
                fail(f"ERROR: ({command}) --accelerator-type and --runtime-version are required", 2)
            if ("--node-id" in values) == ("--node-count" in values):
                fail(f"ERROR: ({command}) exactly one of --node-id or --node-count is required", 2)
            if name in resources:
                fail(f"ERROR: ({command}) ALREADY_EXISTS: queued resource {name} already exists")
            if name in scenario.get("create_errors", {}):
                fail(f"ERROR: ({command}) {scenario['create_errors'][name]}")
            tiers = [tier for tier in ("spot", "reserved", "best-effort") if f"--{tier}" in values]
            incarnation = state.setdefault("incarnations", {}).get(name, -1) + 1
            state["incarnations"][name] = incarnation
            plans = scenario.get("queued_resources", {}).get(name, [["PROVISIONING", "ACTIVE"]])
            state["clock"] += 1
            resources[name] = {
                "incarnation": incarnation, "states": list(plans[min(incarnation, len(plans) - 1)]),
                "state": "CREATING", "initiator": "", "reason": "", "tier": tiers[0] if tiers else "",
                "create_time": f"2026-12-02T10:{state['clock'] // 60:02d}:{state['clock'] % 60:02d}.000000Z",
                "accelerator_type": values["--accelerator-type"], "runtime_version": values["--runtime-version"],
                "workers": scenario.get("workers", 1) * int(values.get("--node-count", 1)),
            }
            print(f"Create request issued for: [{name}]")
            return
        if name not in resources:
            fail(missing)
        resource = resources[name]
        if verb == "describe":
            if resource["states"]:
                step = resource["states"].pop(0) if len(resource["states"]) > 1 else resource["states"][0]
                state_name, _, reason = step.partition(":")
                if state_name in ("SUSPENDING", "SUSPENDED") and resource["state"] == "ACTIVE":
                    _stop_workers(directory, name, resource)
                resource.update(state=state_name, reason=reason.strip(),
                                initiator="SERVICE" if state_name.startswith("SUSPEND") else "")
            print(json.dumps(queued_resource_json(name, zone, resource), indent=2))
        elif verb == "delete":
            _stop_workers(directory, name, resource)
            del resources[name]
            print(f"Deleted queued resource [{name}].")
        elif verb == "ssh":
            if resource["state"] != "ACTIVE" or values.get("--worker") != "all" or values.get("--node") != "all":
                fail(f"ERROR: ({command}) {name} is {resource['state']}, or --node=all --worker=all is missing")
            run_on_workers(directory, state, name, resource, values["--command"])


def tpu_vm_ssh(directory: str, args: list[str]) -> None:
    command = "gcloud.compute.tpus.tpu-vm.ssh"
    positional, values = flags(args, {"--zone", "--project", "--worker", "--command"}, command)
    if len(positional) != 1 or "--command" not in values or "--zone" not in values:
        fail(f"ERROR: ({command}) TPU, --zone and --command are required", 2)
    name = positional[0]
    with _locked(directory) as state:
        resource = state["queued_resources"].get(name)
        if resource is None or resource["state"] != "ACTIVE":
            fail(f"ERROR: ({command}) NOT_FOUND: TPU node {name} does not exist or is not READY")
        if values.get("--worker") != "all":
            fail(f"ERROR: ({command}) the fake runs commands on every worker only (--worker=all)")
        run_on_workers(directory, state, name, resource, values["--command"])


def run_on_workers(directory: str, state: dict, name: str, resource: dict, command: str) -> None:
    """`command` under bash on every worker, as the TPU VM's ssh session would run it; the first failure fails.
    The scenario's "ssh_failures": {NAME: n} makes the first n sessions fail as an unreachable VM's do."""
    failures = state["scenario"].get("ssh_failures", {})
    if failures.get(name, 0) > 0:
        failures[name] -= 1
        fail("ssh: connect to host 10.130.0.12 port 22: Connection refused\n"
             "ERROR: (gcloud.compute.tpus.tpu-vm.ssh) [/usr/bin/ssh] exited with return code [255].", 255)
    workers = resource["workers"]
    job_id = free_job_id()
    for worker in range(workers):
        home = _home(directory, name, resource["incarnation"], worker)
        if not os.path.isdir(home):  # a fresh VM: its image holds the env the test provides
            stop = state["preempt_after"].get(name) if resource["incarnation"] == 0 else None
            for env_name, python in state["worker_env"].items():
                env_bin = os.path.join(home, "llama_jax", env_name, "bin")
                os.makedirs(env_bin)
                with open(os.path.join(env_bin, "python"), "w") as f:
                    f.write("#!/bin/sh\n")
                    if stop is not None:  # training waits after step `stop` for the preemption
                        f.write(f'if [ "$1" = -m ] && [ "$2" = llama_jax.train ]; then shift 2; PYTHONPATH="$PWD" '
                                f'exec {python} {HERE} --train-until-sigterm {stop} "$@"; fi\n')
                    f.write(f'exec {python} "$@"\n')
                os.chmod(os.path.join(env_bin, "python"), 0o755)
                open(os.path.join(home, "llama_jax", env_name, ".installed"), "w").close()
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OLDPWD")}
        env.update(HOME=home, FAKE_WORKER=str(worker), SLURM_JOB_ID=str(job_id), SLURM_STEP_NODELIST="localhost",
                   SLURM_NTASKS=str(workers), SLURM_PROCID=str(worker), SLURM_LOCALID="0")
        result = subprocess.run(["bash", "-c", command], cwd=home, env=env, capture_output=True, text=True,
                                timeout=300)
        sys.stdout.write(result.stdout)
        if result.returncode:
            fail(f"{result.stderr}\nERROR: (gcloud.compute.tpus.tpu-vm.ssh) [{name} worker {worker}] "
                 f"exit {result.returncode}")


def free_job_id() -> int:
    """A SLURM job id whose coordinator port (JAX: 61440 + id % 4096) is free on this machine."""
    for job_id in random.sample(range(1, 4096), 64):
        with socket.socket() as s:
            try:
                s.bind(("localhost", 61440 + job_id))
            except OSError:
                continue
            return job_id
    raise AssertionError("no free port in 61440..65535 for the workers' coordinator")


def storage_cp(args: list[str]) -> None:
    positional, values = flags(args, {"-q", "--quiet", "-r", "--recursive"}, "gcloud.storage.cp")
    if len(positional) != 2:
        fail("ERROR: (gcloud.storage.cp) give one SOURCE and a DESTINATION", 2)
    source, destination = positional
    if "://" in source + destination:
        fail("ERROR: (gcloud.storage.cp) the fake cloud has no buckets: use local paths")
    if not os.path.exists(source):
        fail(f"ERROR: (gcloud.storage.cp) The following URLs matched no objects or files: {source}")
    if destination.endswith("/") or os.path.isdir(destination):
        destination = os.path.join(destination, os.path.basename(source.rstrip("/")))
    os.makedirs(os.path.dirname(os.path.abspath(destination)), exist_ok=True)
    if os.path.isdir(source):
        if not ("-r" in values or "--recursive" in values):
            fail(f"ERROR: (gcloud.storage.cp) {source} is a directory: give -r")
        shutil.copytree(source, destination, dirs_exist_ok=True)
    else:
        shutil.copyfile(source, destination)


def gcloud(directory: str, args: list[str]) -> None:
    alpha = args[:1] == ["alpha"]
    args = args[1:] if alpha else args
    if args[:3] == ["compute", "tpus", "queued-resources"] and len(args) > 3:
        queued_resources(directory, args[3], args[4:], alpha)
    elif args[:4] == ["compute", "tpus", "tpu-vm", "ssh"]:
        tpu_vm_ssh(directory, args[4:])
    elif args[:2] == ["storage", "cp"]:
        storage_cp(args[2:])
    else:
        fail(f"ERROR: (gcloud) the fake does not know `gcloud {' '.join(args[:4])}`", 2)


XPK_COLUMNS = ("Jobset Name", "Created Time", "Priority", "TPU VMs Needed", "TPU VMs Running/Ran", "TPU VMs Done",
               "Status", "Status Message", "Status Time")


def xpk(directory: str, args: list[str]) -> None:
    if args[:1] != ["workload"] or len(args) < 2:
        fail("xpk: the fake knows `xpk workload create|list|delete` only", 2)
    verb, rest = args[1], args[2:]
    shared = {"--cluster", "--zone", "--project"}
    allowed = {"create": shared | {"--workload", "--tpu-type", "--num-slices", "--docker-image", "--command",
                                   "--max-restarts", "--restart-on-user-code-failure"},
               "list": shared | {"--filter-by-status", "--filter-by-job"},
               "delete": shared | {"--workload", "--force"}}.get(verb)
    if allowed is None:
        fail(f"xpk workload: invalid choice: '{verb}'", 2)
    _, values = flags(rest, allowed, f"xpk workload {verb}")
    if "--cluster" not in values:
        fail("xpk workload: error: the following arguments are required: --cluster", 2)
    print("[XPK] Starting xpk")
    with _locked(directory) as state:
        workloads = state["workloads"]
        if verb == "create":
            missing = {"--workload", "--tpu-type", "--command"} - set(values)
            if missing:
                fail(f"xpk workload create: error: the following arguments are required: {', '.join(sorted(missing))}", 2)
            if values["--workload"] in workloads:
                fail(f"[XPK] Workload {values['--workload']} already exists. XPK Exiting.")
            plan = state["scenario"].get("workloads", {}).get(values["--workload"], [["Admitted", "Admitted by ClusterQueue cluster-queue"]])
            state["clock"] += 1
            workloads[values["--workload"]] = {"plan": plan, "status": plan[0], "values": values,
                                               "created": f"2026-12-02T11:00:{state['clock'] % 60:02d}Z"}
            print(f"[XPK] Follow your workload here: https://console.cloud.google.com/kubernetes/service/{values['--workload']}")
        elif verb == "list":
            rows = [XPK_COLUMNS]
            for name, workload in workloads.items():
                if len(workload["plan"]) > 1:
                    workload["status"] = workload["plan"].pop(0)
                else:
                    workload["status"] = workload["plan"][0]
                status, message = workload["status"]
                rows.append((name, workload["created"], "medium", "4", "4", "<none>", status, message,
                             workload["created"]))
            widths = [max(len(row[i]) for row in rows) + 3 for i in range(len(XPK_COLUMNS))]
            print("[XPK] Task: `List Jobs with filter-by-status=EVERYTHING` is implemented by the following command")
            for row in rows:
                print("".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        else:
            if "--workload" not in values or values["--workload"] not in workloads:
                fail(f"[XPK] No workload {values.get('--workload')} on cluster {values['--cluster']}")
            del workloads[values["--workload"]]
            print(f"[XPK] Deleted workload {values['--workload']}")


def curl(args: list[str]) -> None:
    """The metadata server of a TPU VM: agent-worker-number is the worker's index."""
    url = next((arg for arg in args if arg.startswith("http://metadata.google.internal/")), None)
    if url is None or not url.endswith("/agent-worker-number"):
        sys.exit(22)  # curl -f on a 404
    print(os.environ["FAKE_WORKER"], end="")


def train_until_sigterm(stop: int) -> None:
    """`python -m llama_jax.train ARGS` whose stream waits, before the batch after step `stop`, for SIGTERM; the
    training then takes that batch, sees the preemption, saves the checkpoint of step `stop` + 1 and exits: a
    preemption at a known step, with no race against the training's speed."""
    import threading

    from helpers import hooked_streams

    from llama_jax import cli
    from llama_jax.train import loop as train

    def wait_for_sigterm() -> None:
        received, previous = threading.Event(), signal.getsignal(signal.SIGTERM)

        def handler(signum, frame):
            received.set()
            if callable(previous):
                previous(signum, frame)  # the training's own flag

        signal.signal(signal.SIGTERM, handler)
        while not received.wait(0.05):
            pass
        signal.signal(signal.SIGTERM, previous)

    train.data_streams = hooked_streams(train, stop, wait_for_sigterm)
    sys.argv = [sys.argv[0], *sys.argv[3:]]
    train.define_flags()
    cli.run_absl(train.main)


if __name__ == "__main__":
    if sys.argv[1] == "--train-until-sigterm":
        train_until_sigterm(int(sys.argv[2]))
    state_dir, tool, *argv = sys.argv[1:]
    if tool != "curl":  # every call, and who made it: a worker (FAKE_WORKER is set on them) or the launcher
        with open(os.path.join(state_dir, "calls.jsonl"), "a") as log:
            log.write(json.dumps(["worker" if "FAKE_WORKER" in os.environ else "launcher", tool, *argv]) + "\n")
    {"gcloud": lambda: gcloud(state_dir, argv), "xpk": lambda: xpk(state_dir, argv), "curl": lambda: curl(argv)}[tool]()
