"""lm-evaluation-harness: our `llama_jax` model and the harness's own `hf` backend, on a random tiny Llama saved
as a Hugging Face directory with a SentencePiece-trained tokenizer beside it, give the same per-request
log-likelihoods (to 7.5e-5; measured 3.0e-5), the same accuracy and the same greedy generations on local JSON
tasks, offline."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

lm_eval = pytest.importorskip("lm_eval")
pytest.importorskip("torch")
pytest.importorskip("transformers")

from evaluation_fixtures import (  # noqa: E402
    VOCAB,
    multiple_choice_records,
    prompt_records,
    save_byte_level_bpe,
    save_hf_tokenizer,
    save_random_hf_model,
    train_sentencepiece,
)

MC_YAML = """task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
  - metric: acc_norm
"""
GEN_YAML = """task: tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n", "."]
  max_gen_toks: 10
  do_sample: false
metric_list:
  - metric: exact_match
"""
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(HF model directory with its tokenizer, task directory); the environment is offline meanwhile."""
    root = tmp_path_factory.mktemp("lm_eval")
    model_dir = save_random_hf_model(str(root / "hf"))
    save_hf_tokenizer(train_sentencepiece(os.path.join(model_dir, "tokenizer.model")), model_dir)
    task_dir = root / "tasks"
    task_dir.mkdir()
    for name, yaml, records in (("tiny_mc", MC_YAML, multiple_choice_records()), ("tiny_gen", GEN_YAML, prompt_records())):
        (task_dir / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        (task_dir / f"{name}.yaml").write_text(yaml.format(data=task_dir / f"{name}.jsonl"))
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {**OFFLINE, "HF_HOME": str(root / "hf_home")}.items():
            patch.setenv(key, value)
        yield model_dir, str(task_dir)


@pytest.fixture(scope="module")
def ours(setup):
    from llama_jax.evaluation.harness import LlamaJaxLM

    return LlamaJaxLM(checkpoint=setup[0], batch_size=4)


def _evaluate(model, setup, **kwargs) -> dict:
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(model=model, tasks=["tiny_mc", "tiny_gen"], log_samples=True,
                                   task_manager=TaskManager(include_path=setup[1], include_defaults=False), **kwargs)


@pytest.fixture(scope="module")
def runs(setup, ours):
    """{'ours': ..., 'hf': ...} harness outputs with the per-request samples."""
    hf = _evaluate("hf", setup, model_args=f"pretrained={setup[0]},dtype=float32", device="cpu", batch_size=4)
    return {"ours": _evaluate(ours, setup), "hf": hf}


def _responses(run, task) -> list:
    return [sample["filtered_resps"] for sample in sorted(run["samples"][task], key=lambda s: int(s["doc_id"]))]


def test_same_loglikelihoods_and_accuracy_as_the_hf_backend(runs):
    ours, hf = _responses(runs["ours"], "tiny_mc"), _responses(runs["hf"], "tiny_mc")
    ll_ours = np.array([[float(ll) for ll, _ in doc] for doc in ours])
    ll_hf = np.array([[float(ll) for ll, _ in doc] for doc in hf])
    assert ll_ours.shape == (12, 4) and np.abs(ll_hf).min() > 1.0  # 48 requests, none trivially near zero
    np.testing.assert_allclose(ll_ours, ll_hf, atol=7.5e-5, rtol=0)
    assert [[g for _, g in doc] for doc in ours] == [[g for _, g in doc] for doc in hf]
    for metric in ("acc,none", "acc_norm,none"):
        assert runs["ours"]["results"]["tiny_mc"][metric] == runs["hf"]["results"]["tiny_mc"][metric]


@pytest.fixture(scope="module")
def no_bos_model(setup, tmp_path_factory):
    """The random model beside a GPT-2-style byte-level BPE, whose encoding puts no BOS before a text."""
    model_dir = save_random_hf_model(str(tmp_path_factory.mktemp("no_bos") / "hf"))
    return save_byte_level_bpe(model_dir)


@pytest.mark.parametrize("add_bos_token", [None, True])
def test_a_tokenizer_that_adds_no_bos_scores_as_the_hf_backend(setup, no_bos_model, add_bos_token):
    """By default both follow the tokenizer (no BOS); add_bos_token=True, the harness's model argument, puts BOS
    first on both sides. The multiple-choice task's 48 requests, 2 of them with an empty context (BOS alone)."""
    from lm_eval.tasks import TaskManager

    from llama_jax.evaluation.harness import LlamaJaxLM

    tasks = TaskManager(include_path=setup[1], include_defaults=False)
    force = "" if add_bos_token is None else f",add_bos_token={add_bos_token}"
    ours = LlamaJaxLM(checkpoint=no_bos_model, batch_size=4, **({} if add_bos_token is None else
                                                                 {"add_bos_token": str(add_bos_token)}))
    assert ours.model.tokenizer.add_bos is bool(add_bos_token)
    run = {name: lm_eval.simple_evaluate(model=model, tasks=["tiny_mc"], log_samples=True, task_manager=tasks, **kw)
           for name, model, kw in (("ours", ours, {}), ("hf", "hf", {
               "model_args": f"pretrained={no_bos_model},dtype=float32{force}", "device": "cpu", "batch_size": 4}))}
    ll = {name: np.array([[float(x) for x, _ in doc] for doc in _responses(r, "tiny_mc")]) for name, r in run.items()}
    assert ll["ours"].shape == (12, 4)
    np.testing.assert_allclose(ll["ours"], ll["hf"], atol=7.5e-5, rtol=0)
    assert run["ours"]["results"]["tiny_mc"]["acc,none"] == run["hf"]["results"]["tiny_mc"]["acc,none"]
    # BOS changes the scores: the request "context ... continuation" without BOS is not the one with it.
    with_bos = LlamaJaxLM(checkpoint=no_bos_model, add_bos_token=not add_bos_token).model.loglikelihood(
        [("The quick brown fox", " jumps")])[0].logprob
    assert abs(with_bos - ours.model.loglikelihood([("The quick brown fox", " jumps")])[0].logprob) > 1e-2


def test_same_greedy_generations_as_the_hf_backend(runs):
    ours, hf = _responses(runs["ours"], "tiny_gen"), _responses(runs["hf"], "tiny_gen")
    assert len(ours) == 8 and ours == hf
    assert any(0 < len(text) < 10 for text in ours)  # some stopped at "." or "\n" before max_gen_toks


def test_rolling_loglikelihood_is_the_texts_log_likelihood_after_bos(ours):
    from lm_eval.api.instance import Instance

    text = " ".join(r["prompt"] for r in prompt_records()) * 3  # longer than the context: several windows
    tok = ours.model.tokenizer
    ids = tok.encode(text)
    assert len(ids) > 2 * ours.model.config.max_seq_len
    (total,) = ours.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    # The harness's windows: the first max_seq_len tokens after BOS, then each next max_seq_len tokens after the
    # one token before them, the last (shorter) one after as many tokens as fill the context.
    n = ours.model.config.max_seq_len
    windows = [([tok.bos_id] if s == 0 else ids[max(s - 1 - n + len(ids[s:s + n]), 0):s], ids[s:s + n])
               for s in range(0, len(ids), n)]
    assert len(windows) >= 3 and len(windows[-1][1]) < n and len(windows[-1][0]) > 1
    expected = sum(s.logprob for s in ours.model.loglikelihood_tokens(windows))
    assert total == pytest.approx(expected, abs=1e-3)


def test_a_tokenizer_of_another_vocabulary_is_refused(setup, tmp_path):
    from llama_jax.evaluation.harness import LlamaJaxLM

    other = train_sentencepiece(str(tmp_path / "other.model"), vocab_size=VOCAB + 64)
    with pytest.raises(ValueError, match=f"has {VOCAB + 64} pieces but the model has vocab_size={VOCAB}"):
        LlamaJaxLM(checkpoint=setup[0], tokenizer=other)


@pytest.mark.slow  # a second process that imports the harness and indexes its thousands of tasks: ~25 s
def test_the_lm_eval_command_runs_our_model(setup, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "llama_jax.lm_eval", "--model", "llama_jax", "--model_args",
         f"checkpoint={setup[0]},tokenizer={setup[0]}/tokenizer.model", "--tasks", "tiny_mc", "--include_path", setup[1],
         "--limit", "4", "--output_path", str(tmp_path / "out")],
        capture_output=True, text=True, env={**os.environ, **OFFLINE})
    assert result.returncode == 0, result.stderr[-2000:]
    (results,) = [os.path.join(d, f) for d, _, files in os.walk(tmp_path / "out") for f in files if f.startswith("results")]
    with open(results) as f:
        assert json.load(f)["results"]["tiny_mc"]["sample_len"] == 4
