"""llama_jax: LLaMA (Touvron et al., 2023) in JAX/Flax. Importing it keeps a CPU-only machine's JAX off libtpu."""

from llama_jax import platforms

platforms.default_to_cpu()
