"""Training: the loop (loop.py, `python -m llama_jax.train`), the jitted step with its state and shardings
(step.py), the AdamW optimizer and schedule (optim.py), checkpoints (checkpoint.py), metrics (metrics.py) and
the synthetic token stream (synthetic.py)."""
