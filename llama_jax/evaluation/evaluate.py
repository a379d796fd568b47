"""Zero-shot evaluation of a checkpoint, as the paper evaluates (§3): a table in the layout of its Table 3, and JSON.

    python -m llama_jax.evaluate --checkpoint=PATH --tasks=boolq,piqa,next_sentence,cloze,heldout [--out=results.json]

PATH is a training workdir (its latest checkpoint), an orbax params directory, a Meta directory or a Hugging Face
directory; the tokenizer is the one beside the weights or the run's (--tokenizer overrides), and texts are encoded
after BOS when the tokenizer adds it (LLaMA's does; --add_bos_token=true|false forces it). Task names are listed
in llama_jax/evaluation/evaluators/__init__.py; `heldout` gives each source's held-out loss and perplexity and needs the data
config (the run's, for a workdir, or --config). With --out, results are written after each task: the same command
after an interruption keeps the finished tasks and computes the rest (the numbers do not depend on the split).
"""

from __future__ import annotations

import argparse
import json
import os

from llama_jax import cli
from llama_jax.evaluation.evaluators import registry
from llama_jax.evaluation.evaluators.tasks import HELDOUT

VERSION = 1  # of the results file


def table(results: dict[str, dict[str, float]], metrics: dict[str, str], model: str) -> str:
    """The paper's Table 3 layout (accuracy in %, its columns first), then any other tasks, then held-out loss."""
    names = [n for n in registry.TABLE3 if n in results] + [n for n in results if n not in registry.TABLE3 and n != HELDOUT]
    lines = []
    if names:
        width = max(len(model), 5)
        lines.append(f"{'':{width}}  " + "  ".join(f"{n:>{max(len(n), 6)}}" for n in names))
        lines.append(f"{model:{width}}  " + "  ".join(f"{100 * results[n][metrics[n]]:>{max(len(n), 6)}.1f}" for n in names))
        lines.append("(" + ", ".join(f"{n}: {metrics[n]}" for n in names) + ")")
    if HELDOUT in results:
        lines.append(f"{'held-out':16s} {'loss':>8s} {'perplexity':>12s}")
        for key, loss in results[HELDOUT].items():
            if key.endswith("/loss"):
                source = key.split("/")[1]
                lines.append(f"{source:16s} {loss:8.4f} {results[HELDOUT][f'eval/{source}/perplexity']:12.2f}")
    return "\n".join(lines)


def read_previous(path: str, settings: dict) -> dict:
    """The finished tasks of an earlier run of the same evaluation at `path` ({} if none); refuses another's."""
    if not path or not os.path.exists(path):
        return {}
    with open(path) as f:
        previous = json.load(f)
    if previous.get("settings") != settings:
        raise FileExistsError(f"{path} holds the results of another evaluation ({previous.get('settings')}); "
                              "refusing to overwrite it: choose another --out, or delete it")
    return previous.get("results", {})


def write_results(path: str, settings: dict, results: dict, metrics: dict) -> None:
    """Write the results so far, atomically."""
    with open(path + ".tmp", "w") as f:
        json.dump({"version": VERSION, "settings": settings, "results": results, "paper_metric": metrics}, f, indent=1)
    os.replace(path + ".tmp", path)


def run_config(loaded, checkpoint: str, config_path: str | None):
    """The experiment config of `config_path` (an experiments/configs file), else the one saved with the training
    workdir `checkpoint` (weights.load read it into `loaded`)."""
    if config_path:
        import importlib.util

        spec = importlib.util.spec_from_file_location("experiment_config", config_path)
        if spec is None or not os.path.isfile(config_path):
            raise FileNotFoundError(f"--config={config_path} is not an experiment config file")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.get_config()
    if loaded.run_config is None:
        raise ValueError(f"--tasks=heldout needs the data config: {checkpoint} is not a training workdir; pass "
                         "--config=experiments/configs/<file>.py")
    import ml_collections

    return ml_collections.ConfigDict(loaded.run_config)


