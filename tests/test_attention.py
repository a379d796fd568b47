"""Every attention implementation computes the XLA reference's causal, document-masked, grouped-query attention."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import topologies
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from llama_jax.model import attention, tpu_attention

BATCH, LENGTH, HEADS, KV_HEADS, HEAD_DIM = 2, 256, 4, 2, 64
RULES = (("batch", ("data", "fsdp")), ("heads", "tensor"), ("kv_heads", "tensor"))


@pytest.fixture(scope="module")
def qkv():
    kq, kk, kv = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(kq, (BATCH, LENGTH, HEADS, HEAD_DIM))
    k = jax.random.normal(kk, (BATCH, LENGTH, KV_HEADS, HEAD_DIM))
    v = jax.random.normal(kv, (BATCH, LENGTH, KV_HEADS, HEAD_DIM))
    # Row 0: three packed documents then padding (segment 0); row 1: one document.
    segments = np.ones((BATCH, LENGTH), np.int32)
    segments[0, 90:200] = 2
    segments[0, 200:240] = 3
    segments[0, 240:] = 0
    return q, k, v, jnp.asarray(segments)


def _value_and_grads(fn, q, k, v, segments):
    """Output and the gradients of sum(out * w) w.r.t. q, k, v (a fixed random cotangent)."""
    w = jax.random.normal(jax.random.key(1), q.shape)
    out = fn(q, k, v, segments)
    grads = jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v, segments) * w), argnums=(0, 1, 2))(q, k, v)
    return out, grads


@pytest.fixture(scope="module")
def reference(qkv):
    return _value_and_grads(attention.xla_attention, *qkv)


def _assert_close(result, reference, atol):
    out, grads = result
    ref_out, ref_grads = reference
    np.testing.assert_allclose(out, ref_out, atol=atol)
    for name, grad, ref_grad in zip("qkv", grads, ref_grads, strict=True):
        np.testing.assert_allclose(grad, ref_grad, atol=atol, err_msg=f"d{name}")


def test_xla_attention_is_causal_and_stays_inside_documents(qkv):
    q, k, v, segments = qkv
    out = attention.xla_attention(q, k, v, segments)
    # Changing the future, or another document, leaves a position's output unchanged.
    k2 = k.at[:, 150:].set(0.0)
    v2 = v.at[:, 150:].add(1.0)
    out2 = attention.xla_attention(q, k2, v2, segments)
    np.testing.assert_allclose(out2[:, :150], out[:, :150], atol=1e-6)
    k3 = k.at[0, :90].set(0.0)
    v3 = v.at[0, :90].add(1.0)
    np.testing.assert_allclose(attention.xla_attention(q, k3, v3, segments)[0, 90:240], out[0, 90:240], atol=1e-6)


def test_jax_nn_xla_attention_matches_reference(qkv, reference):
    """jax.nn.dot_product_attention (the cuDNN entry point, here with its XLA backend) agrees with ours."""

    def jax_nn(q, k, v, segments):
        same = segments[:, None, :, None] == segments[:, None, None, :]
        return jax.nn.dot_product_attention(q, k, v, mask=same, is_causal=True, implementation="xla")

    _assert_close(_value_and_grads(jax_nn, *qkv), reference, atol=1e-5)


def test_splash_kernel_matches_reference(qkv, reference):
    """The Pallas splash kernel, run by the Pallas interpreter on CPU, gives the reference outputs and gradients."""
    splash = jax.jit(lambda q, k, v, s: tpu_attention.splash(q, k, v, s, interpret=True))
    _assert_close(_value_and_grads(splash, *qkv), reference, atol=1e-4)


def test_splash_under_a_mesh_matches_reference(qkv, reference):
    """Under a (data 1, fsdp 2, tensor 2) mesh the kernel runs per shard in shard_map and gives the same numbers."""
    mesh = Mesh(np.array(jax.devices()[:4]).reshape(1, 2, 2), ("data", "fsdp", "tensor"))
    splash = jax.jit(lambda q, k, v, s: tpu_attention.splash(q, k, v, s, interpret=True))
    with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
        sharded = _value_and_grads(splash, *qkv)
    _assert_close(sharded, reference, atol=1e-4)


@pytest.mark.filterwarnings("ignore:Error reading persistent compilation cache entry")  # see tests/test_aot.py
def test_splash_compiles_for_a_tpu_slice():
    """Forward and backward of the real (not interpreted) kernel lower to a Mosaic TPU call for a v5e 2x2 slice."""
    devices = topologies.get_topology_desc(platform="tpu", topology_name="v5e:2x2").devices
    mesh = Mesh(np.array(devices).reshape(1, 2, 2), ("data", "fsdp", "tensor"))
    spec = lambda *axes: NamedSharding(mesh, PartitionSpec(*axes))  # noqa: E731
    q = jax.ShapeDtypeStruct((4, 512, 4, 128), jnp.bfloat16, sharding=spec("fsdp", None, "tensor"))
    kv = jax.ShapeDtypeStruct((4, 512, 2, 128), jnp.bfloat16, sharding=spec("fsdp", None, "tensor"))
    segments = jax.ShapeDtypeStruct((4, 512), jnp.int32, sharding=spec("fsdp"))
    loss = lambda q, k, v, s: tpu_attention.splash(q, k, v, s).astype(jnp.float32).sum()  # noqa: E731
    with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
        compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, kv, kv, segments).compile()
    assert 'custom_call_target="tpu_custom_call"' in compiled.as_text()


@pytest.mark.parametrize("shapes,dtype,message", [
    (((2, 16, 4, 64), (2, 16, 4), (2, 16, 4)), None, "expected q \\[batch, length, heads, head_dim\\]"),
    (((2, 16, 4, 64), (2, 16, 3, 64), (2, 16, 3, 64)), None, "kv_heads must divide heads"),
    (((2, 16, 4, 64), (2, 8, 2, 64), (2, 8, 2, 64)), None, "share batch, length and head_dim"),
    (((2, 16, 4, 64), (2, 16, 2, 64), (2, 16, 2, 64)), jnp.float16, "must have one dtype"),
])
def test_cudnn_attention_names_arguments_that_do_not_fit(shapes, dtype, message):
    q, k, v = (jnp.zeros(shape, jnp.bfloat16) for shape in shapes)
    with pytest.raises(ValueError, match=message):
        attention.cudnn_attention(q, k, v.astype(dtype or v.dtype))
    with pytest.raises(ValueError, match=r"segment_ids \(2, 8\) is not \[batch, length\] = \(2, 16\)"):
        attention.cudnn_attention(*(jnp.zeros((2, 16, 2, 64), jnp.bfloat16) for _ in "qkv"), jnp.ones((2, 8)))


def test_cudnn_attention_falls_back_to_xla_where_cudnn_cannot_run(qkv):
    """On this CPU (and for float32 inputs, or head_dim above 128, on a GPU) the cuDNN path computes XLA's attention
    and says why; `auto` never picks it here."""
    q, k, v, segments = qkv
    with pytest.warns(UserWarning, match=r"attention_impl='cudnn' cannot run here \(the backend is cpu, not an "
                                         r"NVIDIA GPU\): using XLA attention"):
        out = attention.cudnn_attention(q, k, v, segments)
    np.testing.assert_array_equal(out, attention.xla_attention(q, k, v, segments))
    assert attention.resolve("auto", jnp.bfloat16) == "xla"


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN runs on NVIDIA GPUs (the accelerator suite)")
def test_cudnn_kernel_matches_reference_on_gpu(qkv, reference):
    """The fused kernel itself, in bfloat16 as it trains: outputs and gradients within bfloat16 rounding."""
    assert attention.cudnn_unavailable(qkv[0].astype(jnp.bfloat16)) is None

    def cudnn(q, k, v, segments):
        half = [x.astype(jnp.bfloat16) for x in (q, k, v)]
        return attention.cudnn_attention(*half, segments).astype(jnp.float32)

    _assert_close(_value_and_grads(jax.jit(cudnn), *qkv), reference, atol=5e-2)


def test_auto_resolves_to_xla_on_cpu():
    assert attention.resolve("auto", jnp.bfloat16) == "xla"
    assert attention.resolve("splash", jnp.float32) == "splash"


def test_splash_below_one_tile_is_the_xla_path(qkv):
    q, k, v, segments = (x[:, :16] for x in qkv)
    np.testing.assert_array_equal(tpu_attention.splash(q, k, v, segments), attention.xla_attention(q, k, v, segments))


def test_splash_rejects_lengths_it_cannot_tile():
    assert tpu_attention.block_size(2048) == 512
    assert tpu_attention.block_size(384) == 128
    with pytest.raises(ValueError, match="multiple of 128, got 100"):
        tpu_attention.block_size(100)
