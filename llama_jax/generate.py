"""`python -m llama_jax.generate`: the command of llama_jax.inference.generate."""

from llama_jax import cli
from llama_jax.inference import generate

if __name__ == "__main__":
    cli.run(generate.main)
