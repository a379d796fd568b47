"""Hugging Face `LlamaForCausalLM` directories: `config.json` plus safetensors (one file, or shards and an index).

Two differences from the Meta reference (transformers' `convert_llama_weights_to_hf.py`): other names, and q/k
rows permuted within each head from interleaved pairs (2i, 2i+1) to halves (i, i + head_dim/2), because HF's
rotary embedding uses `rotate_half`. The permutation uses n_heads for wq and n_kv_heads for wk. safetensors is
imported only inside these functions, through its numpy API: no pickle is ever read.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

import jax.numpy as jnp
import numpy as np

from llama_jax.config import ModelConfig
from llama_jax.convert import layout

HF_NAMES = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
SAFETENSORS_DTYPES = ("float32", "bfloat16", "float16")
MAX_SHARD_BYTES = 5 * 1024**3  # as transformers' save_pretrained default


def hf_name(name: str) -> str:
    """The LlamaForCausalLM state-dict name of the Meta tensor `name`."""
    layer, kind = layout.split_layer(name)
    return HF_NAMES[kind] if layer is None else f"model.layers.{layer}.{HF_NAMES[kind]}"


def permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Meta -> HF q/k rows (out, in): per head, interleaved pairs become [real parts, imaginary parts]."""
    dim1, dim2 = w.shape
    return w.reshape(n_heads, dim1 // n_heads // 2, 2, dim2).swapaxes(1, 2).reshape(dim1, dim2)


def unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """HF -> Meta q/k rows (out, in); the inverse of `permute`."""
    dim1, dim2 = w.shape
    return w.reshape(n_heads, 2, dim1 // n_heads // 2, dim2).swapaxes(1, 2).reshape(dim1, dim2)


def config_from_hf(fields: dict[str, Any], where: str = "config.json") -> ModelConfig:
    """ModelConfig for a LlamaForCausalLM config.json dict (read from `where`); features our model lacks are errors."""
    if fields.get("model_type") != "llama":
        raise ValueError(f"{where} has model_type={fields.get('model_type')!r}; only 'llama' converts")
    required = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    layout.require_fields(fields, required, where)
    unsupported = {
        "hidden_act": (fields.get("hidden_act", "silu"), "silu"),
        "attention_bias": (fields.get("attention_bias", False), False),
        "mlp_bias": (fields.get("mlp_bias", False), False),
        "head_dim": (fields.get("head_dim") or fields["hidden_size"] // fields["num_attention_heads"],
                     fields["hidden_size"] // fields["num_attention_heads"]),
    }
    for key, (given, supported) in unsupported.items():
        if given != supported:
            raise ValueError(f"{where} has {key}={given!r}; the LLaMA architecture here needs {supported!r}")
    rope = fields.get("rope_parameters") or fields.get("rope_scaling") or {}  # transformers 5 / 4.x
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ValueError(f"{where} asks for rope scaling {rope}; only plain RoPE ('default') is implemented")
    heads, kv_heads = fields["num_attention_heads"], fields.get("num_key_value_heads") or fields["num_attention_heads"]
    config = ModelConfig(
        dim=fields["hidden_size"],
        n_layers=fields["num_hidden_layers"],
        n_heads=heads,
        n_kv_heads=None if kv_heads == heads else kv_heads,
        vocab_size=fields["vocab_size"],
        norm_eps=fields.get("rms_norm_eps", 1e-6),
        rope_theta=float(rope.get("rope_theta", fields.get("rope_theta", 10000.0))),
        max_seq_len=fields.get("max_position_embeddings", 2048),
    )
    if config.hidden_dim != fields["intermediate_size"]:
        config = config.replace(hidden_dim_override=fields["intermediate_size"])
    return config


def hf_config(config: ModelConfig, dtype: str) -> dict[str, Any]:
    """The config.json that transformers 5 reads (rope_theta inside rope_parameters; also top level for 4.x)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": config.dim,
        "intermediate_size": config.hidden_dim,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.kv_heads,
        "head_dim": config.head_dim,
        "vocab_size": config.vocab_size,
        "rms_norm_eps": config.norm_eps,
        "max_position_embeddings": config.max_seq_len,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "rope_theta": config.rope_theta,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": 1,  # the LLaMA tokenizer's (paper reference §1.3)
        "eos_token_id": 2,
        "dtype": dtype,
    }


def load_hf(path: str, *, dtype: str = "float32", scan_layers: bool = True):
    """(ModelConfig, params) from a LlamaForCausalLM directory; params are host arrays of `dtype`.

    Tied embeddings (`tie_word_embeddings: true`, no `lm_head.weight`) are untied by copying the embedding
    into `output`: the same function, with the untied layout of the paper's model."""
    from safetensors import SafetensorError, safe_open

    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"{path} is not a Hugging Face model directory: {config_file} is missing")
    fields = layout.read_json(config_file)
    config = config_from_hf(fields, config_file).replace(scan_layers=scan_layers, param_dtype=dtype)
    tied = fields.get("tie_word_embeddings", False)

    with contextlib.ExitStack() as stack:
        handle_of, file_of = {}, {}
        for file in _safetensors_files(path):
            try:
                handle = stack.enter_context(safe_open(file, framework="np"))
            except SafetensorError as e:
                raise ValueError(f"{file} is not a readable safetensors file ({e}); it may be truncated or "
                                 "corrupted: copy it again from its source") from e
            for name in handle.keys():
                if name.endswith("rotary_emb.inv_freq"):  # a buffer older transformers saved
                    continue
                if name in file_of:
                    raise ValueError(f"tensor {name} is in both {file_of[name]} and {file}; keep one copy")
                handle_of[name], file_of[name] = handle, file
        expected = {hf_name(name) for name in layout.meta_names(config)}
        if tied and "lm_head.weight" not in handle_of:
            expected.discard("lm_head.weight")
        layout.check_names(handle_of, expected, path)

        def tensors():
            for name in layout.meta_names(config):
                source = hf_name(name)
                if source not in handle_of:  # a tied lm_head, the one name check_names lets be absent
                    source = "model.embed_tokens.weight"
                tensor = handle_of[source].get_tensor(source)
                layout.check_shape(source, tensor.shape, layout.meta_shape(config, name), file_of[source])
                yield name, _rotate_half_rows(config, name, tensor, unpermute)

        return config, layout.build_params(config, tensors(), dtype, path)


def save_hf(config: ModelConfig, params: Any, path: str, *, dtype: str = "bfloat16",
            max_shard_bytes: int = MAX_SHARD_BYTES) -> None:
    """Write config.json and safetensors (sharded with an index above `max_shard_bytes`) that
    `transformers.LlamaForCausalLM.from_pretrained(path)` loads."""
    from safetensors.numpy import save_file

    if dtype not in SAFETENSORS_DTYPES:
        raise ValueError(f"dtype={dtype!r} is not one of {SAFETENSORS_DTYPES}")
    layout.check_params(config, layout.unboxed(params))
    layout.new_output_dir(path)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf_config(config, dtype), f, indent=2)

    shard_names: list[list[str]] = []
    shard: dict[str, np.ndarray] = {}
    size = total = 0

    def flush():
        save_file(shard, os.path.join(path, f"part-{len(shard_names)}.safetensors"), metadata={"format": "pt"})
        shard_names.append(list(shard))
        shard.clear()

    for name, array in hf_tensors(config, params, dtype):
        if shard and size + array.nbytes > max_shard_bytes:
            flush()
            size = 0
        shard[name] = array
        size += array.nbytes
        total += array.nbytes
    flush()
    _name_shards(path, shard_names, total)


def hf_tensors(config: ModelConfig, params: Any, dtype: str = "float32") -> Iterator[tuple[str, np.ndarray]]:
    """(LlamaForCausalLM state-dict name, contiguous host array of `dtype` in its layout) for every parameter, one
    at a time (q/k rows in rotate_half order): what `save_hf` writes, or a state dict for an in-memory model."""
    for name, tensor in layout.iter_meta_tensors(config, params):
        yield hf_name(name), np.ascontiguousarray(_rotate_half_rows(config, name, tensor, permute), dtype=jnp.dtype(dtype))


def _rotate_half_rows(config: ModelConfig, name: str, tensor: np.ndarray, permutation) -> np.ndarray:
    """Apply `permutation` (`permute` into HF order, `unpermute` out of it) to q and k rows; other tensors pass."""
    heads = {"attention.wq.weight": config.n_heads, "attention.wk.weight": config.kv_heads}.get(layout.split_layer(name)[1])
    return tensor if heads is None else permutation(tensor, heads)


def _safetensors_files(path: str) -> list[str]:
    """Paths of a model directory's safetensors: those its index names, or the single `model.safetensors`."""
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):
        weight_map = layout.read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index} has no \"weight_map\" of tensor names to files")
        files = [os.path.join(path, file) for file in sorted(set(weight_map.values()))]
    elif os.path.isfile(os.path.join(path, "model.safetensors")):
        files = [os.path.join(path, "model.safetensors")]
    else:
        raise FileNotFoundError(
            f"{path} has neither model.safetensors nor model.safetensors.index.json "
            "(pickled pytorch_model.bin files are not read: re-save the model with safe_serialization=True)"
        )
    missing = [file for file in files if not os.path.isfile(file)]
    if missing:
        raise FileNotFoundError(f"{index} names safetensors files that do not exist: {missing}")
    return files


def _name_shards(path: str, shard_names: list[list[str]], total_bytes: int) -> None:
    """Give the written parts transformers' names: model.safetensors, or model-0000i-of-0000n plus an index."""
    n = len(shard_names)
    if n == 1:
        os.rename(os.path.join(path, "part-0.safetensors"), os.path.join(path, "model.safetensors"))
        return
    weight_map = {}
    for i, names in enumerate(shard_names):
        file = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        os.rename(os.path.join(path, f"part-{i}.safetensors"), os.path.join(path, file))
        weight_map.update(dict.fromkeys(names, file))
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total_bytes}, "weight_map": weight_map}, f, indent=2)
