"""The model-FLOPs formula (llama_jax.perf.flops) against numbers worked out here by hand from Table 2's shapes, and
the MFU of the paper's 65B run (§2.4: 380 tokens/s per GPU on 2048 A100 80GB)."""

import pytest

from llama_jax.config import PRESETS
from llama_jax.perf import flops


def test_llama_7b_flops_per_token_by_hand():
    # Per layer: wq, wk, wv, wo 4 x 4096 x 4096 = 67,108,864; SwiGLU w1, w2, w3 3 x 4096 x 11008 = 135,266,304.
    # 32 layers: 32 x 202,375,168 = 6,476,005,376; the output projection 4096 x 32000 = 131,072,000 (the input
    # embedding is a lookup, and the norms are no matmuls).
    assert flops.matmul_params(PRESETS["llama_7b"]) == 6_607_077_376
    # 6 x 6,607,077,376 = 39,642,464,256; causal attention 6 x 32 layers x 2048 x 32 heads x 128 = 1,610,612,736.
    assert flops.train_flops_per_token(PRESETS["llama_7b"], 2048) == 41_253_076_992


def test_the_paper_65b_run_is_48_5_percent_mfu():
    # Per layer: 4 x 8192 x 8192 = 268,435,456 and 3 x 8192 x 22016 = 541,065,216; 80 layers: 64,760,053,760;
    # output 8192 x 32000 = 262,144,000. 6 x 65,022,197,760 = 390,133,186,560; attention 6 x 80 x 2048 x 64 x 128
    # = 8,053,063,680.
    per_token = flops.train_flops_per_token(PRESETS["llama_65b"], 2048)
    assert per_token == 398_186_250_240
    assert flops.peak_flops("NVIDIA A100-SXM4-80GB") == 312e12  # dense bf16, the datasheet's
    # 380 tokens/s x 398,186,250,240 FLOPs = 1.51311e14 FLOP/s of 3.12e14: 48.50%.
    assert 380 * per_token / flops.peak_flops("NVIDIA A100-SXM4-80GB") == pytest.approx(0.48497, abs=1e-5)
