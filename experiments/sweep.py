"""Sweeps: a study declared in one experiment file, expanded into locked run configs, tabulated with what each
run costs, and run locally (experiments.launch), on a Ray cluster (experiments.ray_runner) or on TPU pods
(experiments.pod).

    python -m experiments.sweep --config=experiments/configs/paper_sweep.py --dry-run --topology=v5p-512
    python -m experiments.sweep --config=experiments/configs/cpu_sweep.py --workdir=workdirs      # trains them
    python -m experiments.sweep --config=... --runner=ray [--address=HEAD:6379] [--cpus-per-run=8] \
        --workdir=/shared/workdirs                                          # as tasks on a Ray cluster
    python -m experiments.sweep --config=experiments/configs/paper_sweep.py --launch=tpu --topology=v5p-512 \\
        --tpu=NAME --zone=ZONE --workdir=gs://BUCKET [--max_slices=K] [--spot] [--execute] [--watch | --status]
    python -m experiments.sweep --config=... --launch=xpk --topology=v5p-512 --cluster=C --docker-image=IMAGE ...

A sweep file defines `get_config(arg)`, the locked config of the run that the spec `arg` describes
(`size=7b,tokens=1e12`, experiments.spec), `sweep()`, the specs of its runs, and `data_tokens(config)`, the unique
tokens of each data source (for the epochs the mixture implies; {} when unknown). Runs are named
`<size>_<tokens>[_<knob>]` and live in `<workdir>/<sweep>/<name>`. A "wsd" run whose stable phase another run
of the sweep covers (the same run but for the schedule's length, keeping the checkpoint of its cooldown start in
`checkpoint.keep_steps`) is a cooldown branch of that run: it trains only its cooldown.

N below is the non-embedding parameter count (Kaplan et al.; the input and output tables excluded), the size
measure of the study's fits; `params` counts everything. FLOPs are llama_jax.perf.flops' 6 x (all but the input
embedding) + causal attention per token.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import re
import sys
from typing import Any

from experiments import ray_runner, spec
from experiments.runs import Run
from llama_jax import cli

CHINCHILLA_TOKENS_PER_PARAM = 20  # Hoffmann et al. 2022, Table 3 (approach 1)
DEFAULT_FIT_CACHE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "aot_fit.jsonl")


def load(config_file: str):
    """The sweep file `config_file` as a module, checked to define get_config, sweep and data_tokens."""
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"sweep file {config_file} does not exist; e.g. experiments/configs/cpu_sweep.py")
    module_spec = importlib.util.spec_from_file_location(f"sweep_{spec_stem(config_file)}", config_file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    missing = [name for name in ("get_config", "sweep", "data_tokens") if not hasattr(module, name)]
    if missing:
        raise ValueError(f"{config_file} is not a sweep file: it lacks {', '.join(missing)} (a sweep file defines "
                         "get_config(arg), sweep() and data_tokens(config))")
    return module


def spec_stem(config_file: str) -> str:
    """The sweep's name: its file name without `.py`."""
    return os.path.splitext(os.path.basename(config_file))[0]


def expand(config_file: str, only: str | None = None) -> list[Run]:
    """The runs of the sweep in `config_file` (those whose name matches the regular expression `only`, and the
    runs they branch from), each with its locked config, stable-phase runs before their branches."""
    module = load(config_file)
    runs = []
    for arg in module.sweep():
        config = module.get_config(arg)
        if not config.is_locked:
            raise ValueError(f"{config_file}: get_config({arg!r}) returned an unlocked config; end it with c.lock() "
                             "so that a mistyped override is an error")
        name = spec.parse(arg, knobs=None, flags=None).name
        runs.append(Run(spec_stem(config_file), name, arg, config_file, config))
    names = [run.name for run in runs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"{config_file}: sweep() lists runs named {duplicates} more than once")
    runs = [dataclasses.replace(run, branch=branch_source(run, runs)) for run in runs]
    if only is not None:
        try:
            pattern = re.compile(only)
        except re.error as error:
            raise cli.UsageError(f"--only={only!r} is not a regular expression: {error}") from None
        wanted = {run.name for run in runs if pattern.search(run.name)}
        if not wanted:
            raise ValueError(f"--only={only!r} matches none of the runs {names}")
        wanted |= {run.branch[0] for run in runs if run.name in wanted and run.branch}
        runs = [run for run in runs if run.name in wanted]
    return dependencies_first(runs)


