"""`python -m llama_jax.train --config=... --workdir=...`: the training loop's command (llama_jax.train.loop)."""

from llama_jax import cli
from llama_jax.train import loop

__doc__ = loop.__doc__  # absl's --help prints the __main__ module's docstring: the command's usage

loop.define_flags()
cli.run_absl(loop.main)
