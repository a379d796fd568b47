"""`python -m llama_jax.lm_eval`: lm-evaluation-harness with this model registered (llama_jax.evaluation.harness)."""

from llama_jax import cli
from llama_jax.evaluation import harness

if __name__ == "__main__":
    cli.run(harness.main)
