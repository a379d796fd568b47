"""The evaluation protocol without a model: task files and their errors, the paper's multiple-choice rules,
exact match, and the offline task set built from a corpus's held-out split."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from evaluation_fixtures import prose_corpus

from llama_jax.evaluation.evaluators import exact_match, multiple_choice, offline, registry, tasks
from llama_jax.evaluation.scoring import Score


def _write(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_task_files_of_each_layout(tmp_path):
    mc = tasks.read_jsonl(_write(tmp_path / "mc.jsonl", [
        {"context": "Question: sky?\nAnswer:", "choices": ["blue", "green"], "label": 0},
        {"context": "2 + 2 =", "choices": ["4", "5", "22"], "label": 0, "delimiter": ""},
    ]))
    assert (mc.name, mc.kind, mc.metric) == ("mc", tasks.MULTIPLE_CHOICE, "acc_norm")
    assert mc.items[0].pairs == (("Question: sky?\nAnswer:", " blue"), ("Question: sky?\nAnswer:", " green"))
    assert mc.items[0].lengths == (4, 5)  # characters of the choice, not of its leading delimiter
    assert mc.items[1].pairs[2] == ("2 + 2 =", "22")
    wino = tasks.read_jsonl(_write(tmp_path / "wino.jsonl", [
        {"contexts": ["The trophy", "The suitcase"], "continuation": "is too big.", "label": 0}]))
    assert wino.items[0].pairs == (("The trophy", " is too big."), ("The suitcase", " is too big."))
    ratio = tasks.read_jsonl(_write(tmp_path / "obqa.jsonl", [
        {"context": "Stars shine", "choices": ["at night", "never"], "label": 0, "unconditional_context": "Answer:"}]))
    assert ratio.metric == "acc_ratio"
    qa = tasks.read_jsonl(_write(tmp_path / "qa.jsonl", [{"question": "Who wrote Hamlet?", "answers": ["Shakespeare"]}]))
    assert (qa.kind, qa.metric, qa.items[0].answers) == (tasks.EXACT_MATCH, "exact_match", ("Shakespeare",))


@pytest.mark.parametrize("record, message", [
    ({"context": "c", "choices": [], "label": 0}, "'choices' must be a non-empty list"),
    ({"context": "c", "choices": ["a", "b"], "label": 2}, "label 2 is not the index of one of its 2 choices"),
    ({"context": "c", "choices": ["a", "b"], "label": True}, "label True is not the index"),
    ({"context": "c", "choices": ["a", 3], "label": 0}, "'choices' must be a string"),
    ({"question": "q", "answers": []}, "'answers' must be a non-empty list"),
    ({"text": "no layout"}, "expected the fields"),
])
def test_bad_items_are_refused_naming_file_and_line(tmp_path, record, message):
    path = _write(tmp_path / "bad.jsonl", [{"context": "ok", "choices": ["a"], "label": 0}, record])
    with pytest.raises(ValueError, match=message) as error:
        tasks.read_jsonl(path)
    assert f"{path} line 2" in str(error.value)


def test_unknown_task_and_mixed_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown evaluation task 'hellaswog'; known tasks: heldout, next_sentence"):
        registry.check_names(["heldout", "hellaswog"])
    path = _write(tmp_path / "mixed.jsonl", [{"context": "c", "choices": ["a"], "label": 0},
                                            {"question": "q", "answers": ["a"]}])
    with pytest.raises(ValueError, match="mixes multiple-choice and question items"):
        tasks.read_jsonl(path)


class StubModel:
    """Answers every loglikelihood request from a table {(context, continuation): log-probability}."""

    def __init__(self, table):
        self.table = table

    def loglikelihood(self, pairs):
        return [Score(self.table[p], 1, False) for p in pairs]


def test_acc_norm_divides_by_characters_and_the_ratio_rule_divides_by_p_given_answer(tmp_path):
    # "a" is likelier in total, "bbbb" per character; P(choice | context) / P(choice | "Answer:") favours "cc".
    path = _write(tmp_path / "t.jsonl", [
        {"context": "ctx", "choices": ["a", "bbbb", "cc"], "label": 1, "unconditional_context": "Answer:"}])
    task = tasks.read_jsonl(path)
    table = {("ctx", " a"): -2.0, ("ctx", " bbbb"): -4.0, ("ctx", " cc"): -5.0,
             ("Answer:", " a"): -1.0, ("Answer:", " bbbb"): -3.0, ("Answer:", " cc"): -9.0}
    assert multiple_choice.evaluate(StubModel(table), task) == {"acc": 0.0, "acc_norm": 1.0, "acc_ratio": 0.0}
    task = tasks.read_jsonl(_write(tmp_path / "t2.jsonl", [
        {"context": "ctx", "choices": ["a", "bbbb", "cc"], "label": 2, "unconditional_context": "Answer:"}]))
    assert multiple_choice.evaluate(StubModel(table), task)["acc_ratio"] == 1.0


def test_closed_book_answers_are_greedy_lines_after_the_papers_prompt(tmp_path):
    class Answers:
        def generate(self, prompts, *, max_new_tokens, until):
            self.asked = (list(prompts), max_new_tokens, until)
            return [" Paris", "the  Beatles.", "1066 AD"]

    task = tasks.read_jsonl(_write(tmp_path / "qa.jsonl", [
        {"question": "Capital of France?", "answers": ["Paris"]},
        {"question": "Who sang Help?", "answers": ["Beatles", "The Beatles"]},
        {"question": "When was Hastings?", "answers": ["1066"]}]))
    model = Answers()
    assert exact_match.evaluate(model, task) == {"exact_match": pytest.approx(2 / 3)}
    prompts, _, until = model.asked
    assert prompts[0] == "Answer these questions:\nQ: Capital of France?\nA:" and until == ("\n",)


def test_exact_match_normalises_like_squad():
    assert exact_match.normalize("  The Eiffel-Tower!  ") == "eiffeltower"
    assert exact_match.is_match("the Beatles.", ("Beatles", "The Fab Four"))
    assert not exact_match.is_match("Beatles and Stones", ("Beatles",))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return prose_corpus(str(tmp_path_factory.mktemp("corpus")))


def test_offline_tasks_come_from_held_out_text_only_and_are_deterministic(corpus, tmp_path):
    first = offline.build(corpus, str(tmp_path / "a"), items=80, seed=3)
    again = offline.build(corpus, str(tmp_path / "b"), items=80, seed=3)
    assert first == again and first["counts"] == {"next_sentence": 80, "cloze": 80}
    held_out = "".join(json.loads(line)["text"] for source in ("reference", "more")
                       for line in open(os.path.join(corpus, source, "validation-00000-of-00001.jsonl")))
    held_out = " ".join(held_out.split())
    for name in offline.TASKS:
        text = (tmp_path / "a" / f"{name}.jsonl").read_text()
        assert text == (tmp_path / "b" / f"{name}.jsonl").read_text()
        assert "Sentinel" not in text
        task = tasks.read_jsonl(str(tmp_path / "a" / f"{name}.jsonl"))
        labels = np.bincount([item.label for item in task.items], minlength=4)
        assert all(len(item.pairs) == 4 for item in task.items) and labels.min() >= 10  # answers spread: chance 25%
        for item in task.items:
            context, answer = item.pairs[item.label]
            assert context + answer in held_out  # the true choice continues the passage in the held-out text
            assert len({c.lower() for _, c in item.pairs}) == 4
    assert offline.build(corpus, str(tmp_path / "a"), items=80, seed=3) == first  # built once
    assert offline.build(corpus, str(tmp_path / "c"), items=80, seed=4) != first


def test_offline_builder_without_a_corpus_says_to_build_it(tmp_path):
    result = subprocess.run([sys.executable, "-m", "llama_jax.evaluation.evaluators.offline", f"--corpus={tmp_path}/none"],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: no corpus in {tmp_path}/none ({tmp_path}/none/manifest.json is missing); run `make corpus` first"
        " (rerun with --debug for the traceback)"]


def test_benchmark_offline_says_how_to_supply_the_file(tmp_path):
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-m", "llama_jax.evaluation.evaluators.hub", "--tasks=boolq", f"--out={tmp_path}"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: no task file {tmp_path}/boolq.jsonl and the Hugging Face Hub could not be read "
                           "for aps/super_glue/boolq (validation); on a machine that reaches it run "
                           f"`python -m llama_jax.evaluation.evaluators.hub --tasks=boolq --out={tmp_path}`")


def test_heldout_standard_error_and_perplexity_by_hand():
    from llama_jax.evaluation.evaluators import heldout

    assert heldout.standard_error([1.0, 3.0]) == pytest.approx(1.0)  # sd sqrt(2), over sqrt(2) batches
    assert heldout.standard_error([2.0]) == 0.0
    out = heldout.with_perplexity({"eval/books/loss": 2.0, "eval/books/loss_se": 0.1})
    assert out == {"eval/books/loss": 2.0, "eval/books/loss_se": 0.1, "eval/books/perplexity": pytest.approx(7.389, abs=1e-3)}
