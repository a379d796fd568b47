"""One loader for every checkpoint a person may point generation or evaluation at.

    loaded = weights.load(PATH)            # Loaded(config, params, tokenizer, kind)
    LLaMA(loaded.config).apply({"params": loaded.params}, tokens)

PATH is, told apart by its files:
  workdir  a training workdir (WORKDIR/checkpoints/<step>/): the latest step's parameters only (no optimizer
           state), the model from the config saved with it; the tokenizer is the run's `data.tokenizer`
           (the corpus's own when "", as `llama_jax.corpus_spec.tokenizer_path` resolves it; none for a
           synthetic-token run)
  orbax    `model_config.json` + `params/` (`python -m llama_jax.convert --to=orbax`)
  meta     `params.json` + `consolidated.NN.pth` (Meta's release layout)
  hf       `config.json` + safetensors (a transformers LlamaForCausalLM directory)
For the last three the tokenizer is the one beside the weights: a Hugging Face tokenizer directory (its
tokenizer.json or tokenizer_config.json), else `tokenizer.model` (for Meta also in the parent directory, as
Meta ships it). Params are host numpy arrays in the layout of `config.scan_layers`. No TensorFlow is imported.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np

from llama_jax.config import DTYPES, ModelConfig
from llama_jax.convert import formats as convert
from llama_jax.convert import layout as convert_layout
from llama_jax.inference import tokenizer as tokenizer_lib
from llama_jax.model.llama import param_shapes

# What makes a directory each kind of checkpoint, in the order they are tried.
MARKERS = (
    ("workdir", "checkpoints", "a training workdir"),
    ("orbax", convert.ORBAX_CONFIG, "orbax params (python -m llama_jax.convert --to=orbax)"),
    ("meta", "params.json", "a Meta checkpoint, with consolidated.NN.pth"),
    ("hf", "config.json", "a Hugging Face model, with safetensors"),
)


@dataclasses.dataclass
class Loaded:
    """A model ready to run: its config, params, the tokenizer path beside it (or None) and what PATH was."""

    config: ModelConfig
    params: Any
    tokenizer: str | None
    kind: str  # 'workdir' | 'orbax' | 'meta' | 'hf'
    run_config: dict | None = None  # a workdir's experiment config, as saved with its checkpoint (JSON values)


def kind_of(path: str) -> str:
    """Which kind of checkpoint directory `path` is (module docstring), or an error listing what was looked for."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist or is not a directory")
    for kind, marker, _ in MARKERS:
        if os.path.exists(os.path.join(path, marker)):
            return kind
    looked = "; ".join(f"{marker} ({what})" for _, marker, what in MARKERS)
    raise FileNotFoundError(f"{path} is not a checkpoint llama_jax reads: it holds none of {looked}")


def load(path: str, *, dtype: str | None = None, max_seq_len: int = 2048) -> Loaded:
    """The model at `path` with parameters in `dtype` (default: float32); `max_seq_len` is the context of a
    Meta checkpoint, whose params.json does not state it."""
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not one of {DTYPES}")
    kind, run_config = kind_of(path), None
    if kind == "workdir":
        config, params, tokenizer, run_config = _load_workdir(path)
    elif kind == "orbax":
        (config, params), tokenizer = convert.load_orbax(path), tokenizer_beside(path)
    elif kind == "meta":
        config, params = convert.load_meta(path, dtype=dtype or "float32", max_seq_len=max_seq_len)
        tokenizer = tokenizer_beside(path) or tokenizer_beside(os.path.dirname(os.path.abspath(path)))
    else:
        config, params = convert.load_hf(path, dtype=dtype or "float32")
        tokenizer = tokenizer_beside(path)
    if dtype is not None and config.param_dtype != dtype:
        params = jax.tree.map(lambda x: np.asarray(x).astype(jax.numpy.dtype(dtype)), params)
        config = config.replace(param_dtype=dtype)
    return Loaded(config, params, tokenizer, kind, run_config)


def tokenizer_beside(directory: str) -> str | None:
    """The tokenizer in `directory`: the directory itself when it is a Hugging Face tokenizer, else its
    tokenizer.model, else None."""
    if any(os.path.isfile(os.path.join(directory, f)) for f in tokenizer_lib.HF_TOKENIZER_FILES):
        return directory
    model = os.path.join(directory, "tokenizer.model")
    return model if os.path.isfile(model) else None


def _load_workdir(path: str) -> tuple[ModelConfig, Any, str | None, dict]:
    """(config, params, tokenizer, saved experiment config) of the latest checkpoint of a training workdir, restoring the params alone."""
    import orbax.checkpoint as ocp
    from etils import epath

    from llama_jax import corpus_spec  # TensorFlow-free: where the run's tokenizer lives

    directory = epath.Path(path).absolute() / "checkpoints"
    # create=False and no save: nothing is written, so the workdir of a run still training is safe to read
    manager = ocp.CheckpointManager(directory, item_names=("state", "config"),
                                    options=ocp.CheckpointManagerOptions(create=False))
    step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"{directory} holds no complete checkpoint yet; train until the first save "
                                "(checkpoint.every_steps) or point at another checkpoint")
    saved = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    config = ModelConfig.from_dict(saved["model"])
    target = {"params": param_shapes(config)}
    restore_args = jax.tree.map(lambda s: ocp.RestoreArgs(restore_type=np.ndarray, dtype=s.dtype), target)
    try:
        state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item=target, partial_restore=True, restore_args=restore_args)))["state"]
        params = jax.tree.map(np.asarray, state["params"])
        convert_layout.check_params(config, params)
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{directory / str(step)} does not match the model config saved with it: {error}") from error
    data = saved.get("data", {})
    tokenizer = None if data.get("source") == "synthetic" else corpus_spec.tokenizer_path(data)
    return config, params, tokenizer, saved
