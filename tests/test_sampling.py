"""Decoding is exact: the key/value cache gives the logits of recomputing the whole sequence, greedy tokens equal
transformers' `generate` on each prompt alone (so padding a batch changes nothing), sampling draws from the
filtered distribution, stopping is exact, and a sharded decoder lays its cache out by the training rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from jax.sharding import PartitionSpec  # noqa: E402
from tiny_llama import VOCAB, tiny_llama  # noqa: E402

from experiments.configs.common import base_config  # noqa: E402
from llama_jax import sharding  # noqa: E402
from llama_jax.convert import formats as convert  # noqa: E402
from llama_jax.inference import sampling  # noqa: E402
from llama_jax.model.llama import LLaMA  # noqa: E402

RNG = np.random.default_rng(0)
# Three prompts (a batch of 4 rows, one of them padding); the 60-token one reaches the context (64) after 4 new
# tokens. Every generate call below has the same shapes, so the decoder compiles once per sampler and model.
PROMPTS = [RNG.integers(0, VOCAB, n).tolist() for n in (5, 60, 1)]
NEW = 8


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> (torch model, our config, our params) for a multi-head (scanned layers) and a grouped-query
    (unrolled layers) random model, converted through a saved Hugging Face directory."""
    out = {}
    for seed, (name, scan) in enumerate((("mha", True), ("gqa", False))):
        model = tiny_llama(name, seed)
        path = str(tmp_path_factory.mktemp(name))
        model.save_pretrained(path)
        config, params = convert.load_hf(path, scan_layers=scan)
        out[name] = (model, config, jax.device_put(params))
    return out


def _mesh(fsdp: int, tensor: int):
    """A mesh of fsdp x tensor of the 8 test devices and the training rules of the debug config."""
    c = base_config("debug")
    c.mesh.fsdp, c.mesh.tensor = fsdp, tensor
    return sharding.make_mesh(c, jax.devices()[: fsdp * tensor]), sharding.logical_rules(c)


# The grouped-query model decodes sharded like training: batch over fsdp, kv heads (and heads, mlp, vocab) over
# tensor; the multi-head one on one device.
MESHES = {"mha": {}, "gqa": dict(zip(("mesh", "rules"), _mesh(fsdp=2, tensor=2), strict=True))}


def _hf_greedy(model, prompt: list[int], new: int, eos_id: int | None = None) -> list[int]:
    model.generation_config.eos_token_id = eos_id
    with torch.no_grad():
        ids = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=new, min_new_tokens=0,
                             pad_token_id=0, attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
    return ids[0, len(prompt):].tolist()


@pytest.mark.parametrize("name", ["mha", "gqa"])
def test_cached_decoding_gives_the_logits_of_the_whole_sequence(models, name):
    _, config, params = models[name]
    tokens = jnp.asarray(RNG.integers(0, VOCAB, (2, 12)))
    full = jax.jit(LLaMA(config).apply)({"params": params}, tokens)
    model = LLaMA(config, cache_length=16)
    apply = jax.jit(lambda variables, tokens, positions: model.apply(variables, tokens, positions, mutable=["cache"]))
    # prefill 5 tokens, then one token at a time: the logits of every position, as the whole sequence gives them
    logits, cache = apply({"params": params}, tokens[:, :5], jnp.broadcast_to(jnp.arange(5), (2, 5)))
    steps = [logits]
    for t in range(5, 12):
        logits, cache = apply({"params": params, **cache}, tokens[:, t:t + 1], jnp.full((2, 1), t))
        steps.append(logits)
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=2e-5, rtol=0)
    assert float(jnp.abs(full).max()) > 1.0  # not a comparison of near-zero numbers
    # rows at different positions in one call: row 1 is fed position 4 again while row 0 moves on to 11
    logits, _ = apply({"params": params, **cache}, tokens[[0, 1], [11, 4]][:, None], jnp.asarray([[11], [4]]))
    np.testing.assert_allclose(logits[:, 0], full[[0, 1], [11, 4]], atol=2e-5, rtol=0)


@pytest.mark.parametrize("name", ["mha", "gqa"])
def test_greedy_tokens_of_a_batch_equal_transformers_generate_on_each_prompt(models, name):
    model, config, params = models[name]
    ours = sampling.generate(config, params, PROMPTS, max_new_tokens=NEW, **MESHES[name])
    for prompt, tokens in zip(PROMPTS, ours.tokens, strict=True):
        assert tokens == _hf_greedy(model, prompt, NEW)[: len(tokens)]  # transformers goes past the context
    # a prompt and its continuation stay within the context, as in the reference's generate
    assert [len(t) for t in ours.tokens] == [NEW, 4, NEW] and ours.finish == ["length", "context", "length"]
    # an EOS that greedy decoding meets half way: transformers emits it and stops; we stop before it
    eos = ours.tokens[0][4]
    stopped = sampling.generate(config, params, PROMPTS, max_new_tokens=NEW, eos_id=eos, **MESHES[name])
    for prompt, tokens, finish in zip(PROMPTS, stopped.tokens, stopped.finish, strict=True):
        ours_with_eos = tokens + [eos] * (finish == "eos")
        assert ours_with_eos == _hf_greedy(model, prompt, NEW, eos_id=eos)[: len(ours_with_eos)]
    assert stopped.finish[0] == "eos" and stopped.tokens[0] == ours.tokens[0][: ours.tokens[0].index(eos)]


