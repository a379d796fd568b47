"""Weights in and out: Meta (meta.py) and Hugging Face (hf.py) checkpoints, the orbax copy of the params and
`convert()` between them (formats.py, `python -m llama_jax.convert`), on the shared name/layout tables (layout.py)."""
