"""The tiny preset on synthetic tokens: no corpus and no TensorFlow needed (accelerators, quick checks)."""

from experiments.configs import tiny


def get_config():
    c = tiny.get_config().unlock()
    c.data.source = "synthetic"
    c.lock()
    return c
