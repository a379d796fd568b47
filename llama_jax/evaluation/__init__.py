"""Evaluation: log-likelihood scoring (scoring.py), a loaded model as evaluators call it (loaded_model.py), the
evaluators chosen by name (evaluators/), the `python -m llama_jax.evaluate` command (evaluate.py) and the
lm-evaluation-harness backend (harness.py, `python -m llama_jax.lm_eval`)."""
