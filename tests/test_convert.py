"""Conversion is exact: random tiny transformers `LlamaForCausalLM` models, and Meta checkpoints built from them
with the reference's conventions, give our model the same float32 logits; exports load back in transformers."""

import json
import os
import shutil

import flax.linen as nn
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

from tiny_llama import SHAPES, VOCAB, randomise, tiny_llama  # noqa: E402

from llama_jax.config import ModelConfig  # noqa: E402
from llama_jax.convert import formats as convert  # noqa: E402
from llama_jax.model.llama import LLaMA, init_params, param_shapes  # noqa: E402

TOKENS = np.random.RandomState(0).randint(0, VOCAB, size=(2, 12))
# float32 logits against transformers': the largest difference these tests measured is 7.7e-6 (AMD EPYC, 2026-12-02;
# 9.2e-6 earlier); the README quotes both numbers.
ATOL = 2e-5


def _hf_logits(model) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(TOKENS)).logits.numpy()


def _our_logits(config: ModelConfig, params) -> np.ndarray:
    return np.asarray(LLaMA(config).apply({"params": params}, TOKENS))


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
    """name -> (saved directory, torch model, its float32 logits on TOKENS); built once for the module."""
    torch.manual_seed(0)
    models = {}
    for seed, name in enumerate(SHAPES):
        model = tiny_llama(name, seed)
        path = str(tmp_path_factory.mktemp(f"hf_{name}"))
        model.save_pretrained(path)
        models[name] = (path, model, _hf_logits(model))
    return models


@pytest.mark.parametrize("name", sorted(SHAPES))
@pytest.mark.parametrize("scan_layers", [True, False])
def test_hf_checkpoint_gives_transformers_logits(hf_models, name, scan_layers):
    path, _, reference = hf_models[name]
    config, params = convert.load_hf(path, scan_layers=scan_layers)
    assert config.scan_layers == scan_layers and ("layers" in params) == scan_layers
    ours = _our_logits(config, params)
    assert np.abs(reference).max() > 1.0  # the comparison is not between near-zero numbers
    np.testing.assert_allclose(ours, reference, atol=ATOL, rtol=0)
    np.testing.assert_array_equal(ours.argmax(-1), reference.argmax(-1))


def _random_params(config: ModelConfig, seed: int) -> dict:
    """Our parameter tree with weights of order one and distinct norms."""
    rng = np.random.default_rng(seed)

    def draw(path, shape):
        noise = rng.standard_normal(shape.shape).astype(np.float32)
        return 1.0 + 0.2 * noise if "norm" in jax.tree_util.keystr(path) else 0.2 * noise

    return jax.tree_util.tree_map_with_path(draw, param_shapes(config))


@pytest.mark.parametrize("name", ["odd_heads", "gqa"])
def test_save_hf_loads_in_transformers(hf_models, tmp_path, name):
    config, _ = convert.load_hf(hf_models[name][0])
    params = _random_params(config, seed=1)
    out = str(tmp_path / "hf")
    convert.save_hf(config, params, out, dtype="float32", max_shard_bytes=100_000)  # several shards and an index
    assert os.path.isfile(os.path.join(out, "model.safetensors.index.json"))
    model = transformers.LlamaForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    reference, ours = _hf_logits(model), _our_logits(config, params)
    np.testing.assert_allclose(ours, reference, atol=ATOL, rtol=0)
    np.testing.assert_array_equal(ours.argmax(-1), reference.argmax(-1))
    _, again = convert.load_hf(out)
    jax.tree.map(np.testing.assert_array_equal, again, params)


