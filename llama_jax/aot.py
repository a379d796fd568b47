"""`python -m llama_jax.aot`: the command of llama_jax.perf.aot."""

from llama_jax.perf import aot

__doc__ = aot.__doc__  # absl's --help prints the __main__ module's docstring: the command's usage

if __name__ == "__main__":
    aot.run()
