"""The evaluation command and training-time evaluation on a random model with a SentencePiece tokenizer trained on
real text: Table 3's layout and JSON, a resumed evaluation gives the numbers of an uninterrupted one, every bad
input is one error line, and training logs eval/<task>/<metric> for the offline tasks."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from evaluation_fixtures import VOCAB, multiple_choice_records, prose_corpus, train_sentencepiece

from llama_jax import cli
from llama_jax.config import ModelConfig
from llama_jax.convert import formats as convert
from llama_jax.evaluation import evaluate
from llama_jax.evaluation.evaluators import registry
from llama_jax.model.llama import param_shapes
from llama_jax.train.metrics import read_metrics

CONFIG = ModelConfig(dim=64, n_layers=2, n_heads=4, vocab_size=VOCAB, multiple_of=32, max_seq_len=512)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """{'checkpoint': orbax params with tokenizer.model beside, 'corpus', 'tasks': task directory, 'boolq' and
    'custom': local task files}."""
    root = tmp_path_factory.mktemp("evaluate")
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map_with_path(  # weights of order one: choices far from ties
        lambda path, s: (1.0 + 0.2 * rng.standard_normal(s.shape) if "norm" in jax.tree_util.keystr(path)
                         else 0.2 * rng.standard_normal(s.shape)).astype(np.float32), param_shapes(CONFIG))
    checkpoint = str(root / "model")
    convert.save_orbax(CONFIG, params, checkpoint)
    train_sentencepiece(os.path.join(checkpoint, "tokenizer.model"))
    records = multiple_choice_records()
    custom, boolq = root / "custom.jsonl", root / "boolq.jsonl"
    custom.write_text("".join(json.dumps(r) + "\n" for r in records[2:]))
    boolq.write_text("".join(json.dumps({**r, "unconditional_context": "Answer:"}) + "\n" for r in records[2:8]))
    return {"checkpoint": checkpoint, "corpus": prose_corpus(str(root / "corpus")), "tasks": str(root / "tasks"),
            "custom": str(custom), "boolq": str(boolq)}


def _args(files, tasks, *extra):
    return evaluate.parse([f"--checkpoint={files['checkpoint']}", f"--tasks={','.join(tasks)}",
                           f"--corpus={files['corpus']}", f"--task_dir={files['tasks']}", "--max_items=24", *extra])


def test_table3_layout_json_and_a_resumed_evaluation(files, tmp_path, monkeypatch):
    tasks = [files["custom"], "next_sentence", files["boolq"]]
    whole = evaluate.run(_args(files, tasks, f"--out={tmp_path / 'whole.json'}"))
    results = whole["results"]
    assert list(results) == ["custom", "next_sentence", "boolq"]  # a task file is named by its file name
    assert whole["paper_metric"]["boolq"] == "acc_ratio" and whole["paper_metric"]["next_sentence"] == "acc_norm"
    assert set(results["boolq"]) == {"acc", "acc_norm", "acc_ratio", "items"}
    assert results["next_sentence"]["items"] == 24 and 0 <= results["next_sentence"]["acc_norm"] <= 1
    saved = json.loads((tmp_path / "whole.json").read_text())
    assert saved["results"] == results

    # Interrupted after the first task; the same command finishes the rest and gives the same numbers.
    real, calls = registry.evaluate, []

    def interrupted(model, task, max_items):
        calls.append(task.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(model, task, max_items)

    monkeypatch.setattr(registry, "evaluate", interrupted)
    out = tmp_path / "resumed.json"
    with pytest.raises(KeyboardInterrupt):
        evaluate.run(_args(files, tasks, f"--out={out}"))
    assert list(json.loads(out.read_text())["results"]) == ["custom"]
    calls.clear()
    monkeypatch.setattr(registry, "evaluate", lambda model, task, n: calls.append(task.name) or real(model, task, n))
    assert evaluate.run(_args(files, tasks, f"--out={out}"))["results"] == results
    assert calls == ["next_sentence", "boolq"]  # the finished task was not computed again
    with pytest.raises(FileExistsError, match="holds the results of another evaluation"):
        evaluate.run(_args(files, tasks[:1], f"--out={out}"))


def test_bos_follows_the_tokenizer_unless_forced(files, capsys):
    """LLaMA's SentencePiece tokenizer adds BOS, so the default is the paper's protocol; --add_bos_token forces it
    either way (tests/test_lm_eval.py checks a tokenizer that adds none against the harness)."""
    from llama_jax.evaluation.loaded_model import model_of
    from llama_jax.inference import weights

    loaded = weights.load(files["checkpoint"])
    pair = [("The quick brown fox", " jumps over the lazy dog")]
    scores = {bos: model_of(loaded, files["checkpoint"], add_bos=bos).loglikelihood(pair)[0].logprob
              for bos in (None, True, False)}
    assert scores[None] == scores[True] and abs(scores[True] - scores[False]) > 1e-2
    off = evaluate.run(_args(files, [files["custom"]], "--add_bos_token=false", "--max_items=4"))
    assert off["settings"]["add_bos_token"] is False
    assert "add_bos_token" not in evaluate.run(_args(files, [files["custom"]], "--max_items=4"))["settings"]
    with pytest.raises(SystemExit):
        _args(files, ["boolq"], "--add_bos_token=maybe")
    assert "'maybe' is not true or false" in capsys.readouterr().err


def test_table_puts_the_papers_columns_first():
    results = {"custom": {"acc_norm": 0.5}, "piqa": {"acc_norm": 0.798}, "boolq": {"acc_ratio": 0.765},
               "heldout": {"eval/books/loss": 2.0, "eval/books/perplexity": 7.389}}
    text = evaluate.table(results, {"custom": "acc_norm", "piqa": "acc_norm", "boolq": "acc_ratio"}, "7B")
    header, row, *rest = text.splitlines()
    assert header.split() == ["boolq", "piqa", "custom"]
    assert row.split() == ["7B", "76.5", "79.8", "50.0"]
    assert rest[-1].split() == ["books", "2.0000", "7.39"]


def _bad_config_checkpoint(files, root) -> str:
    path = str(root / "mismatch")
    shutil.copytree(files["checkpoint"], path)
    with open(os.path.join(path, "model_config.json"), "w") as f:
        json.dump(CONFIG.replace(n_layers=3).to_dict(), f)
    return path


@pytest.mark.parametrize("case, message", [
    ("checkpoint", "has shape (2, 64, 4, 16), the config expects (3, 64, 4, 16)"),
    ("long_prompt", "longer than the model's context (max_seq_len=512"),
    ("empty_choices", "'choices' must be a non-empty list"),
    ("label", "label 7 is not the index of one of its 2 choices"),
    ("unknown_task", "unknown evaluation task 'hellaswog'"),
    ("tokenizer", f"has {VOCAB + 64} pieces but the model has vocab_size={VOCAB}"),
])
def test_bad_input_is_one_error_line(files, tmp_path, case, message):
    task = tmp_path / "task.jsonl"
    item = {"context": "A question?", "choices": ["yes", "no"], "label": 0}
    extra, tasks, checkpoint = [], [str(task)], files["checkpoint"]
    if case == "long_prompt":
        item["context"] = " ".join(["words"] * 600)
    elif case == "empty_choices":
        item["choices"] = []
    elif case == "label":
        item["label"] = 7
    elif case == "unknown_task":
        tasks = ["hellaswog"]
    elif case == "tokenizer":
        extra = [f"--tokenizer={train_sentencepiece(str(tmp_path / 'other.model'), vocab_size=VOCAB + 64)}"]
    elif case == "checkpoint":
        checkpoint = _bad_config_checkpoint(files, tmp_path)
    task.write_text(json.dumps(item) + "\n")
    args = evaluate.parse([f"--checkpoint={checkpoint}", f"--tasks={','.join(tasks)}", *extra])
    with pytest.raises(cli.USER_ERRORS) as error:
        evaluate.run(args)
    line = cli.error_line(error.value)
    assert message in line and "\n" not in line and line.startswith("error: ")


def test_the_command_prints_one_error_line(files):
    result = subprocess.run([sys.executable, "-m", "llama_jax.evaluate", f"--checkpoint={files['checkpoint']}",
                             "--tasks=boolq,hellaswog"], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: unknown evaluation task 'hellaswog'; known tasks: " + ", ".join(registry.NAMES)
        + ", or the path of a .jsonl task file (rerun with --debug for the traceback)"]


def test_training_logs_downstream_accuracy(files, tmp_path):
    """Scored on the trainer's 8-device mesh with its sharded parameters, every evals.every steps."""
    from experiments.configs import debug
    from llama_jax.train.loop import train

    c = debug.get_config()
    c.model.vocab_size, c.model.max_seq_len = VOCAB, CONFIG.max_seq_len
    c.train.steps, c.optimizer.warmup_steps, c.evals.every = 4, 2, 2
    c.data.tokenizer = os.path.join(files["checkpoint"], "tokenizer.model")
    c.evals.tasks, c.evals.max_items, c.evals.initial = ("heldout", files["custom"]), 8, True
    train(c, str(tmp_path))
    evals = [r for r in read_metrics(str(tmp_path)) if "eval/custom/acc_norm" in r]
    assert [r["step"] for r in evals] == [0, 2, 4]  # the untrained model first
    for record in evals:
        assert {"eval/synthetic/loss", "eval/custom/acc"} <= set(record)
        assert record["tokens_seen"] == record["step"] * 8 * 16
    # The command on the workdir (its latest checkpoint, its data config) gives the numbers training logged there.
    report = evaluate.run(evaluate.parse([f"--checkpoint={tmp_path}", f"--tasks=heldout,{files['custom']}",
                                          f"--tokenizer={c.data.tokenizer}", "--max_items=8"]))
    assert report["results"]["heldout"]["eval/synthetic/loss"] == pytest.approx(evals[-1]["eval/synthetic/loss"], rel=1e-6)
    assert report["results"]["custom"]["acc_norm"] == evals[-1]["eval/custom/acc_norm"]
