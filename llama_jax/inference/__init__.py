"""Inference: KV-cached decoding with top-k/top-p sampling (sampling.py), the `python -m llama_jax.generate`
command (generate.py), loading weights for it (weights.py) and the SentencePiece tokenizer (tokenizer.py)."""
