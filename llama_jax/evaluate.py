"""`python -m llama_jax.evaluate`: the command of llama_jax.evaluation.evaluate."""

from llama_jax import cli
from llama_jax.evaluation import evaluate

if __name__ == "__main__":
    cli.run(evaluate.main)
