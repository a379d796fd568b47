"""Where a sweep's wall time went: `python -m experiments.overhead --sweep=DIR [--json]`.

Each training process writes WORKDIR/timing.jsonl (llama_jax.train.metrics.Phases: process start and imports,
setup (mesh, shardings, restore, data streams, evaluations), compile, steps, waiting for batches, evaluation,
checkpoints, the loss plot, the rest). This sums them over every run of `<workdir>/<sweep>` and prints one row
per run and the sweep's total, with the share of the wall time that is not training steps: the overhead a
sweep pays beyond what its runs compute (issue: no minute of a sweep spent on anything but training).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable

from etils import epath

from llama_jax import cli

PHASES = ("start", "setup", "compile", "steps", "data_wait", "eval", "checkpoint", "plot", "other")


def run_seconds(lines: Iterable[dict]) -> dict[str, float]:
    """A run's seconds per phase, summed over the processes that trained it (one per line of timing.jsonl)."""
    totals = dict.fromkeys((*PHASES, "total"), 0.0)
    for line in lines:
        for name in totals:
            totals[name] += float(line.get(f"{name}_s", 0.0))
    return totals


def sweep_seconds(sweep_dir: str) -> dict[str, dict[str, float]]:
    """{run: seconds per phase} for every run of `sweep_dir` with a timing.jsonl, in name order."""
    root = epath.Path(sweep_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--sweep={sweep_dir} is not a directory (expected <workdir>/<sweep>)")
    runs = {}
    for path in sorted(root.iterdir()):
        timing = path / "timing.jsonl"
        if timing.exists():
            runs[path.name] = run_seconds(json.loads(line) for line in timing.read_text().splitlines() if line.strip())
    if not runs:
        raise FileNotFoundError(f"{sweep_dir} holds no run with a timing.jsonl (written when a training process ends)")
    return runs


def overhead(seconds: dict[str, float]) -> float:
    """The share of the wall time that is not training steps."""
    return 1.0 - seconds["steps"] / seconds["total"] if seconds["total"] else 0.0


def table(runs: dict[str, dict[str, float]]) -> str:
    """A Markdown table: one row per run, then the sweep's total; seconds per phase and the overhead share."""
    total = {name: sum(run[name] for run in runs.values()) for name in (*PHASES, "total")}
    header = ["run", *PHASES, "total", "overhead"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, run in [*runs.items(), (f"all {len(runs)} runs", total)]:
        cells = [f"{run[p]:.1f}" for p in (*PHASES, "total")]
        rows.append("| " + " | ".join([name, *cells, f"{overhead(run):.0%}"]) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.overhead", description=__doc__.split("\n")[0])
    parser.add_argument("--sweep", required=True, help="the sweep's directory, <workdir>/<sweep> (local or gs://)")
    parser.add_argument("--json", action="store_true", help="print {run: {phase: seconds}} as JSON instead")
    args = cli.parse_args(parser, sys.argv[1:])
    runs = sweep_seconds(args.sweep)
    print(json.dumps(runs, indent=1) if args.json else table(runs))


if __name__ == "__main__":
    cli.run(main)