def test_the_cache_is_sharded_by_the_training_rules(models):
    _, config, _ = models["gqa"]
    mesh, rules = MESHES["gqa"]["mesh"], MESHES["gqa"]["rules"]
    state = sampling.decoder(config, sampling.Sampler(), mesh, rules).shardings(batch=4, cache_length=64)["state"]
    # [batch, cache_length, kv_heads, head_dim] per layer: batch as training shards it, kv heads over tensor
    specs = {s.spec for s in jax.tree.leaves(state.cache)}
    assert specs == {PartitionSpec(("data", "fsdp"), None, "tensor", None)}
    assert state.out.spec == PartitionSpec(("data", "fsdp"), None)


def test_sampling_is_reproducible_and_depends_on_the_seed(models):
    _, config, params = models["mha"]
    kwargs = {"max_new_tokens": NEW, "temperature": 1.0, "top_k": 20, "top_p": 0.9}
    first = sampling.generate(config, params, PROMPTS, seed=1, **kwargs).tokens
    assert sampling.generate(config, params, PROMPTS, seed=1, **kwargs).tokens == first
    assert sampling.generate(config, params, PROMPTS, seed=2, **kwargs).tokens != first


def test_stop_cuts_at_the_first_prefix_whatever_the_chunk(models):
    _, config, params = models["mha"]
    greedy = sampling.generate(config, params, PROMPTS, max_new_tokens=NEW)
    target = greedy.tokens[0][5]  # "stop once the last token is this one": true first after 6 tokens or earlier

    def stop(ids):
        return ids[-1] == target

    expected = [t[: t.index(target) + 1] if target in t else t for t in greedy.tokens]
    for chunk in (1, 3, 16):
        out = sampling.generate(config, params, PROMPTS, max_new_tokens=NEW, stop=stop, chunk=chunk)
        assert out.tokens == expected
        assert out.finish == ["stop" if target in t else f for t, f in zip(greedy.tokens, greedy.finish, strict=True)]


# ---------------------------------------------------------------------------------------------- filtering
LOGITS = np.log(np.array([0.05, 0.4, 0.1, 0.25, 0.2], np.float32))


def _kept(logits) -> list[int]:
    return np.flatnonzero(np.isfinite(np.asarray(logits))).tolist()


def test_top_k_and_top_p_keep_exactly_the_expected_tokens():
    assert _kept(sampling.filter_logits(LOGITS, top_k=2)) == [1, 3]
    assert _kept(sampling.filter_logits(LOGITS, top_k=10)) == [0, 1, 2, 3, 4]  # k above the vocabulary: all
    # probabilities by rank: 0.4, 0.25, 0.2, 0.1, 0.05; cumulative 0.4, 0.65, 0.85, 0.95, 1.0
    assert _kept(sampling.filter_logits(LOGITS, top_p=0.3)) == [1]  # the top token alone reaches 0.3
    assert _kept(sampling.filter_logits(LOGITS, top_p=0.65)) == [1, 3]
    assert _kept(sampling.filter_logits(LOGITS, top_p=0.66)) == [1, 3, 4]
    # top-p applies to what top-k left, renormalised: 0.4/0.65 = 0.615 < 0.7 needs the second token
    assert _kept(sampling.filter_logits(LOGITS, top_k=2, top_p=0.7)) == [1, 3]
    assert _kept(sampling.filter_logits(LOGITS, top_k=2, top_p=0.6)) == [1]
    kept = np.asarray(sampling.filter_logits(LOGITS, top_k=3))
    np.testing.assert_array_equal(kept[[1, 3, 4]], LOGITS[[1, 3, 4]])  # kept logits are unchanged


def test_samples_follow_the_filtered_distribution():
    n = 20000
    sampler = sampling.Sampler(temperature=0.5, top_k=4, top_p=0.9)
    keys = jax.random.split(jax.random.key(0), n)
    draws = jax.jit(jax.vmap(lambda key: sampling.sample(jnp.asarray(LOGITS)[None], key, sampler)[0]))(keys)
    counts = np.bincount(np.asarray(draws), minlength=LOGITS.size)
    # temperature 0.5 squares the probabilities: 0.16, 0.0625, 0.04, 0.01 (top 4) -> 0.59, 0.23, 0.15, 0.04;
    # top-p 0.9 keeps the first three (0.59 + 0.23 < 0.9 <= 0.97)
    p = np.exp(LOGITS / 0.5)
    p[[0, 2]] = 0
    p /= p.sum()
    assert counts[0] == counts[2] == 0
    kept = [1, 3, 4]
    # chi-square goodness of fit at significance 1e-4: fails for a wrong distribution (e.g. without temperature
    # the expected counts move by hundreds of standard deviations), passes by chance with probability 1 - 1e-4
    statistic = ((counts[kept] - n * p[kept]) ** 2 / (n * p[kept])).sum()
    assert statistic < scipy.stats.chi2.ppf(1 - 1e-4, df=len(kept) - 1)


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_requests_are_clear_errors(models):
    _, config, params = models["mha"]
    with pytest.raises(ValueError, match=r"prompt 1 has 64 tokens but the model's context is max_seq_len=64"):
        sampling.generate(config, params, [[1], [1] * 64], max_new_tokens=1)
    with pytest.raises(ValueError, match=r"prompt 0 has token ids \[128\] outside the vocabulary \[0, 128\)"):
        sampling.generate(config, params, [[1, 128]], max_new_tokens=1)
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        sampling.generate(config, params, [[]], max_new_tokens=1)
    with pytest.raises(ValueError, match="top_p=0.0 must lie in"):
        sampling.generate(config, params, [[1]], max_new_tokens=1, top_p=0.0)
    with pytest.raises(ValueError, match="max_new_tokens=0 must be at least 1"):
        sampling.generate(config, params, [[1]], max_new_tokens=0)
