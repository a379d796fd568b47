"""Meta reference checkpoints: `params.json` plus one `consolidated.NN.pth` per model-parallel rank.

The reference (facebookresearch/llama) splits each Linear over ranks with fairscale: ColumnParallelLinear
(wq, wk, wv, w1, w3, output) splits output rows (dim 0), RowParallelLinear (wo, w2) input columns (dim 1),
ParallelEmbedding the embedding columns (dim 1; Llama 3's VocabParallelEmbedding splits rows, told apart by
shape); norms are replicated. The LLaMA-1 files also hold `rope.freqs` buffers, which are not parameters.
torch is imported only inside these functions, and only with `weights_only=True` (no pickled code runs).
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any

import numpy as np

from llama_jax import convert_layout as layout
from llama_jax.config import ModelConfig

# params.json fields of LLaMA-1 (dim ... vocab_size) and of Llama 2/3 (n_kv_heads, ffn_dim_multiplier, rope_theta).
PARAMS_FIELDS = (
    "dim", "multiple_of", "n_heads", "n_layers", "norm_eps", "vocab_size", "n_kv_heads", "ffn_dim_multiplier",
    "rope_theta",
)
DEFAULT_VOCAB_SIZE = 32000  # the LLaMA tokenizer's; the LLaMA-1 params.json says -1 ("ask the tokenizer")
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


def config_from_params_json(fields: dict[str, Any], tokenizer_dirs: tuple[str, ...] = ()) -> ModelConfig:
    """ModelConfig for a params.json dict; vocab_size -1 is read from a `tokenizer.model` in `tokenizer_dirs`."""
    unknown = sorted(set(fields) - set(PARAMS_FIELDS))
    if unknown:
        raise ValueError(f"params.json has field(s) {unknown} that this converter does not know; known: {PARAMS_FIELDS}")
    fields = {k: v for k, v in fields.items() if v is not None}
    if fields.get("vocab_size", -1) == -1:
        fields["vocab_size"] = _tokenizer_vocab_size(tokenizer_dirs)
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
    import torch

    params_file = os.path.join(path, "params.json")
    shard_files = sorted(glob.glob(os.path.join(path, "consolidated.*.pth")))
    if not os.path.isfile(params_file) or not shard_files:
        raise FileNotFoundError(f"{path} is not a Meta checkpoint: it needs params.json and consolidated.NN.pth files")
    with open(params_file) as f:
        fields = json.load(f)
    config = config_from_params_json(fields, (path, os.path.dirname(os.path.abspath(path))))
    config = config.replace(scan_layers=scan_layers, max_seq_len=max_seq_len, param_dtype=dtype)

    # mmap: tensors stay on disk until a merge reads them, so only the converted copy lives in memory.
    shards = [torch.load(f, map_location="cpu", weights_only=True, mmap=True) for f in shard_files]
    for file, state in zip(shard_files, shards, strict=True):
        layout.check_names(_parameter_names(state), layout.meta_names(config), file)

    def merged_tensors():
        for name in layout.meta_names(config):
            parts = [state.pop(name) for state in shards]  # drop each shard's reference as soon as it is read
            yield name, _to_numpy(_merge(config, name, parts))

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


def _merge(config: ModelConfig, name: str, parts: list):
    """One tensor from its model-parallel parts (torch tensors)."""
    import torch

    kind = layout.split_layer(name)[1]
    axis = SHARD_AXIS.get(kind)
    if axis is None or len(parts) == 1:
        return parts[0]
    if kind == "tok_embeddings.weight" and parts[0].shape[0] * len(parts) == config.vocab_size:
        axis = 0  # Llama 3: VocabParallelEmbedding splits the vocabulary
    try:
        return torch.cat(parts, dim=axis)
    except RuntimeError as e:
        shapes = [tuple(p.shape) for p in parts]
        raise ValueError(f"tensor {name}: shard shapes {shapes} do not concatenate along dim {axis}: {e}") from e


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


def _tokenizer_vocab_size(dirs: tuple[str, ...]) -> int:
    """Vocabulary of the first `tokenizer.model` found in `dirs`, else the LLaMA tokenizer's 32000."""
    for directory in dirs:
        file = os.path.join(directory, "tokenizer.model")
        if os.path.isfile(file):
            import sentencepiece

            return sentencepiece.SentencePieceProcessor(model_file=file).vocab_size()
    return DEFAULT_VOCAB_SIZE