def _hf_to_meta_shards(model, n_shards: int) -> list[dict]:
    """A Meta consolidated checkpoint made from HF weights with the reference conventions, written here
    independently of llama_jax: inverse q/k permutation, (out, in) layout, fairscale splits, rope.freqs buffers."""
    cfg = model.config
    heads, kv_heads, head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    state = model.state_dict()

    def unpermute(w, n):  # reference doc §2.8, HF -> Meta
        return w.view(n, 2, w.shape[0] // n // 2, w.shape[1]).transpose(1, 2).reshape(w.shape)

    meta = {"tok_embeddings.weight": (state["model.embed_tokens.weight"], 1),
            "norm.weight": (state["model.norm.weight"], None),
            "output.weight": (state["lm_head.weight"], 0)}
    for i in range(cfg.num_hidden_layers):
        hf = f"model.layers.{i}."
        meta |= {
            f"layers.{i}.attention.wq.weight": (unpermute(state[hf + "self_attn.q_proj.weight"], heads), 0),
            f"layers.{i}.attention.wk.weight": (unpermute(state[hf + "self_attn.k_proj.weight"], kv_heads), 0),
            f"layers.{i}.attention.wv.weight": (state[hf + "self_attn.v_proj.weight"], 0),
            f"layers.{i}.attention.wo.weight": (state[hf + "self_attn.o_proj.weight"], 1),
            f"layers.{i}.feed_forward.w1.weight": (state[hf + "mlp.gate_proj.weight"], 0),
            f"layers.{i}.feed_forward.w2.weight": (state[hf + "mlp.down_proj.weight"], 1),
            f"layers.{i}.feed_forward.w3.weight": (state[hf + "mlp.up_proj.weight"], 0),
            f"layers.{i}.attention_norm.weight": (state[hf + "input_layernorm.weight"], None),
            f"layers.{i}.ffn_norm.weight": (state[hf + "post_attention_layernorm.weight"], None),
        }
    shards = []
    for rank in range(n_shards):
        shard = {}
        for key, (tensor, axis) in meta.items():
            shard[key] = tensor.clone() if axis is None else tensor.chunk(n_shards, dim=axis)[rank].clone()
        for i in range(cfg.num_hidden_layers):
            shard[f"layers.{i}.attention.inner_attention.rope.freqs"] = torch.ones(head_dim // 2)
        shards.append(shard)
    return shards


def _write_meta(path, name: str, model, n_shards: int, vocab_size: int = VOCAB, **extra_fields) -> str:
    dim, heads, kv_heads, _, theta, multiple_of, multiplier = SHAPES[name]
    fields = {"dim": dim, "multiple_of": multiple_of, "n_heads": heads, "n_layers": 2, "norm_eps": 1e-6,
              "vocab_size": vocab_size, "rope_theta": theta}
    if kv_heads != heads:
        fields["n_kv_heads"] = kv_heads
    if multiplier is not None:
        fields["ffn_dim_multiplier"] = multiplier
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "params.json"), "w") as f:
        json.dump(fields | extra_fields, f)
    for rank, shard in enumerate(_hf_to_meta_shards(model, n_shards)):
        torch.save(shard, os.path.join(path, f"consolidated.{rank:02d}.pth"))
    return str(path)


@pytest.mark.parametrize("name,n_shards,scan_layers", [("mha", 1, True), ("mha", 2, False), ("gqa", 2, True),
                                                        ("odd_heads", 1, True)])
def test_meta_checkpoint_gives_transformers_logits(hf_models, tmp_path, name, n_shards, scan_layers):
    _, model, reference = hf_models[name]
    path = _write_meta(tmp_path / "meta", name, model, n_shards)
    config, params = convert.load_meta(path, scan_layers=scan_layers)
    ours = _our_logits(config, params)
    np.testing.assert_allclose(ours, reference, atol=ATOL, rtol=0)
    np.testing.assert_array_equal(ours.argmax(-1), reference.argmax(-1))


def test_meta_vocab_size_minus_one_is_the_embedding_rows_checked_against_a_tokenizer(hf_models, tmp_path):
    import io

    import sentencepiece

    model_bytes = io.BytesIO()
    words = [f"word{i} thing{i % 7} other{i % 13}" for i in range(400)]
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(words), model_writer=model_bytes,
                                             vocab_size=VOCAB, model_type="bpe", minloglevel=2)
    (tmp_path / "tokenizer.model").write_bytes(model_bytes.getvalue())  # the parent of the checkpoint, as Meta ships
    path = _write_meta(tmp_path / "7B", "mha", hf_models["mha"][1], 2, vocab_size=-1)
    assert convert.load_meta(path)[0].vocab_size == VOCAB  # the tokenizer agrees with the embedding
    os.remove(tmp_path / "tokenizer.model")  # no tokenizer: the embedding's rows are the vocabulary
    config, params = convert.load_meta(path)
    assert config.vocab_size == VOCAB
    np.testing.assert_allclose(_our_logits(config, params), hf_models["mha"][2], atol=ATOL, rtol=0)
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(words), model_prefix=str(tmp_path / "tokenizer"),
                                             vocab_size=VOCAB - 28, model_type="bpe", minloglevel=2)
    with pytest.raises(ValueError, match=r"tokenizer.model has 100 pieces but the checkpoint's tok_embeddings.weight "
                                         r"has 128 rows"):
        convert.load_meta(path)