def heldout_losses(config, params) -> dict[str, float]:
    """{'eval/<source>/loss', 'eval/<source>/perplexity'} on the held-out splits of `config`'s data."""
    from llama_jax import sharding
    from llama_jax.evaluation.evaluators import heldout
    from llama_jax.train import loop as train
    from llama_jax.train import step as ts

    mesh = sharding.make_mesh(config)
    _, make_eval_streams = train.data_streams(config)
    losses = heldout.evaluate(ts.make_eval_step(config, mesh), params, make_eval_streams(), config, mesh)
    return heldout.with_perplexity(losses)


def run(args: argparse.Namespace) -> dict:
    """Evaluate and return {'settings', 'results': {task: {metric: value}}, 'paper_metric': {task: metric}}; a task
    file is named by its file name (boolq.jsonl is boolq)."""
    from llama_jax.evaluation.loaded_model import model_of
    from llama_jax.inference import weights

    given = registry.check_names(n for n in args.tasks.split(",") if n)
    settings = {"checkpoint": os.path.abspath(args.checkpoint), "tokenizer": args.tokenizer, "tasks": given,
                "max_items": args.max_items, "truncation": args.truncation,
                **({} if args.add_bos_token is None else {"add_bos_token": args.add_bos_token})}
    results = read_previous(args.out, settings)
    task_dir = args.task_dir or registry.offline.default_task_dir(args.corpus)
    tasks = {}
    for name in given:
        task = registry.resolve(name, task_dir=task_dir, corpus_dir=args.corpus) if name != HELDOUT else None
        key = task.name if task else HELDOUT
        if key in tasks:
            raise ValueError(f"two of --tasks={args.tasks} are called {key!r}; rename one of the files")
        tasks[key] = task
    metrics = {name: task.metric for name, task in tasks.items() if task}
    if all(name in results for name in tasks):
        return {"settings": settings, "results": results, "paper_metric": metrics}
    loaded = weights.load(args.checkpoint)
    model = model_of(loaded, args.checkpoint, tokenizer=args.tokenizer, rows=args.rows, truncate=args.truncation,
                     add_bos=args.add_bos_token)
    for name, task in tasks.items():
        if name in results:
            continue
        if task is None:
            results[name] = heldout_losses(run_config(loaded, args.checkpoint, args.config), model.params)
        else:
            items = min(len(task.items), args.max_items or len(task.items))
            results[name] = {**registry.evaluate(model, task, args.max_items), "items": items}
        if args.out:
            write_results(args.out, settings, results, metrics)
    return {"settings": settings, "results": results, "paper_metric": metrics}


def _bool(text: str) -> bool:
    """--add_bos_token's value."""
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"{text!r} is not true or false")
    return text.lower() == "true"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m llama_jax.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="training workdir, orbax params, Meta or HF directory")
    parser.add_argument("--tasks", required=True, help="comma-separated task names or .jsonl files")
    parser.add_argument("--tokenizer", default=None, help="SentencePiece model or HF tokenizer directory "
                        "(default: beside the weights, or the run's)")
    parser.add_argument("--add_bos_token", type=_bool, default=None, metavar="true|false",
                        help="BOS before every text on or off (default: as the tokenizer encodes; LLaMA's adds it)")
    parser.add_argument("--out", default="", help="results JSON, written after each task; a rerun resumes it")
    parser.add_argument("--task_dir", default="", help="where task files are read and written (default: "
                        "beside the corpus, .cache/tasks)")
    parser.add_argument("--corpus", default=registry.offline.DEFAULT_CORPUS, help="corpus of the offline tasks")
    parser.add_argument("--config", default=None, help="experiment config for `heldout` when PATH is not a workdir")
    parser.add_argument("--max_items", type=int, default=0, help="items per task, the first ones (0: all)")
    parser.add_argument("--rows", type=int, default=8, help="packed rows per scoring batch")
    parser.add_argument("--truncation", action="store_true",
                        help="keep the last tokens of requests longer than the model's context (else an error)")
    return parser.parse_args(argv)


def main() -> None:
    args = parse()
    report = run(args)
    print(table(report["results"], report["paper_metric"], os.path.basename(os.path.normpath(args.checkpoint))))
    if args.out:
        print(f"results: {args.out}")


if __name__ == "__main__":
    cli.run(main)
