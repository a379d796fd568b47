"""Decoding with the key/value cache: prefill the prompts, then generate in `lax.while_loop` under `jax.jit`.

    out = sampling.generate(config, params, [[1, 450, 7483], [1, 306]], max_new_tokens=32, eos_id=2)
    out.tokens[0]          # the new ids of prompt 0 (EOS not included)
    out.finish[0]          # why it stopped: 'eos', 'length' (max_new_tokens), 'context' (max_seq_len), 'stop'
    out.prefill_s, out.decode_s, out.decode_tokens_per_s

`generate(config, params, prompts, *, max_new_tokens, temperature=0.0, top_k=0, top_p=1.0, seed=0,
eos_id=None, stop=None, mesh=None, rules=(), chunk=16) -> Generation`:
- prompts: token id lists (with BOS if the model expects it: `tokenizer.encode(text, bos=True)`), each shorter
  than config.max_seq_len. A prompt and its continuation never pass max_seq_len (as the reference's
  `total_len`); a row that reaches it stops with 'context'.
- Padding: per-row positions. Prompts are right-padded to a common length and each row decodes at its own
  position (cache slot = position), so a row's tokens equal those of the prompt alone (tests/test_sampling.py).
- Static shapes, so one compile per bucket: the prompt length, the batch (number of prompts) and the cache
  length (prompt bucket + max_new_tokens) are rounded up to powers of two (prompt length at least
  MIN_PROMPT_BUCKET; the cache at most max_seq_len). Each (temperature, top_k, top_p) compiles its own loop.
- Sampling: temperature 0 is greedy (argmax); otherwise logits / temperature, then top-k (keep the k largest;
  0 = all), then top-p (keep the smallest set of most likely tokens whose probability reaches top_p), as
  transformers orders its warpers; ties at a boundary are kept. The key is `seed` folded with the step: the same
  seed and prompts give the same tokens.
- Stopping: EOS (`eos_id`, not included in the tokens), `max_new_tokens`, the context, and `stop`, a host
  callable on a row's new ids (e.g. "its text contains a stop string"). With `stop`, the loop runs `chunk` steps
  at a time and, between chunks, `stop` is called on the host on each prefix the chunk added; a row is cut at the
  first prefix for which it holds, so the result does not depend on `chunk`. Without `stop` the loop runs to the end in
  one call.
- Timing: `prefill_s` is the time to first token (the prompts through the cache, then the first sampled
  token); `decode_s` the rest. `compile_s` is the compile time of this call's shapes (0 when cached).
- Sharding: with `mesh` and `rules` (config.mesh.rules as `sharding.logical_rules` gives them), parameters
  and the cache are laid out by their logical names, as in training; params already placed are not copied.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from llama_jax import sharding
from llama_jax.config import ModelConfig
from llama_jax.model.llama import LLaMA, abstract_params

MIN_PROMPT_BUCKET = 16
FINISH = ("running", "eos", "limit", "stop")  # device-side codes; 'limit' becomes 'length' or 'context'


@dataclasses.dataclass(frozen=True)
class Sampler:
    """How the next token is drawn from the logits (module docstring); part of the compiled program."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        if not self.temperature >= 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0 (0 is greedy)")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k} must be >= 0 (0 keeps every token)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must lie in (0, 1] (1 keeps every token)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def filter_logits(logits: jax.Array, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """logits [..., vocab] with -inf outside the top-k tokens, then outside the top-p nucleus of what is left."""
    logits = logits.astype(jnp.float32)
    if top_k:
        kth = jax.lax.top_k(logits, min(top_k, logits.shape[-1]))[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        descending = -jnp.sort(-logits, axis=-1)
        probs = jax.nn.softmax(descending, axis=-1)
        above = jnp.cumsum(probs, axis=-1) - probs  # probability of the tokens ranked before each one
        # keep a token while the tokens before it hold less than top_p (the first token is always kept)
        threshold = jnp.min(jnp.where(above < top_p, descending, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, -jnp.inf, logits)
    return logits


def sample(logits: jax.Array, key: jax.Array, sampler: Sampler) -> jax.Array:
    """Next tokens [batch] int32 from logits [batch, vocab]."""
    if sampler.greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    filtered = filter_logits(logits.astype(jnp.float32) / sampler.temperature, sampler.top_k, sampler.top_p)
    return jax.random.categorical(key, filtered, axis=-1).astype(jnp.int32)


@flax.struct.dataclass
class DecodeState:
    """Everything the decode loop carries; rows are prompts."""

    cache: Any  # the model's `cache` collection: keys and values [layers?, batch, cache_length, kv_heads, head_dim]
    tokens: jax.Array  # [batch] int32, the token fed at the next step
    positions: jax.Array  # [batch] int32, its position
    out: jax.Array  # [batch, cache_length] int32, generated tokens (the first `count` of each row)
    count: jax.Array  # [batch] int32, tokens generated
    limit: jax.Array  # [batch] int32, tokens the row may generate
    finish: jax.Array  # [batch] int32, index into FINISH (0 while running)
    step: jax.Array  # [] int32, decode steps taken
    key: jax.Array  # the sampling key (folded with `step`)


@dataclasses.dataclass
class Generation:
    """What `generate` returns: per prompt the new ids and why they stopped; timings in seconds."""

    tokens: list[list[int]]
    finish: list[str]  # 'eos' | 'length' | 'context' | 'stop'
    prompt_tokens: int  # real (unpadded) prompt tokens
    compile_s: float
    prefill_s: float  # time to first token
    decode_s: float  # the tokens after the first

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens after each row's first, per second of decoding."""
        later = sum(max(len(t) - 1, 0) for t in self.tokens)
        return later / self.decode_s if self.decode_s else 0.0


def bucket(n: int, minimum: int = 1) -> int:
    """The power of two at or above max(n, minimum)."""
    return 1 << max(0, math.ceil(math.log2(max(n, minimum))))


class Decoder:
    """The compiled prefill and decode-loop programs of one (model, sampler, mesh); one compile per shape."""

    def __init__(self, config: ModelConfig, sampler: Sampler, mesh: Mesh | None, rules: sharding.Rules):
        if mesh is not None and not rules:
            raise ValueError("generate with a mesh needs its logical axis rules (sharding.logical_rules(config))")
        self.config = config.replace(remat_policy="none")  # nothing is differentiated
        self.sampler, self.mesh, self.rules = sampler, mesh, rules
        self.compiled: dict[tuple, Any] = {}

    def data_parallel(self) -> int:
        """How many shards the batch dimension has (1 without a mesh)."""
        return 1 if self.mesh is None else sharding.data_parallel_size(self.mesh, self.rules)

    def _context(self):
        """Binds the model's logical activation constraints to the mesh, as in training (none without a mesh)."""
        return nn.logical_axis_rules(()) if self.mesh is None else sharding.activation_rules(self.mesh, self.rules)

    def _model(self, cache_length: int) -> LLaMA:
        return LLaMA(self.config, cache_length=cache_length)

    def prefill_fn(self, cache_length: int) -> Callable:
        def prefill(params, tokens, lengths, limits, key) -> DecodeState:
            """tokens [batch, prompt bucket] right-padded; each row continues from its last prompt token."""
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
            with self._context():
                _, variables = self._model(cache_length).apply(
                    {"params": params}, tokens, positions, return_hidden=True, mutable=["cache"])
            rows = jnp.arange(tokens.shape[0])
            batch = tokens.shape[0]
            return DecodeState(
                cache=nn.meta.unbox(variables["cache"]),
                tokens=tokens[rows, lengths - 1],
                positions=lengths - 1,
                out=jnp.zeros((batch, cache_length), jnp.int32),
                count=jnp.zeros(batch, jnp.int32),
                limit=limits,
                finish=jnp.where(limits > 0, 0, FINISH.index("limit")).astype(jnp.int32),
                step=jnp.zeros((), jnp.int32),
                key=key,
            )

        return prefill

    def decode_fn(self, cache_length: int) -> Callable:
        model = self._model(cache_length)

        def step(params, eos_id, state: DecodeState) -> DecodeState:
            with self._context():
                logits, variables = model.apply({"params": params, "cache": state.cache}, state.tokens[:, None],
                                                state.positions[:, None], mutable=["cache"])
            new = sample(logits[:, 0], jax.random.fold_in(state.key, state.step), self.sampler)
            running = state.finish == 0
            is_eos = new == eos_id
            keep = running & ~is_eos
            rows = jnp.arange(new.shape[0])
            out = state.out.at[rows, state.count].set(jnp.where(keep, new, state.out[rows, state.count]), mode="drop")
            count = state.count + keep
            finish = jnp.where(running & is_eos, FINISH.index("eos"), state.finish)
            finish = jnp.where(keep & (count >= state.limit), FINISH.index("limit"), finish)
            return state.replace(
                cache=nn.meta.unbox(variables["cache"]), tokens=new, out=out, count=count, finish=finish,
                positions=jnp.minimum(state.positions + running, cache_length - 1), step=state.step + 1,
            )

        def decode(params, state: DecodeState, until: jax.Array, eos_id: jax.Array) -> DecodeState:
            """Decode steps while a row runs and fewer than `until` steps were taken in all."""
            return jax.lax.while_loop(lambda s: (s.step < until) & jnp.any(s.finish == 0),
                                      functools.partial(step, params, eos_id), state)

        return decode

    def programs(self, params, batch: int, prompt_len: int, cache_length: int) -> tuple[Any, Any, dict, float]:
        """(compiled prefill, compiled decode, their shardings, seconds spent compiling now) for these shapes."""
        shape = (batch, prompt_len, cache_length)
        if shape in self.compiled:
            return (*self.compiled[shape], 0.0)
        start = time.perf_counter()
        ints = lambda *s: jax.ShapeDtypeStruct(s, jnp.int32)  # noqa: E731
        key = jax.eval_shape(lambda: jax.random.key(0))
        shardings = self.shardings(batch, cache_length)
        prefill_args = (params, ints(batch, prompt_len), ints(batch), ints(batch), key)
        prefill_jit = jax.jit(self.prefill_fn(cache_length), **self._jit_shardings(
            (shardings["params"], shardings["tokens"], shardings["rows"], shardings["rows"], shardings["scalar"]),
            shardings["state"]))
        prefill = prefill_jit.lower(*prefill_args).compile()
        state = jax.eval_shape(prefill_jit, *prefill_args)
        decode_jit = jax.jit(self.decode_fn(cache_length), donate_argnums=1, **self._jit_shardings(
            (shardings["params"], shardings["state"], shardings["scalar"], shardings["scalar"]), shardings["state"]))
        decode = decode_jit.lower(params, state, ints(), ints()).compile()
        self.compiled[shape] = (prefill, decode, shardings)
        return prefill, decode, shardings, time.perf_counter() - start

    def _jit_shardings(self, ins, out) -> dict:
        return {} if self.mesh is None else {"in_shardings": ins, "out_shardings": out}

    def shardings(self, batch: int, cache_length: int) -> dict[str, Any]:
        """NamedShardings by logical names: params, tokens [batch, length], rows [batch], the DecodeState."""
        if self.mesh is None:
            return dict.fromkeys(("params", "tokens", "rows", "scalar", "state"))
        named = lambda names: NamedSharding(self.mesh, nn.logical_to_mesh_axes(names, self.rules))  # noqa: E731
        params = param_shardings(self.config, self.mesh, self.rules)
        boxed = jax.eval_shape(lambda p: self._model(cache_length).apply(
            {"params": p}, jnp.zeros((batch, 1), jnp.int32), mutable=["cache"])[1]["cache"],
            nn.meta.unbox(abstract_params(self.config)))
        cache = sharding.named_shardings(nn.get_partition_spec(boxed), nn.meta.unbox(boxed), self.mesh, self.rules)
        rows, scalar = named(("batch",)), sharding.replicated(self.mesh)
        state = DecodeState(cache=cache, tokens=rows, positions=rows, out=named(("batch", None)), count=rows,
                            limit=rows, finish=rows, step=scalar, key=scalar)
        return {"params": params, "tokens": named(("batch", "length")), "rows": rows, "scalar": scalar,
                "state": state}


def param_shardings(config: ModelConfig, mesh: Mesh, rules: sharding.Rules):
    """NamedShardings of the parameters from their logical names and `rules`, as training lays them out."""
    boxed = abstract_params(config)
    return sharding.named_shardings(nn.get_partition_spec(boxed), nn.meta.unbox(boxed), mesh, rules)


@functools.lru_cache(maxsize=32)
def decoder(config: ModelConfig, sampler: Sampler, mesh: Mesh | None = None, rules: sharding.Rules = ()) -> Decoder:
    """The Decoder of these settings, shared by every call (its compiled programs are reused)."""
    return Decoder(config, sampler, mesh, rules)


def check_prompts(prompts: Sequence[Sequence[int]], config: ModelConfig) -> list[list[int]]:
    """The prompts as lists of ints, or a ValueError naming the first empty, too long or out-of-vocabulary one."""
    if not prompts:
        raise ValueError("no prompts given")
    checked = []
    for i, prompt in enumerate(prompts):
        ids = [int(t) for t in prompt]
        if not ids:
            raise ValueError(f"prompt {i} is empty; give at least one token (e.g. BOS)")
        if len(ids) >= config.max_seq_len:
            raise ValueError(f"prompt {i} has {len(ids)} tokens but the model's context is max_seq_len="
                             f"{config.max_seq_len}: it leaves no room to generate; shorten it to at most "
                             f"{config.max_seq_len - 1} tokens")
        bad = [t for t in ids if not 0 <= t < config.vocab_size]
        if bad:
            raise ValueError(f"prompt {i} has token ids {bad[:5]} outside the vocabulary [0, {config.vocab_size})")
        checked.append(ids)
    return checked


def generate(
    config: ModelConfig,
    params: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    eos_id: int | None = None,
    stop: Callable[[list[int]], bool] | None = None,
    mesh: Mesh | None = None,
    rules: sharding.Rules = (),
    chunk: int = 16,
) -> Generation:
    """Continue each prompt by up to `max_new_tokens` tokens (module docstring); params are the plain tree
    `LLaMA(config).apply` takes."""
    prompts = check_prompts(prompts, config)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be at least 1")
    if eos_id is not None and not 0 <= eos_id < config.vocab_size:
        raise ValueError(f"eos_id={eos_id} lies outside the vocabulary [0, {config.vocab_size})")
    if chunk < 1:
        raise ValueError(f"chunk={chunk} must be at least 1")
    dec = decoder(config, Sampler(temperature, top_k, top_p), mesh, tuple(rules))
    lengths = [len(p) for p in prompts]
    prompt_len = min(bucket(max(lengths), MIN_PROMPT_BUCKET), config.max_seq_len)
    cache_length = min(bucket(prompt_len + max_new_tokens), config.max_seq_len)
    dp = dec.data_parallel()
    batch = dp * bucket(math.ceil(len(prompts) / dp))
    prefill, decode, shardings, compile_s = dec.programs(params, batch, prompt_len, cache_length)
    params = jax.device_put(params, shardings["params"])  # a no-op for params already placed so
    put = lambda x, name: jax.device_put(x, shardings[name])  # noqa: E731  (shardings are None without a mesh)
    tokens, row_lengths, limits = _rows(prompts, batch, prompt_len, max_new_tokens, config.max_seq_len)
    eos = put(np.int32(-1 if eos_id is None else eos_id), "scalar")

    start = time.perf_counter()
    state = prefill(params, put(tokens, "tokens"), put(row_lengths, "rows"), put(limits, "rows"),
                    put(jax.random.key(seed), "scalar"))
    state = decode(params, state, put(np.int32(1), "scalar"), eos)  # the first token: part of TTFT
    jax.block_until_ready(state.out)
    prefill_s = time.perf_counter() - start

    start = time.perf_counter()
    cut = np.full(len(prompts), -1)  # where `stop` cut a row (-1: it did not)
    checked = np.zeros(len(prompts), np.int64)
    while True:
        until = max_new_tokens if stop is None else min(int(state.step) + chunk, max_new_tokens)
        state = decode(params, state, put(np.int32(until), "scalar"), eos)
        out, count, finish = (np.array(x) for x in jax.device_get((state.out, state.count, state.finish)))
        if stop is not None and _apply_stop(stop, out, count, checked, cut):
            finish[: len(prompts)][cut >= 0] = FINISH.index("stop")
            state = state.replace(finish=put(finish, "rows"))
        if not (finish[: len(prompts)] == 0).any() or int(state.step) >= max_new_tokens:
            break
    decode_s = time.perf_counter() - start

    results, reasons = [], []
    for row in range(len(prompts)):
        n = cut[row] if cut[row] >= 0 else count[row]
        results.append(out[row, :n].tolist())
        reason = "stop" if cut[row] >= 0 else FINISH[finish[row]]
        if reason == "limit":
            reason = "length" if n == max_new_tokens else "context"
        reasons.append(reason)
    return Generation(results, reasons, sum(lengths), compile_s, prefill_s, decode_s)


def _rows(prompts: list[list[int]], batch: int, prompt_len: int, max_new_tokens: int,
          max_seq_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens [batch, prompt_len] right-padded, lengths [batch], new-token limits [batch]); the rows after the
    prompts are padding: one token, nothing to generate."""
    tokens = np.zeros((batch, prompt_len), np.int32)
    lengths, limits = np.ones(batch, np.int32), np.zeros(batch, np.int32)
    for row, prompt in enumerate(prompts):
        tokens[row, : len(prompt)] = prompt
        lengths[row] = len(prompt)
        limits[row] = min(max_new_tokens, max_seq_len - len(prompt))  # the reference's total_len
    return tokens, lengths, limits


def _apply_stop(stop: Callable[[list[int]], bool], out: np.ndarray, count: np.ndarray, checked: np.ndarray,
                cut: np.ndarray) -> bool:
    """Check `stop` on each new prefix of each row's ids (those longer than at the last check); record in `cut` the
    length of the first prefix for which it holds. Returns whether any row was cut now."""
    changed = False
    for row in range(len(cut)):
        if cut[row] >= 0 or count[row] == checked[row]:
            continue
        ids = out[row, : count[row]].tolist()
        cut[row] = next((k for k in range(checked[row] + 1, count[row] + 1) if stop(ids[:k])), -1)
        changed |= cut[row] >= 0
        checked[row] = count[row]
    return changed
