"""Log-likelihood scoring: packed rows give each request the log-softmax of its own forward pass, tokenization
follows lm-evaluation-harness, and bad requests are refused."""

import flax.linen as nn
import jax
import numpy as np
import pytest
from evaluation_fixtures import train_sentencepiece

from llama_jax.config import get_preset
from llama_jax.evaluation import scoring
from llama_jax.inference import tokenizer as tokenizer_lib
from llama_jax.model.llama import LLaMA, init_params

CONFIG = get_preset("debug")  # vocab 256, context 64


@pytest.fixture(scope="module")
def params():
    return jax.tree.map(lambda x: x * 20, nn.meta.unbox(init_params(CONFIG, jax.random.key(0))))  # peaked logits


@jax.jit
def _logits(params, tokens):
    return LLaMA(CONFIG).apply({"params": params}, tokens)


@pytest.fixture(scope="module")
def scorer():
    return scoring.Scorer(CONFIG, rows=2)


def _requests(seed: int, n: int) -> list[tuple[list[int], list[int]]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        context = rng.integers(0, CONFIG.vocab_size, rng.integers(1, 40)).tolist()
        out.append((context, rng.integers(0, CONFIG.vocab_size, rng.integers(1, 65 - len(context))).tolist()))
    return out


def _direct(params, context, continuation) -> tuple[float, bool]:
    """log P(continuation | context) from one unpacked forward pass over the request alone (padded at the end to
    the model's context, which causal attention never lets earlier positions see)."""
    tokens = np.array(context + continuation)
    padded = np.zeros((1, CONFIG.max_seq_len), np.int32)
    padded[0, :len(tokens) - 1] = tokens[:-1]
    logits = np.asarray(_logits(params, padded))[0, :len(tokens) - 1].astype(np.float64)
    logprobs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
    rows = np.arange(len(context) - 1, len(tokens) - 1)
    targets = tokens[len(context):]
    return float(logprobs[rows, targets].sum()), bool((logits[rows].argmax(-1) == targets).all())


def test_packed_scores_equal_each_request_alone(params, scorer):
    requests = _requests(0, 9)
    scores = scorer(params, requests)
    rows = scoring.pack([len(c) + len(t) - 1 for c, t in requests], 64)
    assert len(rows) < len(requests) and len(rows) > scorer.rows  # several requests per row, several batches
    for (context, continuation), score in zip(requests, scores, strict=True):
        logprob, greedy = _direct(params, context, continuation)
        assert score.tokens == len(continuation)
        assert score.logprob == pytest.approx(logprob, abs=2e-4, rel=1e-5)
        assert score.greedy == greedy


def test_greedy_continuation_is_flagged(params, scorer):
    context = [5, 17, 3]
    logits = np.asarray(_logits(params, np.array([context + [0] * (CONFIG.max_seq_len - 3)])))[0, :3]
    best = int(logits[-1].argmax())
    second = int(np.argsort(logits[-1])[-2])
    greedy, other = scorer(params, [(context, [best]), (context, [second])])
    assert greedy.greedy and not other.greedy and greedy.logprob > other.logprob


def test_pack_places_every_request_once_within_rows():
    lengths = [30, 64, 1, 33, 31, 2, 17, 40]
    rows = scoring.pack(lengths, 64)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 64 for row in rows)
    assert len(rows) == 4  # 218 tokens: best-fit decreasing fills four rows of 64
    assert rows == scoring.pack(lengths, 64)


def test_row_length_ladder():
    assert [scoring.row_length(n, 2048) for n in (1, 256, 257, 600, 2000)] == [256, 256, 512, 1024, 2048]
    assert scoring.row_length(100, 96) == 96


def test_too_long_request_is_refused_or_truncated_like_the_harness(params, scorer):
    context, continuation = list(range(1, 62)), [7, 8, 9, 10, 11]  # 65 inputs, one more than max_seq_len
    with pytest.raises(ValueError, match="longer than the model's context"):
        scorer(params, [(context, continuation)])
    (truncated,) = scorer(params, [(context, continuation)], truncate=True)
    (kept,) = scorer(params, [(context[1:], continuation)])  # the last max_seq_len + 1 tokens
    assert truncated == kept
    with pytest.raises(ValueError, match="non-empty context and continuation"):
        scorer(params, [([1, 2], [])])


@pytest.fixture(scope="module")
def sp_tokenizer(tmp_path_factory):
    path = train_sentencepiece(str(tmp_path_factory.mktemp("tok") / "tokenizer.model"))
    return tokenizer_lib.load(path)


def test_encode_pair_follows_the_harness(sp_tokenizer):
    tok = sp_tokenizer
    context, continuation = scoring.encode_pair(tok, "Question: is it true?\nAnswer: ", "yes")
    assert context == tok.encode("Question: is it true?\nAnswer:", bos=True)  # the trailing space moved on
    assert context + continuation == tok.encode("Question: is it true?\nAnswer: yes", bos=True)
    assert scoring.encode_pair(tok, "", " The end") == ([tok.bos_id], tok.encode(" The end"))  # empty: after BOS
