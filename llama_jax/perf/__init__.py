"""Performance: FLOPs and peak rates (flops.py), a preset's size (info.py, `python -m llama_jax.info`), AOT
compilation and memory fit for a TPU topology (aot.py), the training-step benchmark (train_bench.py,
`python -m llama_jax.bench`) and the decode benchmark (decode_bench.py)."""
