"""`python -m llama_jax.convert --from=meta|hf --to=hf|meta|orbax IN OUT`: llama_jax.convert.formats's command."""

from llama_jax import cli
from llama_jax.convert import formats

cli.run(formats.main)
