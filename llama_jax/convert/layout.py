"""Our parameter tree seen as the Meta reference's state dict, one tensor at a time.

Every checkpoint format converts through the Meta state dict (paper-reference names such as
`layers.3.attention.wq.weight`, torch Linear layout (out, in), unsharded): our parameter names are Meta's, so the
only work here is the layout — `wq` (n_heads*head_dim, dim) is our [dim, heads, head_dim] — and stacking the
layers for `nn.scan`. Tensors travel one at a time and are written into preallocated arrays, so converting a
checkpoint needs about one copy of the weights in host memory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from llama_jax.config import ModelConfig

# Meta name -> path in our tree (per block for the layer tensors): linear weights are leaves, norms hold `weight`.
LAYER_TENSORS = {
    "attention.wq.weight": ("attention", "wq"),
    "attention.wk.weight": ("attention", "wk"),
    "attention.wv.weight": ("attention", "wv"),
    "attention.wo.weight": ("attention", "wo"),
    "feed_forward.w1.weight": ("feed_forward", "w1"),
    "feed_forward.w2.weight": ("feed_forward", "w2"),
    "feed_forward.w3.weight": ("feed_forward", "w3"),
    "attention_norm.weight": ("attention_norm", "weight"),
    "ffn_norm.weight": ("ffn_norm", "weight"),
}
GLOBAL_TENSORS = {
    "tok_embeddings.weight": ("tok_embeddings",),
    "norm.weight": ("norm", "weight"),
    "output.weight": ("output",),
}


def meta_names(config: ModelConfig) -> list[str]:
    """The Meta state-dict names of every parameter of `config`, in reference order."""
    layers = [f"layers.{i}.{name}" for i in range(config.n_layers) for name in LAYER_TENSORS]
    return ["tok_embeddings.weight", *layers, "norm.weight", "output.weight"]


def meta_shape(config: ModelConfig, name: str) -> tuple[int, ...]:
    """Torch shape (out, in) of the Meta tensor `name` for `config`."""
    d, q, kv, f = config.dim, config.n_heads * config.head_dim, config.kv_heads * config.head_dim, config.hidden_dim
    shapes = {
        "tok_embeddings.weight": (config.vocab_size, d),
        "norm.weight": (d,),
        "output.weight": (config.vocab_size, d),
        "attention.wq.weight": (q, d),
        "attention.wk.weight": (kv, d),
        "attention.wv.weight": (kv, d),
        "attention.wo.weight": (d, q),
        "feed_forward.w1.weight": (f, d),
        "feed_forward.w2.weight": (d, f),
        "feed_forward.w3.weight": (f, d),
        "attention_norm.weight": (d,),
        "ffn_norm.weight": (d,),
    }
    return shapes[split_layer(name)[1]]


def read_json(path: str) -> dict[str, Any]:
    """The JSON object in the config file `path`; a file that is not one is an error naming it."""
    try:
        with open(path) as f:
            fields = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); restore the file that came with the checkpoint") from e
    if not isinstance(fields, dict):
        raise ValueError(f"{path} holds a JSON {type(fields).__name__}, not an object of model fields")
    return fields


def require_fields(fields: Mapping[str, Any], required: Iterable[str], where: str) -> None:
    """Raise naming the fields of `required` that the config file `where` lacks (no default stands in for them)."""
    missing = [name for name in required if name not in fields]
    if missing:
        raise ValueError(f"{where} lacks the required field(s) {missing}; it states {sorted(fields)}")


def check_names(found: Iterable[str], expected: Iterable[str], where: str) -> None:
    """Raise naming the missing and the unexpected tensors when the two name sets differ."""
    found, expected = set(found), set(expected)
    missing, extra = sorted(expected - found), sorted(found - expected)
    if missing:
        raise ValueError(f"{where}: missing tensor(s) {_some(missing)}; the config expects {len(expected)} tensors")
    if extra:
        raise ValueError(f"{where}: unexpected tensor(s) {_some(extra)} that the config does not describe")


def check_shape(name: str, shape: tuple[int, ...], expected: tuple[int, ...], where: str) -> None:
    """Raise naming the tensor and both shapes when `shape` is not `expected`."""
    if tuple(shape) != tuple(expected):
        raise ValueError(f"{where}: tensor {name} has shape {tuple(shape)}, the config expects {tuple(expected)}")


def to_ours(config: ModelConfig, name: str, tensor: np.ndarray) -> np.ndarray:
    """A Meta tensor (out, in) in our layout: linear kernels transposed to (in, out), heads split out."""
    h, kv, hd, d = config.n_heads, config.kv_heads, config.head_dim, config.dim
    kind = split_layer(name)[1]
    if kind == "attention.wq.weight":
        return tensor.reshape(h, hd, d).transpose(2, 0, 1)  # [dim, heads, head_dim]
    if kind in ("attention.wk.weight", "attention.wv.weight"):
        return tensor.reshape(kv, hd, d).transpose(2, 0, 1)  # [dim, kv_heads, head_dim]
    if kind == "attention.wo.weight":
        return tensor.T.reshape(h, hd, d)  # [heads, head_dim, dim]
    if tensor.ndim == 2 and kind != "tok_embeddings.weight":
        return tensor.T  # w1, w3 [dim, hidden]; w2 [hidden, dim]; output [dim, vocab]
    return tensor


def to_meta(config: ModelConfig, name: str, array: np.ndarray) -> np.ndarray:
    """Our array for the Meta tensor `name` back in torch layout (out, in); the inverse of `to_ours`."""
    kind = split_layer(name)[1]
    if kind in ("attention.wq.weight", "attention.wk.weight", "attention.wv.weight"):
        return array.transpose(1, 2, 0).reshape(-1, config.dim)
    if kind == "attention.wo.weight":
        return array.reshape(-1, config.dim).T
    if array.ndim == 2 and kind != "tok_embeddings.weight":
        return array.T
    return array


def build_params(config: ModelConfig, tensors: Iterable[tuple[str, np.ndarray]], dtype: str, where: str) -> dict:
    """Our (unboxed) parameter tree from (Meta name, torch-layout tensor) pairs, one for each of `meta_names`,
    stacked when config.scan_layers. Each tensor is cast into a preallocated host array of `dtype`, then
    dropped: peak memory is one copy of the weights plus the tensors in transit."""
    np_dtype = jnp.dtype(dtype)
    params: dict[str, Any] = {}
    for name, tensor in tensors:
        check_shape(name, tensor.shape, meta_shape(config, name), where)
        layer, kind = split_layer(name)
        ours = to_ours(config, name, tensor)
        if layer is None:
            _set(params, GLOBAL_TENSORS[kind], np.asarray(ours, dtype=np_dtype))
        elif config.scan_layers:
            path = ("layers", *LAYER_TENSORS[kind])
            stacked = _get(params, path)
            if stacked is None:
                stacked = _set(params, path, np.empty((config.n_layers, *ours.shape), dtype=np_dtype))
            stacked[layer] = ours
        else:
            _set(params, (f"layers_{layer}", *LAYER_TENSORS[kind]), np.asarray(ours, dtype=np_dtype))
    return params


def iter_meta_tensors(config: ModelConfig, params: Any) -> Iterator[tuple[str, np.ndarray]]:
    """(Meta name, torch-layout host array) for every parameter, one at a time, from a tree that passed
    `check_params` (boxed or not)."""
    params = unboxed(params)
    for name in meta_names(config):
        layer, kind = split_layer(name)
        if layer is None:
            array = _get(params, GLOBAL_TENSORS[kind])
        elif config.scan_layers:
            array = _get(params, ("layers", *LAYER_TENSORS[kind]))[layer]
        else:
            array = _get(params, (f"layers_{layer}", *LAYER_TENSORS[kind]))
        yield name, np.asarray(to_meta(config, name, np.asarray(array)))


def unboxed(params: Any) -> Any:
    """`params` without flax logical-partitioning boxes (a no-op on a plain tree)."""
    return nn.meta.unbox(params)


def check_params(config: ModelConfig, params: Any) -> None:
    """Raise naming the first parameter path that is missing, unexpected or of the wrong shape for `config`."""
    from llama_jax.model.llama import param_shapes  # the model's own definition of the tree is the reference

    expected = {jax.tree_util.keystr(p): s.shape for p, s in jax.tree_util.tree_leaves_with_path(param_shapes(config))}
    found = {jax.tree_util.keystr(p): np.shape(a) for p, a in jax.tree_util.tree_leaves_with_path(params)}
    layout = "stacked 'layers'" if config.scan_layers else "per-layer 'layers_{i}'"
    check_names(found, expected, f"parameters for scan_layers={config.scan_layers} ({layout})")
    for path, shape in found.items():
        check_shape(path, shape, expected[path], "parameters")


def stack_layers(params: Mapping, n_layers: int) -> dict:
    """Per-layer tree (`layers_0` ... `layers_{n-1}`) -> the `nn.scan` tree (`layers` with a leading layer axis)."""
    params = dict(unboxed(params))
    blocks = [params.pop(f"layers_{i}") for i in range(n_layers)]
    params["layers"] = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *blocks)
    return params


def unstack_layers(params: Mapping, n_layers: int) -> dict:
    """The `nn.scan` tree (`layers` stacked) -> per-layer tree (`layers_0` ... `layers_{n-1}`)."""
    params = dict(unboxed(params))
    stacked = params.pop("layers")
    for i in range(n_layers):
        params[f"layers_{i}"] = jax.tree.map(lambda x, i=i: x[i], stacked)
    return params


def check_output_dir(path: str) -> None:
    """Raise unless `path` is absent or an empty directory: a conversion never overwrites a checkpoint."""
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise FileExistsError(f"output {path} already exists and is not an empty directory; choose a new path")


def new_output_dir(path: str) -> None:
    """Create `path` for a converted checkpoint (see `check_output_dir`)."""
    check_output_dir(path)
    os.makedirs(path, exist_ok=True)


def split_layer(name: str) -> tuple[int | None, str]:
    """'layers.3.attention.wq.weight' -> (3, 'attention.wq.weight'); 'norm.weight' -> (None, 'norm.weight')."""
    if name.startswith("layers."):
        _, index, kind = name.split(".", 2)
        return int(index), kind
    return None, name


def _get(tree: Mapping, path: tuple[str, ...]) -> Any:
    for key in path:
        if key not in tree:
            return None
        tree = tree[key]
    return tree


def _set(tree: dict, path: tuple[str, ...], value: Any) -> Any:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value
    return value


def _some(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} (and {len(names) - limit} more)"