@pytest.mark.parametrize("n_shards", [1, 2])
def test_save_meta_then_load_meta_is_identity(hf_models, tmp_path, n_shards):
    config, _ = convert.load_hf(hf_models["gqa"][0])  # intermediate 224 is not 256*ceil(8d/3 / 256): an override
    params = _random_params(config, seed=2)
    convert.save_meta(config, params, str(tmp_path / "meta"), shards=n_shards, dtype="float32")
    assert sorted(os.listdir(tmp_path / "meta")) == [f"consolidated.{r:02d}.pth" for r in range(n_shards)] + ["params.json"]
    loaded_config, loaded = convert.load_meta(str(tmp_path / "meta"), max_seq_len=config.max_seq_len)
    assert loaded_config.hidden_dim == config.hidden_dim and loaded_config.kv_heads == config.kv_heads
    jax.tree.map(np.testing.assert_array_equal, loaded, params)


def test_layer_layouts_convert_into_each_other(hf_models):
    config, stacked = convert.load_hf(hf_models["mha"][0], scan_layers=True)
    _, per_layer = convert.load_hf(hf_models["mha"][0], scan_layers=False)
    jax.tree.map(np.testing.assert_array_equal, convert.unstack_layers(stacked, config.n_layers), per_layer)
    jax.tree.map(np.testing.assert_array_equal, convert.stack_layers(per_layer, config.n_layers), stacked)


def test_orbax_round_trip_of_boxed_params(tmp_path):
    config = ModelConfig(dim=32, n_layers=2, n_heads=2, vocab_size=64, multiple_of=16, max_seq_len=32)
    params = _random_params(config, seed=3)
    boxes = jax.eval_shape(lambda key: init_params(config, key), jax.random.key(0))  # LLaMA.init's logically partitioned boxes
    boxed = jax.tree.map(lambda box, x: box.replace_boxed(x), boxes, params,
                         is_leaf=lambda node: isinstance(node, nn.LogicallyPartitioned))
    convert.save_orbax(config, boxed, str(tmp_path / "orbax"))
    loaded_config, loaded = convert.load_orbax(str(tmp_path / "orbax"))
    assert loaded_config == config
    jax.tree.map(np.testing.assert_array_equal, loaded, params)


def test_command_converts_hf_to_meta_and_orbax(hf_models, tmp_path):
    path, _, reference = hf_models["gqa"]
    convert.main(["--from=hf", "--to=meta", "--dtype=float32", "--shards=2", path, str(tmp_path / "meta")])
    config, params = convert.load_meta(str(tmp_path / "meta"))
    np.testing.assert_allclose(_our_logits(config, params), reference, atol=ATOL, rtol=0)
    convert.main(["--from=meta", "--to=orbax", str(tmp_path / "meta"), str(tmp_path / "orbax")])
    config, params = convert.load_orbax(str(tmp_path / "orbax"))
    np.testing.assert_allclose(_our_logits(config, params), reference, atol=ATOL, rtol=0)
    with pytest.raises(FileExistsError, match="already exists"):
        convert.main(["--from=hf", "--to=hf", path, str(tmp_path / "orbax")])


def test_tied_embeddings_are_copied_into_the_untied_output(tmp_path):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        tie_word_embeddings=True, attn_implementation="eager",
    )
    model = transformers.LlamaForCausalLM(config).eval()
    randomise(model, seed=4)
    model.save_pretrained(str(tmp_path / "tied"))
    ours_config, params = convert.load_hf(str(tmp_path / "tied"))
    np.testing.assert_array_equal(params["output"], params["tok_embeddings"].T)
    np.testing.assert_allclose(_our_logits(ours_config, params), _hf_logits(model), atol=ATOL, rtol=0)


@pytest.mark.parametrize("change,message", [
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}}, "rope scaling"),
    ({"attention_bias": True}, "attention_bias=True"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ({"head_dim": 32}, "head_dim=32"),
    ({"model_type": "mistral"}, "model_type='mistral'"),
])
def test_transformers_features_we_do_not_implement_are_refused(change, message):
    fields = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2,
              "num_attention_heads": 4, "vocab_size": VOCAB}
    assert convert.config_from_hf(fields).hidden_dim == 192
    with pytest.raises(ValueError, match=message):
        convert.config_from_hf(fields | change)


# Bad input: each error names the tensor, the field or the path that is wrong.


