"""Random tiny transformers `LlamaForCausalLM` models, the independent reference the parity tests compare with."""

import torch
import transformers

VOCAB = 128
# name: (hidden_size, heads, kv_heads, intermediate_size, rope_theta, Meta multiple_of, Meta ffn_dim_multiplier)
# Meta sizes satisfy the reference formula: 32*ceil(170/32) = 192, 32*ceil(128/32) = 128, 32*ceil(221/32) = 224.
SHAPES = {
    "mha": (64, 4, 4, 192, 10000.0, 32, None),
    "odd_heads": (48, 3, 3, 128, 500000.0, 32, None),  # 3 heads of head_dim 16
    "gqa": (64, 4, 2, 224, 10000.0, 32, 1.3),  # grouped-query: 2 kv heads
}


def randomise(model, seed: int) -> None:
    """Weights of order one, and norms that differ from one another, so that a swapped name shows in the logits."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            p.copy_(1.0 + 0.2 * noise if "norm" in name else 0.2 * noise)


def tiny_llama(name: str, seed: int, max_position_embeddings: int = 64):
    """A 2-layer LlamaForCausalLM of shape SHAPES[name] with random order-one weights (eager attention, eval mode)."""
    dim, heads, kv_heads, hidden, theta, _, _ = SHAPES[name]
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=dim, intermediate_size=hidden, num_hidden_layers=2,
        num_attention_heads=heads, num_key_value_heads=kv_heads, rms_norm_eps=1e-6,
        max_position_embeddings=max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": theta}, attn_implementation="eager",
    )
    model = transformers.LlamaForCausalLM(config).eval()
    randomise(model, seed)
    return model
