"""Log-likelihood scoring, the primitive of zero-shot evaluation: log P(continuation | context) per request.

Several requests share one row, as training packs documents: each request is its own segment (segment ids keep
attention inside it, positions restart at 0), so packing changes no score. Rows have a static shape
[rows, row_len], row_len taken from a short ladder of lengths, so a whole evaluation compiles a few programs.

Tokenization follows lm-evaluation-harness (`TemplateLM`, `hf` backend): the context is encoded after BOS when
the tokenizer adds one (`Tokenizer.add_bos`: LLaMA's does, a GPT-2-style BPE does not), the continuation is what
encoding context + continuation adds after it, trailing spaces of the context move to the continuation, and an
empty context is scored after BOS alone.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from llama_jax import sharding
from llama_jax.config import ModelConfig
from llama_jax.model.llama import LLaMA

if TYPE_CHECKING:
    from llama_jax.inference.tokenizer import Tokenizer

TokenRequest = tuple[Sequence[int], Sequence[int]]  # (context ids, continuation ids); the context is never empty
MIN_ROW_LEN = 256  # the shortest row of the ladder: short requests pack several to a row (a 2048-token batch)


@dataclasses.dataclass(frozen=True)
class Score:
    """One request's result: summed log-probability (nats), continuation tokens, and whether greedy decoding
    would produce the continuation (every token is the argmax)."""

    logprob: float
    tokens: int
    greedy: bool


def encode_pair(tokenizer: Tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as lm-evaluation-harness tokenizes a loglikelihood request."""
    if not context:  # the harness's rule: an empty context is BOS (its prefix token), unless the text starts with it
        ids = tokenizer.encode(continuation)
        return (ids[:1], ids[1:]) if ids[:1] == [tokenizer.bos_id] else ([tokenizer.bos_id], ids)
    spaces = len(context) - len(context.rstrip())
    if spaces:  # "Question: x\nAnswer: " + "yes" scores " yes": the word boundary belongs to the continuation
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer.encode(context + continuation, bos=tokenizer.add_bos)
    context_ids = tokenizer.encode(context, bos=tokenizer.add_bos)
    return context_ids, whole[len(context_ids):]


def row_length(longest: int, max_seq_len: int) -> int:
    """The row length for requests of at most `longest` input tokens: the ladder 256, 512, 1024, ... capped at
    max_seq_len, so a suite of evaluations compiles a handful of shapes."""
    length = MIN_ROW_LEN
    while length < longest:
        length *= 2
    return min(length, max_seq_len)


def pack(lengths: Sequence[int], row_len: int) -> list[list[int]]:
    """Indices of `lengths` grouped into rows of at most `row_len` tokens: longest first, each into the row it
    fills best (best-fit decreasing); deterministic."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (tokens still free, row index), sorted
    for i in order:
        slot = bisect.bisect_left(free, (lengths[i], -1))
        if slot == len(free):
            rows.append([i])
            room, row = row_len - lengths[i], len(rows) - 1
        else:
            room, row = free.pop(slot)
            rows[row].append(i)
            room -= lengths[i]
        bisect.insort(free, (room, row))
    return rows


def check_request(request: TokenRequest, max_seq_len: int, truncate: bool) -> TokenRequest:
    """The request, or (truncate) its last max_seq_len + 1 tokens as the harness's `hf` backend keeps them;
    raises on an empty context or continuation, or one longer than the model's context."""
    context, continuation = list(request[0]), list(request[1])
    if not context or not continuation:
        raise ValueError(f"a scoring request needs a non-empty context and continuation, got {len(context)} context "
                         f"and {len(continuation)} continuation tokens (an empty text is scored after BOS)")
    if len(continuation) > max_seq_len:
        raise ValueError(f"a continuation of {len(continuation)} tokens does not fit the model's context of "
                         f"max_seq_len={max_seq_len} tokens")
    excess = len(context) + len(continuation) - 1 - max_seq_len
    if excess > 0:
        if not truncate:
            raise ValueError(f"a request of {len(context)} context + {len(continuation)} continuation tokens is longer "
                             f"than the model's context (max_seq_len={max_seq_len} inputs); shorten the prompt, or "
                             "truncate it from the left (lm_eval: --model_args ...,truncation=True)")
        context = context[excess:]
    return context, continuation


