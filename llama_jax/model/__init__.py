"""The LLaMA model: the network (llama.py), its attention kernels (attention.py dispatches to XLA, cuDNN or the
TPU splash kernel in tpu_attention.py) and the next-token losses (loss.py). Logical axis names only; no mesh."""
