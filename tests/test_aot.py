"""The real training step compiles for a TPU slice from this CPU machine, and the fit report adds up."""

import pytest

from llama_jax.perf import aot
from llama_jax.perf import train_bench as bench

# conftest's persistent compilation cache may hold this process's earlier TPU compiles, which a compile-only
# client cannot load back; XLA then compiles afresh, as the test wants anyway.
pytestmark = pytest.mark.filterwarnings("ignore:Error reading persistent compilation cache entry")


@pytest.fixture(scope="module")
def report():
    config = bench.preset_config("tiny", **{"train.global_batch_size": 8})
    return aot.compile_for_topology(config, "v5e:2x2", mfu=0.5)


def test_tiny_config_compiles_for_a_v5e_slice(report):
    assert report.chips == 4 and report.device_kind == "TPU v5 lite"
    assert report.mesh == {"data": 1, "fsdp": 4, "sequence": 1, "tensor": 1}
    assert report.attention == "splash"  # `auto` means the TPU kernel, though this host is a CPU
    assert report.hbm_bytes == 16 * aot.GIB


def test_memory_holds_the_sharded_weights_and_adam_moments_once(report):
    """Against a bound worked out by hand, not the report's own sums. The tiny preset (dim 256, 4 layers, SwiGLU
    704, vocab 8192) has 2 x 8192 x 256 + 4 x (4 x 256^2 + 3 x 256 x 704 + 2 x 256) + 256 = 7,407,872 parameters;
    as float32 weights and two float32 AdamW moments, sharded over the 4 chips (fsdp=4), they are
    12 x 7,407,872 / 4 = 22,223,616 bytes per chip. The arguments hold them once (TPU tiles pad small dimensions,
    so somewhat more; a replicated state would be four times as much), and the donated state is updated in place."""
    state_per_chip = 22_223_616
    assert state_per_chip <= report.argument_bytes < 1.5 * state_per_chip
    assert report.alias_bytes >= state_per_chip
    assert state_per_chip <= report.total_bytes <= report.hbm_bytes


def test_projection_follows_the_flops_formula(report):
    """By hand for the tiny preset (dim 256, 4 layers, 4 heads of 64, SwiGLU 704, vocab 8192) at 256 positions:
    per layer 4 x 256^2 + 3 x 256 x 704 = 802,816 matmul weights; 4 layers and the 256 x 8192 output: 5,308,416;
    6 x 5,308,416 + causal attention 6 x 4 layers x 256 x 4 x 64 = 31,850,496 + 1,572,864 = 33,423,360 FLOPs per
    token. 8 x 256 tokens over 4 chips: 512 x 33,423,360 = 17,112,760,320 FLOPs per chip per step; at half of
    v5e's 197 TFLOP/s that is 1.73734e-4 s, and 512 / 1.73734e-4 = 2,947,041 tokens/s per chip."""
    assert (report.global_batch, report.seq_len, report.chips) == (8, 256, 4)
    assert report.model_flops == 17_112_760_320
    assert report.step_s == pytest.approx(1.73734e-4, rel=1e-5)
    assert report.tokens_per_s_per_chip == pytest.approx(2_947_041, rel=1e-6)
    assert 0 < report.xla_flops < 2 * report.model_flops
    assert "fits" in aot.format_report(report)


def test_unknown_topology_is_a_clear_error():
    with pytest.raises(ValueError, match="GENERATION:AxB"):
        aot.topology_devices("v9x:2x2")


@pytest.mark.parametrize("topology,kind,chips", [("v4:2x2x1", "TPU v4", 4), ("v5p:2x2x1", "TPU v5", 4),
                                                 ("v5e:2x2", "TPU v5 lite", 4), ("v6e:2x2", "TPU v6 lite", 4)])
def test_each_generation_has_one_device_per_chip_and_a_known_peak(topology, kind, chips):
    from llama_jax.perf import flops

    devices = aot.topology_devices(topology)
    assert len(devices) == chips and devices[0].device_kind == kind  # v4 as megacore, as JAX runs it
    assert flops.peak_flops(kind) is not None
