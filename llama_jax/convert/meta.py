"""Meta reference checkpoints: `params.json` plus one `consolidated.NN.pth` per model-parallel rank.

The reference (facebookresearch/llama) splits each Linear over ranks with fairscale: ColumnParallelLinear
(wq, wk, wv, w1, w3, output) splits output rows (dim 0), RowParallelLinear (wo, w2) input columns (dim 1),
ParallelEmbedding the embedding columns (dim 1; Llama 3's VocabParallelEmbedding splits rows, told apart by
shape); norms are replicated. The LLaMA-1 files also hold `rope.freqs` buffers, which are not parameters.
torch is imported only inside these functions, and only with `weights_only=True`: a pickle that names anything
but tensors is refused before any of it runs.
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Any

import numpy as np

from llama_jax.config import ModelConfig
from llama_jax.convert import layout

# params.json fields of LLaMA-1 (dim ... vocab_size) and of Llama 2/3 (n_kv_heads, ffn_dim_multiplier, rope_theta).
PARAMS_FIELDS = (
    "dim", "multiple_of", "n_heads", "n_layers", "norm_eps", "vocab_size", "n_kv_heads", "ffn_dim_multiplier",
    "rope_theta",
)
# The reference's ModelArgs has defaults for these, which differ between releases: a file must state them.
REQUIRED_FIELDS = ("dim", "n_layers", "n_heads", "multiple_of", "norm_eps")
SHARD_AXIS = {
    "tok_embeddings.weight": 1,
    "output.weight": 0,
    "attention.wq.weight": 0,
    "attention.wk.weight": 0,
    "attention.wv.weight": 0,
    "attention.wo.weight": 1,
    "feed_forward.w1.weight": 0,
    "feed_forward.w2.weight": 1,
    "feed_forward.w3.weight": 0,
}  # absent: replicated on every rank (the norms)
TORCH_DTYPES = ("float32", "bfloat16", "float16")


def config_from_params_json(fields: dict[str, Any], vocab_size: int | None = None, where: str = "params.json",
                            ) -> ModelConfig:
    """ModelConfig for a params.json dict. Its vocab_size may be -1 or absent ("ask the tokenizer", LLaMA-1 and 2):
    then `vocab_size` (load_meta: the embedding's rows) gives it."""
    unknown = sorted(set(fields) - set(PARAMS_FIELDS))
    if unknown:
        raise ValueError(f"{where} has field(s) {unknown} that this converter does not know; known: {PARAMS_FIELDS}")
    layout.require_fields(fields, REQUIRED_FIELDS, where)
    fields = {k: v for k, v in fields.items() if v is not None}
    if fields.get("vocab_size", -1) == -1:
        if vocab_size is None:
            raise ValueError(f"{where} has vocab_size -1 (the tokenizer's): give the vocabulary size")
        fields["vocab_size"] = vocab_size
    return ModelConfig(**fields)


def params_json(config: ModelConfig) -> dict[str, Any]:
    """The params.json dict the reference builds `ModelArgs` from; an exact hidden size is expressed through
    `multiple_of` (and `ffn_dim_multiplier` when it is below 8d/3), since params.json has no field for it."""
    fields: dict[str, Any] = {
        "dim": config.dim, "multiple_of": config.multiple_of, "n_heads": config.n_heads,
        "n_layers": config.n_layers, "norm_eps": config.norm_eps, "vocab_size": config.vocab_size,
    }
    if config.n_kv_heads is not None:
        fields["n_kv_heads"] = config.n_kv_heads
    if config.ffn_dim_multiplier is not None:
        fields["ffn_dim_multiplier"] = config.ffn_dim_multiplier
    if config.rope_theta != 10000.0:
        fields["rope_theta"] = config.rope_theta
    if config.hidden_dim != config.replace(hidden_dim_override=None).hidden_dim:
        hidden, base = config.hidden_dim, int(2 * 4 * config.dim / 3)
        # multiple_of * ceil(h / multiple_of) with multiple_of = hidden is `hidden` for any 0 < h <= hidden.
        fields["multiple_of"] = hidden
        fields.pop("ffn_dim_multiplier", None)
        if base > hidden:
            fields["ffn_dim_multiplier"] = hidden / base
    return fields


def load_meta(path: str, *, dtype: str = "float32", scan_layers: bool = True, max_seq_len: int = 2048):
    """(ModelConfig, params) from a Meta checkpoint directory; params are host arrays of `dtype`, stacked for
    `nn.scan` when `scan_layers`. params.json does not state the context length: pass `max_seq_len`."""
    params_file = os.path.join(path, "params.json")
    shard_files = sorted(glob.glob(os.path.join(path, "consolidated.*.pth")))
    if not os.path.isfile(params_file) or not shard_files:
        raise FileNotFoundError(f"{path} is not a Meta checkpoint: it needs params.json and consolidated.NN.pth files")
    fields = layout.read_json(params_file)
    layout.require_fields(fields, REQUIRED_FIELDS, params_file)  # before reading gigabytes
    shards = [_load_shard(file) for file in shard_files]
    vocab_size = None
    if fields.get("vocab_size", -1) == -1:  # the reference asks the tokenizer; the embedding's rows are the truth
        vocab_size = _embedding_rows(shards, shard_files, fields["dim"])
        _check_tokenizer(vocab_size, (path, os.path.dirname(os.path.abspath(path))))
    config = config_from_params_json(fields, vocab_size, params_file)
    config = config.replace(scan_layers=scan_layers, max_seq_len=max_seq_len, param_dtype=dtype)
    for file, state in zip(shard_files, shards, strict=True):
        layout.check_names(_parameter_names(state), layout.meta_names(config), file)

    def merged_tensors():
        for name in layout.meta_names(config):
            parts = [state.pop(name) for state in shards]  # drop each shard's reference as soon as it is read
            yield name, _to_numpy(_merge(config, name, parts, shard_files))

    return config, layout.build_params(config, merged_tensors(), dtype, path)


def save_meta(config: ModelConfig, params: Any, path: str, *, shards: int = 1, dtype: str = "bfloat16") -> None:
    """Write params.json and `shards` consolidated.NN.pth files (split as the reference's model parallelism)."""
    import torch

    if dtype not in TORCH_DTYPES:
        raise ValueError(f"dtype={dtype!r} is not one of {TORCH_DTYPES}")
    _check_divisible(config, shards)
    layout.check_params(config, layout.unboxed(params))
    layout.new_output_dir(path)
    with open(os.path.join(path, "params.json"), "w") as f:
        json.dump(params_json(config), f, indent=2)
    for rank in range(shards):  # one rank at a time: at most 1/shards of the weights is held as torch tensors
        state = {}
        for name, tensor in layout.iter_meta_tensors(config, params):
            axis = SHARD_AXIS.get(layout.split_layer(name)[1])
            part = tensor if axis is None else np.split(tensor, shards, axis=axis)[rank]
            state[name] = torch.tensor(np.asarray(part, dtype=np.float32)).to(getattr(torch, dtype))
        torch.save(state, os.path.join(path, f"consolidated.{rank:02d}.pth"))


def _parameter_names(state: dict) -> list[str]:
    """Names of the parameters in a shard: everything but the `rope.freqs` buffers."""
    return [name for name in state if not name.endswith("rope.freqs")]


def _load_shard(file: str) -> dict:
    """One consolidated.NN.pth, memory-mapped (tensors stay on disk until a merge reads them, so only the converted
    copy lives in memory); a file that holds anything but tensors, or that is cut short, is an error naming it."""
    import pickle

    import torch

    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:  # weights_only refused a global before calling anything
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        culprit = f" ({found.group(1)})" if found else ""
        raise ValueError(
            f"{file} asks to run code{culprit} while loading: refused, nothing of it ran. A Meta checkpoint holds "
            "only tensors; get the file from its source again"
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(
            f"{file} is not a readable PyTorch checkpoint ({str(e).splitlines()[0]}); it may be truncated or "
            "corrupted: copy it again from its source"
        ) from e


def _embedding_rows(shards: list[dict], files: list[str], dim: int) -> int:
    """The vocabulary size the tok_embeddings.weight shards hold, whichever dimension they split."""
    name = "tok_embeddings.weight"
    missing = [file for file, state in zip(files, shards, strict=True) if name not in state]
    if missing:
        raise ValueError(f"{missing[0]}: missing tensor(s) {name}")
    elements = sum(state[name].numel() for state in shards)
    if elements % dim:
        shapes = [tuple(state[name].shape) for state in shards]
        raise ValueError(f"{name} in {files} has shapes {shapes}, which do not hold rows of dim={dim}")
    return elements // dim


def _check_tokenizer(vocab_size: int, dirs: tuple[str, ...]) -> None:
    """Raise when the first `tokenizer.model` found in `dirs` has another vocabulary than the embedding."""
    for directory in dirs:
        file = os.path.join(directory, "tokenizer.model")
        if os.path.isfile(file):
            import sentencepiece

            try:
                pieces = sentencepiece.SentencePieceProcessor(model_file=file).vocab_size()
            except (RuntimeError, OSError) as e:
                raise ValueError(f"{file} is not a SentencePiece model ({e}); the checkpoint's vocab_size -1 "
                                 "refers to it") from e
            if pieces != vocab_size:
                raise ValueError(f"{file} has {pieces} pieces but the checkpoint's tok_embeddings.weight has "
                                 f"{vocab_size} rows: the tokenizer belongs to another model")
            return


def _merge(config: ModelConfig, name: str, parts: list, files: list[str]):
    """One tensor from its model-parallel parts (torch tensors) read from `files`."""
    import torch

    kind = layout.split_layer(name)[1]
    axis = SHARD_AXIS.get(kind)
    shapes = [tuple(p.shape) for p in parts]
    if axis is None or len(parts) == 1:
        if len(set(shapes)) > 1:
            raise ValueError(f"tensor {name} is replicated but has shapes {shapes} in {files}: the shards are of "
                             "different models")
        return parts[0]
    if kind == "tok_embeddings.weight" and parts[0].shape[0] * len(parts) == config.vocab_size:
        axis = 0  # Llama 3: VocabParallelEmbedding splits the vocabulary
    try:
        return torch.cat(parts, dim=axis)
    except RuntimeError as e:
        raise ValueError(f"tensor {name}: shard shapes {shapes} in {files} do not concatenate along dim {axis}; "
                         "the shards are of different models or one is damaged") from e


def _to_numpy(tensor) -> np.ndarray:
    """A torch tensor as numpy (bfloat16, which numpy lacks, through float32)."""
    import torch

    if tensor.dtype == torch.bfloat16:
        tensor = tensor.to(torch.float32)
    return tensor.numpy()


def _check_divisible(config: ModelConfig, shards: int) -> None:
    sizes = {"n_heads": config.n_heads, "kv_heads": config.kv_heads, "hidden_dim": config.hidden_dim,
             "vocab_size": config.vocab_size, "dim": config.dim}
    bad = {k: v for k, v in sizes.items() if shards <= 0 or v % shards}
    if bad:
        raise ValueError(f"shards={shards} must be positive and divide {bad} to split as the reference does")

