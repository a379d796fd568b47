"""A sweep's runs as one tidy table: `python -m experiments.collect --sweep=DIR [--out=results.csv]`.

One row per (run, logged step) of every run under DIR (`<workdir>/<sweep>`, local or gs://, read through
etils.epath): sweep, run, step, params, non-embedding params, tokens, FLOPs (llama_jax.perf.flops x tokens), the
training loss and learning rate, the held-out loss of each source (`eval/<source>/loss`), their mean under the
run's mixture weights (`eval/mixture/loss`, with its standard error over the held-out batches,
`eval/mixture/loss_se`, where the sources log theirs), any other `eval/...` value the run logged (e.g. task accuracies),
the run's sampling weight of every source in its config (`weight/<source>`, divided by their sum; the columns
mixture laws are fitted on, experiments.mixing), and whether the run has finished and whether its schedule anneals (a cosine, or a warmup-stable-decay cooldown;
not a stable phase). The final rows of finished, annealed runs are what scaling fits use.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from typing import Any

from etils import epath

from llama_jax import cli

LEADING = ("sweep", "run", "step", "params", "non_embedding_params", "tokens", "tokens_per_param", "flops", "loss",
           "lr", "eval/mixture/loss")
TRAILING = ("finished", "annealed", "schedule", "branch")


def run_config(workdir: epath.Path) -> dict[str, Any]:
    """The run's config and sweep facts: WORKDIR/run.json (experiments.launch writes it), else the config saved
    in its latest checkpoint."""
    record = workdir / "run.json"
    if record.exists():
        return json.loads(record.read_text())
    import orbax.checkpoint as ocp

    steps = ocp.utils.checkpoint_steps(workdir / "checkpoints") if (workdir / "checkpoints").exists() else []
    if not steps:
        raise FileNotFoundError(f"{workdir} has metrics but neither run.json nor a checkpoint to read its config from")
    options = ocp.CheckpointManagerOptions(read_only=True, create=False)
    with ocp.CheckpointManager(workdir / "checkpoints", options=options, item_names=("config",)) as manager:
        config = manager.restore(max(steps), args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    return {"sweep": workdir.parent.name, "run": workdir.name, "branch": None, "config": config}


def run_rows(workdir: epath.Path) -> list[dict[str, Any]]:
    """The rows of one run: its logged steps, training and held-out records of a step merged into one row."""
    from ml_collections import ConfigDict

    from llama_jax.perf import info
    from llama_jax.train.metrics import read_metrics
    from llama_jax.train.step import model_config

    record = run_config(workdir)
    config = ConfigDict(record["config"])
    facts = info.describe(model_config(config), config.train.seq_len)
    steps: dict[int, dict[str, Any]] = {}
    for metrics in read_metrics(str(workdir)):
        row = steps.setdefault(metrics["step"], {})
        row.update({k: v for k, v in metrics.items() if k in ("loss", "lr") or k.startswith("eval/")})
    weights = {name: float(w) for name, w in config.data.weights.items() if w > 0}
    total = sum(float(w) for w in config.data.weights.values())
    weight_columns = {f"weight/{name}": float(w) / total for name, w in config.data.weights.items()}
    tokens_per_step = config.train.global_batch_size * config.train.seq_len
    last = max(steps, default=0)
    optimizer = config.optimizer
    annealed = optimizer.get("schedule", "cosine") == "cosine" or optimizer.get("cooldown_fraction", 0.2) > 0
    rows = []
    for step in sorted(steps):
        values = steps[step]
        if not any(k == "loss" or k.startswith("eval/") for k in values):
            continue
        tokens = step * tokens_per_step
        sources = {name: values.get(f"eval/{name}/loss") for name in weights}
        mixture = (sum(w * sources[name] for name, w in weights.items()) / sum(weights.values())
                   if config.data.source == "mixture" and None not in sources.values() else None)
        errors = {name: values.get(f"eval/{name}/loss_se") for name in weights}  # independent across sources
        mixture_se = (math.sqrt(sum((w * errors[name]) ** 2 for name, w in weights.items())) / sum(weights.values())
                      if mixture is not None and None not in errors.values() else None)
        rows.append({
            "sweep": record["sweep"], "run": record["run"], "step": step, "params": facts["params"],
            "non_embedding_params": facts["non_embedding_params"], "tokens": tokens,
            "tokens_per_param": tokens / facts["non_embedding_params"],
            "flops": facts["train_flops_per_token"] * tokens, "eval/mixture/loss": mixture,
            **({"eval/mixture/loss_se": mixture_se} if mixture_se is not None else {}), **values,
            **(weight_columns if config.data.source == "mixture" else {}),
            "finished": last == config.train.steps, "annealed": annealed,
            "schedule": optimizer.get("schedule", "cosine"),
            "branch": "{}@{}".format(*record["branch"]) if record.get("branch") else "",
        })
    return rows


def collect(sweep_dir: str) -> list[dict[str, Any]]:
    """Rows of every run in `sweep_dir` (each subdirectory with a metrics.jsonl), runs in name order."""
    root = epath.Path(sweep_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--sweep={sweep_dir} is not a directory (expected <workdir>/<sweep>)")
    workdirs = sorted(path for path in root.iterdir() if (path / "metrics.jsonl").exists())
    if not workdirs:
        raise FileNotFoundError(f"{sweep_dir} holds no run (no <run>/metrics.jsonl); run the sweep first")
    return [row for workdir in workdirs for row in run_rows(workdir)]


def _has_runs(sweep_dir: str) -> bool:
    root = epath.Path(sweep_dir)
    return root.is_dir() and any((path / "metrics.jsonl").exists() for path in root.iterdir())


def merged(rows: list[dict[str, Any]], previous: str) -> list[dict[str, Any]]:
    """`rows` after the rows of the CSV text `previous` whose runs `rows` lacks: a study's committed table keeps
    the runs whose workdirs are gone (a fresh clone, another machine), and each run that was collected again
    replaces its old rows whole. Runs in name order, as collect() gives them."""
    fresh = {(row["sweep"], row["run"]) for row in rows}
    kept = [row for row in csv.DictReader(io.StringIO(previous)) if (row["sweep"], row["run"]) not in fresh]
    return sorted([*kept, *rows], key=lambda row: (row["sweep"], row["run"], int(row["step"])))


def to_csv(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV: the fixed columns, then every eval/... column in name order, then the flags."""
    extra = sorted({key for row in rows for key in row} - set(LEADING) - set(TRAILING))
    columns = [*LEADING, *extra, *TRAILING]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row.get(key) is None else row[key] for key in columns})
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.collect", description=__doc__.split("\n")[0])
    parser.add_argument("--sweep", required=True, help="the sweep's directory, <workdir>/<sweep> (local or gs://)")
    parser.add_argument("--out", help="CSV to write (default: standard output)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    mode.add_argument("--merge", action="store_true",
                      help="update --out: the sweep's runs replace their rows, every other run's rows are kept")
    args = cli.parse_args(parser, sys.argv[1:])
    if args.merge and args.out is None:
        raise ValueError("--merge updates --out; give --out=CSV")
    out = epath.Path(args.out) if args.out else None
    if args.merge and out.exists() and not _has_runs(args.sweep):  # e.g. every run skipped (sweep --skip-collected)
        print(f"{args.sweep} holds no run yet: {args.out} unchanged")
        return
    rows = collect(args.sweep)
    if args.merge and out.exists():
        rows = merged(rows, out.read_text())
    text = to_csv(rows)
    if out is None:
        sys.stdout.write(text)
        return
    if out.exists() and not (args.overwrite or args.merge):
        raise FileExistsError(f"{args.out} exists; pass --overwrite to replace it or --merge to update it, "
                              "or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"{args.out}: {len(rows)} rows of {len({row['run'] for row in rows})} runs")


if __name__ == "__main__":
    cli.run(main)