def collected_runs(csv_path: str, sweep_name: str) -> set[str]:
    """Names of the sweep's runs that the collected table `csv_path` (experiments.collect) holds as finished."""
    import csv

    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"--skip-collected={csv_path}: no such results table (experiments.collect --out)")
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"sweep", "run", "finished"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"--skip-collected={csv_path} is not a collected table: it lacks the columns "
                             f"{sorted(missing)}")
        return {row["run"] for row in reader if row["sweep"] == sweep_name and row["finished"] == "True"}


def without_collected(runs: list[Run], collected: set[str]) -> list[Run]:
    """`runs` less those in `collected`, except a run that a remaining run branches from (its cooldown needs the
    stable phase's checkpoint, which a table does not hold)."""
    remaining = [run for run in runs if run.name not in collected]
    needed = {run.branch[0] for run in remaining if run.branch}
    return [run for run in runs if run.name not in collected or run.name in needed]


def dependencies_first(runs: list[Run]) -> list[Run]:
    """`runs` in the sweep's order, except that a run the next one branches from comes before it."""
    by_name = {run.name: run for run in runs}
    ordered: list[Run] = []
    for run in runs:
        for needed in ([by_name[run.branch[0]]] if run.branch else []) + [run]:
            if needed not in ordered:
                ordered.append(needed)
    return ordered


def branch_source(run: Run, runs: list[Run]) -> tuple[str, int] | None:
    """(name, step) of the sweep's run whose checkpoint `run`'s cooldown starts from, or None."""
    from llama_jax.train import checkpoint
    from llama_jax.train.optim import cooldown_start

    config = run.config
    if config.optimizer.schedule != "wsd" or config.optimizer.cooldown_fraction == 0:
        return None
    start = cooldown_start(config)
    for other in runs:
        if other is run or start not in other.config.checkpoint.keep_steps or other.config.train.steps < start:
            continue
        try:
            checkpoint.check_same_run(checkpoint.config_json(other.config), config, other.name,
                                      may_differ=checkpoint.BRANCH_MAY_DIFFER)
        except ValueError:
            continue
        return other.name, start
    return None


def describe(run: Run, data_tokens: dict[str, float]) -> dict[str, Any]:
    """One table row: parameters, tokens, tokens per parameter, training FLOPs, Chinchilla's token count for the
    size, steps, and the epochs of each source that the mixture implies."""
    from data_pipeline.sources import implied_epochs
    from llama_jax.perf import info
    from llama_jax.train.step import model_config

    config = run.config
    facts = info.describe(model_config(config), config.train.seq_len)
    tokens = config.train.steps * config.train.global_batch_size * config.train.seq_len
    n = facts["non_embedding_params"]
    weights = {name: float(w) for name, w in config.data.weights.items() if w > 0}
    return {
        "run": run.name,
        "params": facts["params"],
        "non_embedding_params": n,
        "tokens": tokens,
        "tokens_per_param": tokens / n,
        "flops": facts["train_flops_per_token"] * tokens,
        "chinchilla_tokens": CHINCHILLA_TOKENS_PER_PARAM * n,
        "steps": config.train.steps,
        "branch": f"{run.branch[0]}@{run.branch[1]}" if run.branch else "",
        "trained_flops": facts["train_flops_per_token"] * run.trained_tokens,
        "epochs": implied_epochs(weights, tokens, data_tokens) if config.data.source == "mixture" else {},
    }


