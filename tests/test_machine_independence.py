"""Verdicts and artifacts that must not depend on the machine.

TensorFlow's start-up lines depend on the processor: where it turns oneDNN on by default (processors with
AVX-512), it announces so through absl before any log level applies. `data_pipeline` turns oneDNN off before
TensorFlow is imported; these tests show that the console is quiet on either kind of processor and that the stream's
batches do not depend on the setting.

Both kinds of processor are covered on whichever one runs the suite: TF_ENABLE_ONEDNN_OPTS=1 forces what an AVX-512
processor does by default, TF_ENABLE_ONEDNN_OPTS unset leaves the choice to the package (and so to the processor,
were the package not to make it).

A tokenizer trained on a machine with another core count (SentencePiece records its thread count and input paths in
the model) encodes the same, and has the same fingerprint, which pretokenized shards check.
"""

import hashlib
import subprocess
import sys

import pytest
from helpers import NOISE, ROOT, person_env


def python(code: str, **env: str) -> subprocess.CompletedProcess:
    """`python -c code` in the repository, with a person's environment plus `env` (a value "" removes a variable)."""
    environment = {k: v for k, v in person_env(**env).items() if v != ""}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True, text=True,
                          timeout=600, check=False)


def noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if any(n in line for n in NOISE)]


def test_the_forbidden_lines_are_the_ones_tensorflow_prints_with_onednn_on():
    """A control for every quiet-console test: with oneDNN on (as on an AVX-512 processor), importing TensorFlow
    prints lines that the NOISE list catches, so a test that finds none of them could have."""
    result = python("import tensorflow", TF_ENABLE_ONEDNN_OPTS="1", TF_CPP_MIN_LOG_LEVEL="1")
    assert result.returncode == 0, result.stderr
    lines = noise(result.stderr)
    assert any("oneDNN custom operations are on" in line for line in lines), result.stderr
    assert any("absl::InitializeLog" in line for line in lines), result.stderr


@pytest.mark.parametrize("onednn", ["", "0"], ids=["processor default", "off"])
def test_tensorflow_imported_through_the_data_pipeline_prints_nothing(onednn):
    result = python("import data_pipeline, tensorflow, tensorflow_datasets", TF_ENABLE_ONEDNN_OPTS=onednn,
                    TF_CPP_MIN_LOG_LEVEL="")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


STREAM_DIGEST = """
import hashlib, sys
import data_pipeline
from experiments.configs.common import base_config
c = base_config("tiny")
c.model.vocab_size, c.train.seq_len, c.train.global_batch_size = 1024, 64, 8
c.data.corpus_dir, c.data.shuffle_buffer, c.data.threads = sys.argv[1], 64, 1
stream, digest = data_pipeline.train_stream(c), hashlib.sha256()
for _ in range(6):
    batch = next(stream)
    for key in sorted(batch):
        digest.update(key.encode() + batch[key].tobytes())
print(digest.hexdigest())
"""


def test_the_stream_is_the_same_bytes_with_onednn_on_and_off(small_corpus):
    digests = {}
    for onednn in ("0", "1"):
        result = subprocess.run([sys.executable, "-c", STREAM_DIGEST, small_corpus], cwd=ROOT, capture_output=True,
                                text=True, timeout=600, check=False, env=person_env(TF_ENABLE_ONEDNN_OPTS=onednn))
        assert result.returncode == 0, result.stderr
        digests[onednn] = result.stdout.strip()
    assert len(digests["0"]) == len(hashlib.sha256().hexdigest())
    assert digests["0"] == digests["1"]


def test_a_tokenizer_trained_with_other_threads_and_paths_has_the_same_fingerprint(tmp_path):
    import sentencepiece as spm
    from helpers import stdlib_paragraphs

    from data_pipeline import spm_tokenizer as tok

    text = tmp_path / "sample.txt"
    text.write_text("\n".join(stdlib_paragraphs()[:1500]))
    models = {}
    for threads, vocab in ((1, 600), (2, 600), (2, 599)):
        prefix = tmp_path / f"run_{threads}_{vocab}" / "tokenizer"
        prefix.parent.mkdir()
        spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(prefix), vocab_size=vocab, model_type="bpe",
                                       num_threads=threads, minloglevel=2)
        models[threads, vocab] = spm.SentencePieceProcessor(model_file=f"{prefix}.model")
    one, two, smaller = models[1, 600], models[2, 600], models[2, 599]
    assert one.serialized_model_proto() != two.serialized_model_proto()  # the run's record differs ...
    sample = text.read_text()[:20000]
    assert one.encode(sample) == two.encode(sample)  # ... what it learned does not
    assert tok.fingerprint(one) == tok.fingerprint(two)
    assert tok.fingerprint(smaller) != tok.fingerprint(two)
