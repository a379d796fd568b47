"""`python -m llama_jax.info`: the command of llama_jax.perf.info."""

from llama_jax.perf import info

__doc__ = info.__doc__  # absl's --help prints the __main__ module's docstring: the command's usage

if __name__ == "__main__":
    info.run()