def add_costs(row: dict[str, Any], run: Run, topology, mfu: float, fit: dict | None, slices: int = 1) -> dict[str, Any]:
    """`row` with chips, hours and chip-hours of the run's own training on `slices` x `topology` at `mfu` of the
    chips' bf16 peak, and the fit search's verdict `fit` (llama_jax.perf.aot.fit_search; None when unknown)."""
    from llama_jax.perf import flops

    chips = topology.chips * slices
    hours = row["trained_flops"] / (chips * flops.peak_flops(topology.device_kind) * mfu) / 3600
    return {**row, "chips": chips, "hours": hours, "chip_hours": hours * chips, "fit": fit}


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table (one line per run, then the totals)."""
    from llama_jax.corpus_spec import SOURCE_NAMES

    sources = sorted({s for row in rows for s in row["epochs"]},
                     key=lambda s: (SOURCE_NAMES.index(s) if s in SOURCE_NAMES else len(SOURCE_NAMES), s))
    header = ["run", "params", "N", "tokens", "tok/N", "FLOPs", "Chinchilla", "steps", "from"]
    header += [f"ep:{s[:5]}" for s in sources]
    costs = any("chips" in row for row in rows)
    if costs:
        header += ["chips", "hours", "chip-h", "fit"]
    lines = [header]
    for row in rows:
        line = [row["run"], _si(row["params"]), _si(row["non_embedding_params"]), _si(row["tokens"]),
                f"{row['tokens_per_param']:.3g}", f"{row['flops']:.3g}", _si(row["chinchilla_tokens"]),
                str(row["steps"]), row["branch"] or "-"]
        line += [f"{row['epochs'][s]:.2f}" if row["epochs"].get(s) is not None else "-" for s in sources]
        if costs:
            line += [str(row["chips"]), f"{row['hours']:.1f}", f"{row['chip_hours']:,.0f}", _fit_text(row["fit"])]
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines]
    total = sum(row["trained_flops"] for row in rows)
    summary = f"{len(rows)} runs, {total:.3g} training FLOPs in all"
    if costs:
        summary += f", {sum(row['chip_hours'] for row in rows):,.0f} chip-hours"
    return "\n".join([*text, summary])


def _si(value: float) -> str:
    """12_345_678 -> '12.35M'."""
    return spec.format_tokens(value)


def _fit_text(fit: dict | None) -> str:
    """The fit column: the setting that fits and its memory, or what the run would need."""
    if fit is None:
        return "not compiled yet"
    gib = 1024**3
    if not fit["fits"]:
        return f"does not fit: needs {fit['total_bytes'] / gib:.0f} of {fit['hbm_bytes'] / gib:.0f} GiB"
    return (f"fits: {fit['microbatches']} microbatch(es), remat {fit['remat']}, "
            f"{fit['total_bytes'] / gib:.1f}/{fit['hbm_bytes'] / gib:.0f} GiB")


def fit_overrides(fit: dict) -> tuple[str, ...]:
    """The `--config.*` flags that give a run the fit search's setting."""
    return (f"--config.train.microbatches={fit['microbatches']}", f"--config.model.remat_policy={fit['remat']}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m experiments.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="sweep file, e.g. experiments/configs/cpu_sweep.py")
    parser.add_argument("--only", help="regular expression: the runs whose names match (and what they branch from)")
    parser.add_argument("--dry-run", "--dry_run", action="store_true", help="print the table; run nothing")
    parser.add_argument("--topology", help="TPU slice, v5p-512 (Cloud) or v5p:4x8x8 (libtpu): costs and fit columns")
    parser.add_argument("--mfu", type=float, default=0.5, help="model FLOPs utilisation assumed for the hours")
    parser.add_argument("--fit-cache", "--fit_cache", default=DEFAULT_FIT_CACHE, help="JSON lines of AOT fit results")
    parser.add_argument("--launch", choices=("local", "tpu", "xpk"), default="local",
                        help="where the runs train: here, on queued resources (gcloud), on GKE (xpk)")
    parser.add_argument("--runner", choices=("local", "inline", "ray"), default="local", help="with --launch=local: "
                        "the runs one after another here, each a training process of its own (local) or all in this "
                        "process (inline: start, imports and set-up once, for swarms of short runs), or as tasks on "
                        "an existing Ray cluster (experiments.ray_runner)")
    parser.add_argument("--address", default=ray_runner.DEFAULT_ADDRESS, help="with --runner=ray: the cluster's "
                        "head, host:port (auto: RAY_ADDRESS, else the head `ray start --head` started on this machine)")
    parser.add_argument("--cpus-per-run", "--cpus_per_run", type=float, default=ray_runner.Resources.cpus,
                        help="with --runner=ray: CPU cores each run reserves (XLA uses them all on a CPU run)")
    parser.add_argument("--gpus-per-run", "--gpus_per_run", type=float, default=0.0,
                        help="with --runner=ray: GPUs each run reserves")
    parser.add_argument("--tpu-chips-per-run", "--tpu_chips_per_run", type=int, default=0,
                        help="with --runner=ray: TPU chips each run reserves (Ray's TPU resource)")
    parser.add_argument("--workdir", default="workdirs", help="root of the workdirs (<workdir>/<sweep>/<run>); "
                        "with --runner=ray, a path every worker sees (a shared file system)")
    parser.add_argument("--skip-collected", "--skip_collected", metavar="CSV",
                        help="do not train the runs this collected table (experiments.collect) holds as finished: "
                        "a study continued in a fresh clone, whose earlier workdirs are gone")
    parser.add_argument("--execute", action="store_true", help="with --launch=tpu|xpk: run the commands (else print)")
    parser.add_argument("--status", action="store_true", help="with --launch=tpu|xpk: each run's state, then exit")
    parser.add_argument("--watch", action="store_true", help="with --launch=tpu|xpk: recreate preempted or failed "
                        "slices (resuming their runs) and delete finished ones, until every run finished")
    parser.add_argument("--poll-s", "--poll_s", type=float, default=60.0, help="seconds between polls of the cloud")
    parser.add_argument("--tpu", help="with --launch=tpu: the queued resource (and node) name; lanes add -<i>")
    parser.add_argument("--zone", help="with --launch=tpu: the Cloud zone (xpk: the cluster's, optional)")
    parser.add_argument("--project", default="", help="with --launch=tpu|xpk: the Cloud project (default: gcloud's)")
    parser.add_argument("--slices", type=int, default=1, help="with --launch=tpu|xpk: slices per run, joined over DCN")
    parser.add_argument("--max-slices", "--max_slices", type=int, default=1,
                        help="with --launch=tpu: queued resources the sweep's runs are spread over")
    for name in ("spot", "reserved", "best-effort"):
        parser.add_argument(f"--{name}", action="store_true", help=f"with --launch=tpu: request {name} capacity")
    parser.add_argument("--runtime-version", "--runtime_version", default="", help="TPU VM software version")
    parser.add_argument("--cluster", help="with --launch=xpk: the GKE cluster (xpk cluster create)")
    parser.add_argument("--docker-image", "--docker_image", help="with --launch=xpk: the image built from Dockerfile")
    parser.add_argument("--max-restarts", "--max_restarts", type=int, default=3,
                        help="with --launch=xpk or --runner=ray: restarts of a failed workload or of a run whose "
                        "worker died (each resumes its checkpoint)")
    args = cli.parse_args(parser, argv)
    tiers = [name for name in ("spot", "reserved", "best-effort") if getattr(args, name.replace("-", "_"))]
    if len(tiers) > 1:
        raise cli.UsageError(f"give one of --spot, --reserved and --best-effort, not {' and '.join(tiers)}")
    args.tier = tiers[0] if tiers else ""
    remote = args.launch in ("tpu", "xpk")
    if args.launch == "tpu" and not (args.topology and args.tpu and args.zone):
        raise cli.UsageError("--launch=tpu needs --topology, --tpu and --zone")
    if args.launch == "tpu":
        from experiments import pod

        try:
            pod.check_name(args.tpu)
        except ValueError as error:
            raise cli.UsageError(str(error)) from None
    if args.launch == "xpk" and not (args.topology and args.cluster and args.docker_image):
        raise cli.UsageError("--launch=xpk needs --topology, --cluster and --docker-image")
    for flag in ("execute", "status", "watch"):
        if getattr(args, flag) and not remote:
            raise cli.UsageError(f"--{flag} is for --launch=tpu or --launch=xpk; local runs start without it")
    if args.status and (args.execute or args.watch):
        raise cli.UsageError("--status only reads; give it without --execute and --watch")
    if args.watch and args.dry_run:
        raise cli.UsageError("--watch runs commands; without --execute it prints what it would run")
    if not 0 < args.mfu <= 1:
        raise cli.UsageError(f"--mfu={args.mfu} must be in (0, 1]")
    for flag in ("slices", "max_slices"):
        if getattr(args, flag) < 1:
            raise cli.UsageError(f"--{flag}={getattr(args, flag)} must be at least 1")
    if args.runner != "local" and remote:
        raise cli.UsageError(f"--runner={args.runner} is for --launch=local; --launch={args.launch} runs on its own "
                             "machines")
    if not args.cpus_per_run > 0:
        raise cli.UsageError(f"--cpus_per_run={args.cpus_per_run:g} must be positive (a run needs a core)")
    for flag in ("gpus_per_run", "tpu_chips_per_run"):
        if getattr(args, flag) < 0:
            raise cli.UsageError(f"--{flag}={getattr(args, flag):g} must be at least 0")
    if args.max_restarts < 0:
        raise cli.UsageError(f"--max_restarts={args.max_restarts} must be at least 0")
    if not args.poll_s > 0:
        raise cli.UsageError(f"--poll_s={args.poll_s} must be positive")
    if args.launch == "xpk" and (args.tier or args.max_slices > 1 or args.tpu):
        raise cli.UsageError("--spot/--reserved/--best-effort, --max_slices and --tpu are for --launch=tpu; xpk "
                             "workloads run on the cluster's node pools")
    return args


def table(config_file: str, only: str | None = None, topology: str | None = None, mfu: float = 0.5,
          fit_cache: str = DEFAULT_FIT_CACHE, slices: int = 1, compile_missing: bool = True, log=None) -> list[dict]:
    """The table rows of a sweep's runs (describe); on a `topology`, with costs and the AOT fit search's verdict
    (compiling what `fit_cache` lacks, unless not `compile_missing`: then the fit is None)."""
    runs = expand(config_file, only)
    data_tokens = load(config_file).data_tokens(runs[0].config)
    rows = [describe(run, data_tokens) for run in runs]
    if topology is None:
        return rows
    from llama_jax.perf import aot

    slice_ = aot.parse_topology(topology)
    fits = [aot.fit_search(run.config, slice_, fit_cache, mfu, slices=slices, compile_missing=compile_missing,
                           log=log) for run in runs]
    return [add_costs(row, run, slice_, mfu, None if fit is None else fit.to_dict(), slices)
            for row, run, fit in zip(rows, runs, fits, strict=True)]


def main() -> None:
    args = parse_args(sys.argv[1:])
    runs = expand(args.config, args.only)
    if args.status:
        from experiments import pod

        for run, where, state in remote_target(args, runs).status(pod.Cloud(execute=True)):
            print(f"{run}  {where}  {state}")
        return
    rows = table(args.config, args.only, args.topology, args.mfu, args.fit_cache, args.slices,
                 log=lambda line: print(line, file=sys.stderr, flush=True))
    if args.skip_collected:
        kept = without_collected(runs, collected_runs(args.skip_collected, spec_stem(args.config)))
        names = {run.name for run in kept}
        print(f"{len(runs) - len(kept)} of {len(runs)} runs already in {args.skip_collected}: not trained again")
        runs, rows = kept, [row for row in rows if row["run"] in names]
        if not runs:
            print("nothing to train")
            return
    if args.topology:
        from llama_jax.perf import aot

        topology = aot.parse_topology(args.topology)
        print(f"costs on {args.slices} x {topology.cloud_name} ({topology.libtpu_name}) at {args.mfu:.0%} MFU; "
              f"fit by AOT compilation (cache {args.fit_cache})")
    print(format_table(rows))
    if args.dry_run:
        return
    if args.launch == "local" and args.runner == "ray":
        resources = ray_runner.Resources(args.cpus_per_run, args.gpus_per_run, args.tpu_chips_per_run)
        ray_runner.run_ray(runs, args.workdir, args.address, resources, max_retries=args.max_restarts)
        return
    if args.launch == "local":
        from experiments import launch

        launch.run_local(runs, args.workdir, in_process=args.runner == "inline")
        return
    from experiments import pod

    fits = {row["run"]: row["fit"] for row in rows}
    unfit = [name for name, fit in fits.items() if not fit["fits"]]
    if unfit:
        raise ValueError(f"{unfit} fit {args.topology} with no microbatch count or remat policy; use a larger slice")
    overrides = {name: fit_overrides(fit) for name, fit in fits.items()}
    cloud = pod.Cloud(execute=args.execute)
    target = remote_target(args, runs, overrides, {row["run"]: row["trained_flops"] for row in rows})
    target.launch(cloud, watch=args.watch, poll_s=args.poll_s)
    if not args.execute:
        print("# printed only; add --execute to run these commands")


def remote_target(args: argparse.Namespace, runs: list[Run], overrides: dict | None = None,
                  flops: dict[str, float] | None = None):
    """The sweep's runs on queued resources (experiments.pod.Pod) or on GKE (experiments.pod.XpkSweep)."""
    from experiments import pod
    from llama_jax.perf import aot

    topology = aot.parse_topology(args.topology)
    if args.launch == "xpk":
        xpk = pod.Xpk(args.cluster, topology, args.docker_image, zone=args.zone or "", project=args.project,
                      slices=args.slices, max_restarts=args.max_restarts)
        return pod.XpkSweep(runs, args.workdir, xpk, overrides or {})
    slices = pod.Slices(args.tpu, args.zone, topology, project=args.project, slices=args.slices,
                        runtime_version=args.runtime_version, tier=args.tier)
    cost = (lambda run: flops[run.name]) if flops else None
    return pod.Pod(runs, args.workdir, slices, args.config, max_slices=args.max_slices, overrides=overrides or {},
                   cost=cost)


if __name__ == "__main__":
    cli.run(main)
