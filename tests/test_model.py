"""Properties of the model that the paper and the reference implementation fix."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llama_jax.config import PRESETS, ModelConfig
from llama_jax.convert.formats import unstack_layers
from llama_jax.model import attention
from llama_jax.model import llama as model

DEBUG = PRESETS["debug"]


@pytest.fixture(scope="module")
def params():
    return model.init_params(DEBUG, jax.random.key(0))


@pytest.fixture(scope="module")
def apply():
    return jax.jit(lambda p, t: model.LLaMA(DEBUG).apply({"params": p}, t))


@pytest.mark.parametrize(
    "name, expected",
    [("llama_7b", 6_738_415_616), ("llama_13b", 13_015_864_320), ("llama_33b", 32_528_943_616), ("llama_65b", 65_285_660_672)],
)
def test_paper_presets_have_exact_parameter_counts(name, expected):
    assert model.count_params(PRESETS[name]) == expected


@pytest.mark.parametrize("name, hidden", [("llama_7b", 11008), ("llama_13b", 13824), ("llama_33b", 17920), ("llama_65b", 22016)])
def test_swiglu_hidden_sizes_match_the_reference(name, hidden):
    assert PRESETS[name].hidden_dim == hidden


def test_llama3_8b_hidden_size_and_kv_heads():
    config = PRESETS["llama3_8b"]
    assert config.hidden_dim == 14336 and config.kv_heads == 8
    assert model.count_params(config) == 8_030_261_248


def test_parameter_names_follow_the_meta_reference(params):
    layer = params["layers"]
    assert set(params) == {"tok_embeddings", "layers", "norm", "output"}
    assert set(layer) == {"attention", "feed_forward", "attention_norm", "ffn_norm"}
    assert set(layer["attention"]) == {"wq", "wk", "wv", "wo"}
    assert set(layer["feed_forward"]) == {"w1", "w2", "w3"}
    # Stacked over layers by nn.scan, with the logical axis "layers" in front.
    assert layer["attention"]["wq"].names == ("layers", "embed", "heads", "head_dim")
    assert layer["attention"]["wq"].value.shape == (DEBUG.n_layers, DEBUG.dim, DEBUG.n_heads, DEBUG.head_dim)


def test_every_parameter_carries_logical_axis_names(params):
    boxed = jax.tree.leaves(params, is_leaf=lambda x: hasattr(x, "names"))
    assert boxed and all(len(b.names) == b.value.ndim for b in boxed)


def test_logits_are_float32_even_in_bfloat16(params):
    config = DEBUG.replace(dtype="bfloat16")
    logits = model.LLaMA(config).apply({"params": params}, jnp.ones((2, 8), jnp.int32))
    assert logits.dtype == jnp.float32 and logits.shape == (2, 8, DEBUG.vocab_size)


def test_causality_later_tokens_never_change_earlier_logits(params, apply):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, DEBUG.vocab_size, (2, 16))
    changed = tokens.copy()
    changed[:, 10:] = rng.integers(0, DEBUG.vocab_size, (2, 6))
    a, b = apply(params, tokens), apply(params, changed)
    np.testing.assert_allclose(a[:, :10], b[:, :10], atol=1e-6)
    assert not np.allclose(a[:, 10:], b[:, 10:])


def test_rope_scores_depend_only_on_relative_position():
    rng = np.random.default_rng(1)
    q = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)

    def score(pq, pk):
        rq = model.apply_rope(q, jnp.array([[pq]]), 10000.0, 64)
        rk = model.apply_rope(k, jnp.array([[pk]]), 10000.0, 64)
        return float(jnp.sum(rq * rk))

    assert score(3, 1) == pytest.approx(score(40, 38), abs=1e-5)
    assert score(7, 7) == pytest.approx(float(jnp.sum(q * k)), abs=1e-5)
    assert score(5, 1) != pytest.approx(score(5, 2), abs=1e-3)


def test_rope_rotates_adjacent_pairs_as_complex_numbers():
    x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 1, 1, 8)), jnp.float32)
    out = model.apply_rope(x, jnp.array([[5]]), 10000.0, 64)
    freqs = 1.0 / 10000.0 ** (np.arange(0, 8, 2) / 8)
    expected = (np.asarray(x[0, 0, 0, 0::2]) + 1j * np.asarray(x[0, 0, 0, 1::2])) * np.exp(1j * 5 * freqs)
    np.testing.assert_allclose(out[0, 0, 0, 0::2], expected.real, atol=1e-5)
    np.testing.assert_allclose(out[0, 0, 0, 1::2], expected.imag, atol=1e-5)


def test_rmsnorm_matches_its_definition():
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 3, 64)), jnp.float32)
    norm = model.RMSNorm(DEBUG)
    variables = norm.init(jax.random.key(0), x)
    out = norm.apply(variables, x)
    expected = x / np.sqrt(np.mean(np.square(x), axis=-1, keepdims=True) + DEBUG.norm_eps)
    np.testing.assert_allclose(out, expected, rtol=1e-5)


@pytest.mark.parametrize("scan, remat", [(False, "none"), (True, "full"), (False, "save_linear"), (True, "save_linear")])
def test_scan_and_remat_change_nothing(params, apply, scan, remat):
    tokens = jnp.asarray(np.random.default_rng(4).integers(0, DEBUG.vocab_size, (2, 12)))
    plain = nn.meta.unbox(params)
    config = DEBUG.replace(scan_layers=scan, remat_policy=remat)
    layout = (lambda p: p) if scan else (lambda p: unstack_layers(p, DEBUG.n_layers))

    def loss(config, p):
        return jnp.mean(model.LLaMA(config).apply({"params": p}, tokens) ** 2)

    np.testing.assert_allclose(apply(params, tokens), model.LLaMA(config).apply({"params": layout(plain)}, tokens), atol=1e-5)
    reference_grads = layout(jax.grad(lambda p: loss(DEBUG, p))(plain))
    grads = jax.grad(lambda p: loss(config, p))(layout(plain))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4), reference_grads, grads)


def test_grouped_query_attention_equals_repeated_kv_heads():
    rng = np.random.default_rng(5)
    q = jnp.asarray(rng.normal(size=(2, 6, 4, 8)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(2, 6, 2, 8)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(2, 6, 2, 8)), jnp.float32)
    grouped = attention.xla_attention(q, k, v)
    repeated = attention.xla_attention(q, jnp.repeat(k, 2, axis=2), jnp.repeat(v, 2, axis=2))
    np.testing.assert_allclose(grouped, repeated, atol=1e-6)


def test_segment_ids_keep_attention_inside_each_document(params):
    rng = np.random.default_rng(6)
    doc_a, doc_b = rng.integers(0, DEBUG.vocab_size, 5), rng.integers(0, DEBUG.vocab_size, 7)
    packed = jnp.asarray(np.concatenate([doc_a, doc_b]))[None]
    segments = jnp.asarray([[1] * 5 + [2] * 7])
    positions = jnp.asarray([list(range(5)) + list(range(7))])
    net = model.LLaMA(DEBUG)
    together = net.apply({"params": params}, packed, positions, segments)
    alone = net.apply({"params": params}, jnp.asarray(doc_b)[None])
    np.testing.assert_allclose(together[:, 5:], alone, atol=1e-5)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(dim=100, n_heads=6), "n_heads=6 does not divide dim=100"),
        (dict(dim=36, n_heads=4), "head_dim=9"),
        (dict(n_heads=8, n_kv_heads=3), "n_kv_heads=3"),
        (dict(remat_policy="some"), "remat_policy='some'"),
        (dict(attention_impl="flash"), "attention_impl='flash'"),
    ],
)
def test_bad_model_configs_are_named(fields, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**fields)


def test_unknown_config_field_is_named():
    with pytest.raises(ValueError, match="unknown model config fields \\['dimension'\\]"):
        ModelConfig.from_dict({"dimension": 4096})


def test_token_ids_outside_the_vocabulary_are_rejected(params):
    with pytest.raises(ValueError, match="token ids must lie in \\[0, 256\\)"):
        model.LLaMA(DEBUG).apply({"params": params}, jnp.array([[1, 256]]))