def _edited_hf_copy(source: str, dest, edit) -> str:
    shutil.copytree(source, dest)
    file = os.path.join(dest, "model.safetensors")
    tensors = safetensors_numpy.load_file(file)
    edit(tensors)
    safetensors_numpy.save_file(tensors, file, metadata={"format": "pt"})
    return str(dest)


def test_missing_tensor_is_named(hf_models, tmp_path):
    path = _edited_hf_copy(hf_models["mha"][0], tmp_path / "m", lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match=r"missing tensor\(s\) model.layers.1.mlp.up_proj.weight"):
        convert.load_hf(path)


def test_extra_tensor_is_named(hf_models, tmp_path):
    def add_bias(tensors):
        tensors["model.layers.0.self_attn.q_proj.bias"] = np.zeros(64, np.float32)

    path = _edited_hf_copy(hf_models["mha"][0], tmp_path / "m", add_bias)
    with pytest.raises(ValueError, match=r"unexpected tensor\(s\) model.layers.0.self_attn.q_proj.bias"):
        convert.load_hf(path)


def test_shape_mismatch_names_tensor_and_both_shapes(hf_models, tmp_path):
    def shrink(tensors):
        tensors["model.layers.1.mlp.down_proj.weight"] = tensors["model.layers.1.mlp.down_proj.weight"][:, :100]

    path = _edited_hf_copy(hf_models["mha"][0], tmp_path / "m", shrink)
    with pytest.raises(ValueError, match=r"model.layers.1.mlp.down_proj.weight has shape \(64, 100\).*\(64, 192\)"):
        convert.load_hf(path)


def test_meta_shard_missing_a_tensor_is_named(hf_models, tmp_path):
    path = _write_meta(tmp_path / "meta", "mha", hf_models["mha"][1], 2)
    shard = torch.load(os.path.join(path, "consolidated.01.pth"), weights_only=True)
    del shard["layers.0.attention.wk.weight"]
    torch.save(shard, os.path.join(path, "consolidated.01.pth"))
    with pytest.raises(ValueError, match=r"consolidated.01.pth: missing tensor\(s\) layers.0.attention.wk.weight"):
        convert.load_meta(path)


def test_unknown_params_json_field_is_named(hf_models, tmp_path):
    path = _write_meta(tmp_path / "meta", "mha", hf_models["mha"][1], 1, use_scaled_rope=True)
    with pytest.raises(ValueError, match=r"params.json has field\(s\) \['use_scaled_rope'\]"):
        convert.load_meta(path)


