"""Where training metrics go: WORKDIR/metrics.jsonl (one JSON object per logged step), TensorBoard event
files in WORKDIR/tensorboard, a loss curve WORKDIR/loss.png at the end, and where the run's wall time went
(WORKDIR/timing.jsonl, one line per process that trained it). Only process 0 writes."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator
from typing import Any

import jax
from etils import epath

from llama_jax.perf.flops import peak_flops, train_flops_per_token
from llama_jax.train.step import model_config


class Throughput:
    """Accumulates step and data-wait times between two logged steps; turns them into rates."""

    def __init__(self, config):
        self.tokens_per_step = config.train.tokens_per_step
        self.flops_per_token = train_flops_per_token(model_config(config), config.train.seq_len)
        peaks = [peak_flops(d.device_kind) for d in jax.devices()]
        self.peak = None if None in peaks else sum(peaks)  # every chip of the job
        self.reset()

    def reset(self) -> None:
        self.steps, self.step_time, self.data_wait = 0, 0.0, 0.0

    def add(self, step_time_s: float, data_wait_s: float) -> None:
        self.steps += 1
        self.step_time += step_time_s
        self.data_wait += data_wait_s

    def summary(self) -> dict[str, float | None]:
        """step_time_s (mean, seconds), tokens_per_s, mfu (None where the peak is unknown, e.g. CPU) and
        data_wait_fraction (share of the wall time spent waiting for batches) since the last reset."""
        step_time = self.step_time / max(self.steps, 1)
        tokens_per_s = self.tokens_per_step / step_time if step_time else 0.0
        mfu = tokens_per_s * self.flops_per_token / self.peak if self.peak else None
        wait = self.data_wait / self.step_time if self.step_time else 0.0
        return {"step_time_s": step_time, "tokens_per_s": tokens_per_s, "mfu": mfu, "data_wait_fraction": wait}


def seconds_since_process_start() -> float | None:
    """Wall seconds since this process was started (Linux's /proc), None where that is not known: the
    interpreter's start and the imports before the run's own code begins."""
    try:
        with open("/proc/self/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        with open("/proc/uptime") as f:
            return max(0.0, float(f.read().split()[0]) - started)
    except (OSError, ValueError, IndexError):
        return None


class Phases:
    """Wall seconds of a training process's phases: `with phases("eval"): ...` adds to "eval". `record()` gives
    them with `start` (process start to this object: interpreter, imports, flags), `other` (the rest of the
    time since) and `total`, the sums a sweep's overhead is read from (experiments.overhead)."""

    started: set[int] = set()  # processes whose start is charged: to the first run one trains (a sweep's
    # in-process runner trains many, each of the others starts at no cost)

    def __init__(self):
        self.start = None if os.getpid() in Phases.started else seconds_since_process_start()
        Phases.started.add(os.getpid())
        self.created = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        tick = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - tick)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def record(self) -> dict[str, float]:
        since = time.perf_counter() - self.created
        start = self.start or 0.0
        return {"start_s": start, **{f"{k}_s": v for k, v in self.seconds.items()},
                "other_s": since - sum(self.seconds.values()), "total_s": start + since}

    def write(self, workdir: str, first_step: int, last_step: int) -> None:
        """Add this process's line to WORKDIR/timing.jsonl (a resumed run adds one line per process)."""
        path = epath.Path(workdir) / "timing.jsonl"
        line = json.dumps({"first_step": first_step, "last_step": last_step, **self.record()}) + "\n"
        path.write_text((path.read_text() if path.exists() else "") + line)


class MetricsWriter:
    """Writes one record per logged step to metrics.jsonl and TensorBoard (process 0 only).

    A run resumed at `start_step` first drops what an interrupted run logged after that step, so both
    files show each step once, as the resumed run computes it again.
    """

    def __init__(self, workdir: str, enabled: bool, start_step: int = 0):
        self.enabled = enabled
        self.path = epath.Path(workdir) / "metrics.jsonl"
        # An object store (gs://, read through etils.epath as collect and the pod launcher's --status do) cannot
        # append: there the whole file is rewritten at each logged step (one short line per step); a local file
        # is appended to, so a killed run leaves every line it logged.
        self.appendable = "://" not in workdir
        self.records: list[dict[str, Any]] = []
        if enabled:
            from tensorboardX import SummaryWriter  # heavy import, and only process 0 needs it

            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():
                # A fresh start (step 0) keeps nothing: a run killed before its first checkpoint logs step 0 again.
                self.records = [r for r in read_metrics(workdir) if r["step"] <= start_step] if start_step else []
                self._rewrite()
            purge = start_step + 1 if start_step else None
            self.tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=purge)

    def _rewrite(self) -> None:
        self.path.write_text("".join(json.dumps(r) + "\n" for r in self.records))

    def write(self, step: int, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **record}
        if self.appendable:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        else:
            self.records.append(record)
            self._rewrite()
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                self.tensorboard.add_scalar(key, value, step)
        self.tensorboard.flush()

    def close(self) -> None:
        if self.enabled:
            self.tensorboard.close()


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    """The complete records of WORKDIR/metrics.jsonl (local or gs://, through etils.epath), in order (not a line
    a killed run left half written)."""
    *complete, _partial = (epath.Path(workdir) / "metrics.jsonl").read_text().split("\n")
    return [json.loads(line) for line in complete if line.strip()]


def plot_loss_curve(workdir: str) -> str:
    """Draw training and held-out loss against tokens seen into WORKDIR/loss.png, with a second panel of the
    downstream accuracies (`eval/<task>/<acc...>`, the paper's Figure 2) when the run evaluated any; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(workdir)
    eval_keys = sorted({k for r in records for k in r if k.startswith("eval/")})
    accuracy_keys = [k for k in eval_keys if k.split("/")[-1] in ("acc", "acc_norm", "acc_ratio", "exact_match")]
    fig, axes = plt.subplots(1, 2 if accuracy_keys else 1, figsize=(13 if accuracy_keys else 7, 4.5), squeeze=False)
    ax = axes[0, 0]
    train = [(r["tokens_seen"], r["loss"]) for r in records if "loss" in r]
    ax.plot(*zip(*train, strict=True), label="train")
    for key in (k for k in eval_keys if k.endswith("/loss")):
        points = [(r["tokens_seen"], r[key]) for r in records if key in r]
        ax.plot(*zip(*points, strict=True), marker="o", label=f"held-out {key.split('/')[1]}")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("next-token cross-entropy (nats)")
    ax.grid(alpha=0.3)
    ax.legend()
    if accuracy_keys:
        ax = axes[0, 1]
        for key in accuracy_keys:
            points = [(r["tokens_seen"], r[key]) for r in records if key in r]
            ax.plot(*zip(*points, strict=True), marker="o", label=key.removeprefix("eval/"))
        ax.set_xlabel("tokens seen")
        ax.set_ylabel("zero-shot accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
    path = os.path.join(workdir, "loss.png")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
