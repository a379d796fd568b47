"""Weights in and out: Meta and Hugging Face checkpoints, an orbax copy of the params, and the command

    python -m llama_jax.convert --from=meta|hf --to=hf|meta|orbax IN OUT [--dtype=bfloat16] [--shards=N]

Every function returns or takes `(config, params)`: a ModelConfig and the plain parameter tree that
`LLaMA(config).apply({"params": params}, tokens)` takes (stacked `layers` when config.scan_layers, else
`layers_{i}`; boxed trees are accepted). Loaded params are host numpy arrays.

The orbax layout (`--to=orbax`) is the params alone, for initialising or evaluating a model:
    OUT/model_config.json   ModelConfig.to_dict()
    OUT/params/             orbax StandardCheckpointer directory of the unboxed param tree
It is not a training checkpoint (no optimizer state or step); `load_orbax` reads it back.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from llama_jax import cli
from llama_jax.config import ModelConfig
from llama_jax.convert import layout
from llama_jax.convert.hf import config_from_hf, load_hf, save_hf
from llama_jax.convert.layout import stack_layers, unstack_layers
from llama_jax.convert.meta import config_from_params_json, load_meta, save_meta

__all__ = ["load_meta", "save_meta", "load_hf", "save_hf", "load_orbax", "save_orbax", "config_from_hf",
           "config_from_params_json", "stack_layers", "unstack_layers", "convert", "main"]

ORBAX_CONFIG = "model_config.json"
ORBAX_PARAMS = "params"
FORMATS_IN = ("meta", "hf")
FORMATS_OUT = ("hf", "meta", "orbax")


def save_orbax(config: ModelConfig, params: Any, path: str) -> None:
    """Write `params` with orbax's StandardCheckpointer and the config as JSON (layout in the module doc)."""
    import orbax.checkpoint as ocp

    params = layout.unboxed(params)
    layout.check_params(config, params)
    layout.new_output_dir(path)
    with open(os.path.join(path, ORBAX_CONFIG), "w") as f:
        json.dump(config.to_dict(), f, indent=2)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(os.path.abspath(path), ORBAX_PARAMS), params)
    checkpointer.wait_until_finished()


def load_orbax(path: str, target: Any = None) -> tuple[ModelConfig, Any]:
    """(config, params) written by `save_orbax`; params are numpy arrays, or laid out as `target` (a tree of
    jax.ShapeDtypeStruct with shardings) when given, to restore straight onto a mesh."""
    import orbax.checkpoint as ocp

    config_file = os.path.join(path, ORBAX_CONFIG)
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"{path} is not a converted orbax checkpoint: {config_file} is missing")
    with open(config_file) as f:
        config = ModelConfig.from_dict(json.load(f))
    params = ocp.StandardCheckpointer().restore(os.path.join(os.path.abspath(path), ORBAX_PARAMS), target)
    layout.check_params(config, params)
    return config, params


def convert(source: str, target: str, src: str, dst: str, *, dtype: str | None = None, shards: int = 1,
            max_seq_len: int = 2048) -> ModelConfig:
    """Convert checkpoint `src` (format `source`) into a new directory `dst` (format `target`).

    `dtype` defaults to bfloat16 for hf/meta and float32 for orbax; `shards` is the number of Meta files;
    `max_seq_len` is the context length of a Meta source (params.json does not state it)."""
    if source not in FORMATS_IN or target not in FORMATS_OUT:
        raise ValueError(f"convert from {FORMATS_IN} to {FORMATS_OUT}; got --from={source} --to={target}")
    dtype = dtype or ("float32" if target == "orbax" else "bfloat16")
    layout.check_output_dir(dst)  # fail before reading gigabytes
    if source == "meta":
        config, params = load_meta(src, dtype=dtype, max_seq_len=max_seq_len)
    else:
        config, params = load_hf(src, dtype=dtype)
    if target == "hf":
        save_hf(config, params, dst, dtype=dtype)
    elif target == "meta":
        save_meta(config, params, dst, shards=shards, dtype=dtype)
    else:
        save_orbax(config, params, dst)
    return config


def main(argv: list[str] | None = None) -> None:
    """The command line; `argv` without the program name (default: sys.argv[1:])."""
    parser = argparse.ArgumentParser(prog="python -m llama_jax.convert", description="Convert LLaMA weights between the Meta, Hugging Face and orbax formats.")
    parser.add_argument("--from", dest="source", choices=FORMATS_IN, required=True)
    parser.add_argument("--to", dest="target", choices=FORMATS_OUT, required=True)
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                        help="dtype of the written weights (default: bfloat16; float32 for orbax)")
    parser.add_argument("--shards", type=int, default=1, help="number of consolidated.NN.pth files (--to=meta)")
    parser.add_argument("--max_seq_len", type=int, default=2048, help="context length of a Meta source")
    parser.add_argument("input", help="checkpoint directory to read")
    parser.add_argument("output", help="new directory to write (must not exist or be empty)")
    args = parser.parse_args(argv)
    config = convert(args.source, args.target, args.input, args.output, dtype=args.dtype, shards=args.shards,
                     max_seq_len=args.max_seq_len)
    print(f"wrote {args.output} ({args.target}): dim={config.dim} n_layers={config.n_layers} "
          f"n_heads={config.n_heads} kv_heads={config.kv_heads} hidden={config.hidden_dim} vocab={config.vocab_size}")


if __name__ == "__main__":
    cli.run(main)