def test_missing_files_are_named(hf_models, tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        convert.load_hf(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="needs params.json and consolidated.NN.pth"):
        convert.load_meta(str(tmp_path))
    path = _edited_hf_copy(hf_models["mha"][0], tmp_path / "m", lambda t: None)
    os.remove(os.path.join(path, "model.safetensors"))
    with pytest.raises(FileNotFoundError, match="neither model.safetensors nor model.safetensors.index.json"):
        convert.load_hf(path)


def test_existing_output_directory_is_never_overwritten(hf_models, tmp_path):
    config, params = convert.load_hf(hf_models["mha"][0])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("precious")
    for save in (convert.save_hf, convert.save_meta, convert.save_orbax):
        with pytest.raises(FileExistsError, match="out already exists"):
            save(config, params, str(tmp_path / "out"))
    assert os.listdir(tmp_path / "out") == ["keep.txt"]


# Hostile and broken files: refused with an error that names the file, before anything in them runs.


class _CreatesAFile:
    """A pickled object whose unpickling would call open(marker, "w"): the classic __reduce__ payload."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_pickle_payload_is_refused_before_it_runs(hf_models, tmp_path):
    path = _write_meta(tmp_path / "meta", "mha", hf_models["mha"][1], 1)
    shard, marker = os.path.join(path, "consolidated.00.pth"), str(tmp_path / "payload_ran")
    state = torch.load(shard, weights_only=True)
    state["layers.0.attention.inner_attention.rope.freqs"] = _CreatesAFile(marker)
    torch.save(state, shard)
    with pytest.raises(ValueError, match=r"consolidated.00.pth asks to run code \((io|builtins).open\).*refused"):
        convert.load_meta(path)
    assert not os.path.exists(marker)
    torch.load(shard, weights_only=False)  # the payload is live: an unsafe load runs it
    assert os.path.exists(marker)


def test_a_pth_cut_short_is_named(hf_models, tmp_path):
    path = _write_meta(tmp_path / "meta", "mha", hf_models["mha"][1], 2)
    shard = os.path.join(path, "consolidated.01.pth")
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) // 2)
    with pytest.raises(ValueError, match=r"consolidated.01.pth is not a readable PyTorch checkpoint.*truncated"):
        convert.load_meta(path)


def test_meta_shards_that_disagree_are_named(hf_models, tmp_path):
    path = _write_meta(tmp_path / "meta", "mha", hf_models["mha"][1], 2)
    shard = os.path.join(path, "consolidated.01.pth")
    state = torch.load(shard, weights_only=True)
    state["layers.1.attention.wq.weight"] = state["layers.1.attention.wq.weight"][:, :48].clone()
    torch.save(state, shard)
    with pytest.raises(ValueError, match=r"layers.1.attention.wq.weight: shard shapes \[\(32, 64\), \(32, 48\)\] "
                                         r"in \[.*consolidated.00.pth.*consolidated.01.pth'\]"):
        convert.load_meta(path)
    state = torch.load(shard, weights_only=True)
    state["layers.1.attention.wq.weight"] = torch.zeros(32, 64)
    state["norm.weight"] = torch.ones(32)  # a replicated tensor of another model
    torch.save(state, shard)
    with pytest.raises(ValueError, match=r"norm.weight is replicated but has shapes \[\(64,\), \(32,\)\]"):
        convert.load_meta(path)


def test_params_json_that_is_not_json_is_named(hf_models, tmp_path):
    path = _write_meta(tmp_path / "meta", "mha", hf_models["mha"][1], 1)
    (tmp_path / "meta" / "params.json").write_text('{"dim": 64, "n_layers": 2,')
    with pytest.raises(ValueError, match=r"meta/params.json is not valid JSON"):
        convert.load_meta(path)


@pytest.mark.parametrize("field", ["dim", "n_layers", "n_heads", "norm_eps"])
def test_params_json_without_a_required_field_is_named(hf_models, tmp_path, field):
    """No ModelConfig default stands in for a missing field (dim 512, 8 layers, ...)."""
    path = _write_meta(tmp_path / "meta", "mha", hf_models["mha"][1], 1)
    fields = json.loads((tmp_path / "meta" / "params.json").read_text())
    del fields[field]
    (tmp_path / "meta" / "params.json").write_text(json.dumps(fields))
    with pytest.raises(ValueError, match=rf"params.json lacks the required field\(s\) \['{field}'\]"):
        convert.load_meta(path)


@pytest.mark.parametrize("field", ["hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"])
def test_hf_config_without_a_required_field_is_named(hf_models, tmp_path, field):
    path = _edited_hf_copy(hf_models["mha"][0], tmp_path / "m", lambda t: None)
    fields = json.loads((tmp_path / "m" / "config.json").read_text())
    del fields[field]
    (tmp_path / "m" / "config.json").write_text(json.dumps(fields))
    with pytest.raises(ValueError, match=rf"m/config.json lacks the required field\(s\) \['{field}'\]"):
        convert.load_hf(path)
    (tmp_path / "m" / "config.json").write_text("not json")
    with pytest.raises(ValueError, match=r"m/config.json is not valid JSON"):
        convert.load_hf(path)


@pytest.mark.parametrize("damage", ["truncated", "header"])
def test_a_damaged_safetensors_file_is_named(hf_models, tmp_path, damage):
    path = _edited_hf_copy(hf_models["mha"][0], tmp_path / "m", lambda t: None)
    file = os.path.join(path, "model.safetensors")
    with open(file, "r+b") as f:
        if damage == "truncated":
            f.truncate(os.path.getsize(file) - 1000)
        else:
            f.seek(8)
            f.write(b"garbage!")
    with pytest.raises(ValueError, match=r"m/model.safetensors is not a readable safetensors file"):
        convert.load_hf(path)


def test_an_index_naming_missing_or_no_files_is_named(hf_models, tmp_path):
    config, params = convert.load_hf(hf_models["mha"][0])
    out = tmp_path / "hf"
    convert.save_hf(config, params, str(out), dtype="float32", max_shard_bytes=100_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    first = sorted(set(index["weight_map"].values()))[0]
    os.remove(out / first)
    with pytest.raises(FileNotFoundError, match=rf"model.safetensors.index.json names safetensors files that do not "
                                                rf"exist: \['.*{first}'\]"):
        convert.load_hf(str(out))
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}}))
    with pytest.raises(ValueError, match=r"model.safetensors.index.json has no \"weight_map\""):
        convert.load_hf(str(out))