class Scorer:
    """Scores token requests with a LLaMA `config`; one compiled program per [rows, row_len] shape, reused.

    With a `mesh` (and the training config whose `mesh.rules` lay it out), rows are sharded over the batch axes
    and the model's activations follow the training rules; params may then be the trainer's sharded arrays.
    """

    def __init__(self, config: ModelConfig, *, rows: int = 8, mesh: jax.sharding.Mesh | None = None,
                 train_config: Any = None):
        self.config, self.mesh, self.train_config = config, mesh, train_config
        self.rules = () if mesh is None else sharding.logical_rules(train_config)  # for generation on the same mesh
        if mesh is not None:
            step = sharding.data_parallel_size(mesh, self.rules)
            rows = -(-rows // step) * step  # each data-parallel shard gets whole rows
            self._sharding = sharding.batch_sharding(mesh, self.rules)
        self.rows = rows
        # Results come back replicated, so that every process of a multi-host job can read them.
        self._step = jax.jit(self._token_scores, out_shardings=None if mesh is None else sharding.replicated(mesh))

    def _token_scores(self, params, inputs, targets, positions, segment_ids) -> tuple[jax.Array, jax.Array]:
        """Per position: log P(target) float32 and whether the target is the argmax, each [rows, row_len]."""
        if self.mesh is None:
            constraints = contextlib.nullcontext()
        else:
            from llama_jax.train.step import activation_sharding

            constraints = activation_sharding(self.train_config, self.mesh)
        with constraints:
            logits = LLaMA(self.config).apply({"params": params}, inputs, positions=positions, segment_ids=segment_ids)
        logprobs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        target = jnp.take_along_axis(logprobs, targets[..., None], axis=-1)[..., 0]
        return target, jnp.argmax(logits, axis=-1) == targets

    def _put(self, array: np.ndarray) -> jax.Array | np.ndarray:
        if self.mesh is None:
            return array
        # Every process holds the whole batch (the requests are the same everywhere): each takes its shards.
        return jax.make_array_from_callback(array.shape, self._sharding, lambda index: array[index])

    def __call__(self, params, requests: Sequence[TokenRequest], *, truncate: bool = False) -> list[Score]:
        """One Score per request, in order (see check_request for what is refused)."""
        requests = [check_request(r, self.config.max_seq_len, truncate) for r in requests]
        if not requests:
            return []
        lengths = [len(c) + len(t) - 1 for c, t in requests]  # model inputs: everything but the last token
        row_len = row_length(max(lengths), self.config.max_seq_len)
        if self.mesh is not None:
            multiple = sharding.axis_size(self.mesh, self._sharding.spec[1])
            row_len = -(-row_len // multiple) * multiple
        rows = pack(lengths, row_len)
        scores: list[Score | None] = [None] * len(requests)
        for start in range(0, len(rows), self.rows):
            self._score_rows(params, requests, rows[start:start + self.rows], row_len, scores)
        return scores

    def _score_rows(self, params, requests, rows: list[list[int]], row_len: int, scores: list) -> None:
        """Scores the requests packed in `rows` (at most self.rows of them) into `scores`."""
        shape = (self.rows, row_len)
        inputs, targets = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
        positions, segment_ids = np.zeros(shape, np.int32), np.zeros(shape, np.int32)  # padding: segment 0
        spans = []
        for r, row in enumerate(rows):
            offset = 0
            for segment, i in enumerate(row, start=1):
                tokens = [*requests[i][0], *requests[i][1]]
                n = len(tokens) - 1
                inputs[r, offset:offset + n], targets[r, offset:offset + n] = tokens[:-1], tokens[1:]
                positions[r, offset:offset + n], segment_ids[r, offset:offset + n] = np.arange(n), segment
                spans.append((i, r, offset + n - len(requests[i][1]), offset + n))  # the continuation's targets
                offset += n
        logprobs, greedy = jax.device_get(self._step(params, *map(self._put, (inputs, targets, positions, segment_ids))))
        for i, r, begin, end in spans:
            scores[i] = Score(float(logprobs[r, begin:end].sum(dtype=np.float64)), end - begin,
                              bool(greedy[r, begin:end].all()))
