"""`python -m llama_jax.bench`: the training-step (and decode) benchmark of llama_jax.perf.train_bench."""

from llama_jax.perf import train_bench

__doc__ = train_bench.__doc__  # absl's --help prints the __main__ module's docstring: the command's usage

if __name__ == "__main__":
    train_bench.run()
