"""Generation from the command line: every kind of checkpoint loads with its tokenizer, the command prints what
`sampling.generate` gives, and each bad input is one clear error line."""

import io
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import sentencepiece

from experiments.configs import debug
from llama_jax import cli, corpus_spec
from llama_jax.config import PRESETS
from llama_jax.convert import formats as convert
from llama_jax.inference import generate, sampling, weights
from llama_jax.inference import tokenizer as tokenizer_lib
from llama_jax.model.llama import param_shapes

CONFIG = PRESETS["debug"]  # vocab 256, context 64
_LETTERS = np.random.default_rng(1).choice(list("abcdefghijklmnopqrstuvwxyz"), size=(3000, 5))
WORDS = [f"the {''.join(w[:2 + i % 4])} sat on {i % 97} mats" for i, w in enumerate(_LETTERS)]  # text to train on


def _spm(path, vocab_size: int) -> str:
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(WORDS), model_writer=model, vocab_size=vocab_size,
                                             model_type="bpe", minloglevel=2)
    path.write_bytes(model.getvalue())
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tokenizers of the model's vocabulary (256) and of another (200), order-one random debug params, and
    the same params as an orbax directory with the tokenizer beside them."""
    root = tmp_path_factory.mktemp("generate")
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda x: (0.3 * rng.standard_normal(x.shape)).astype(np.float32) + (x.ndim == 1),
                          param_shapes(CONFIG))  # norms near one (x.ndim == 1), order-one weights
    convert.save_orbax(CONFIG, params, str(root / "orbax"))
    tok = _spm(root / "orbax" / "tokenizer.model", 256)
    return {"root": root, "params": params, "orbax": str(root / "orbax"), "tokenizer": tok,
            "small_tokenizer": _spm(root / "small.model", 200)}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A training workdir of the test config (synthetic tokens: no tokenizer)."""
    from llama_jax.train.loop import train

    path = str(tmp_path_factory.mktemp("run"))
    train(debug.get_config(), path)
    return path


def _json(capsys, *args) -> dict:
    generate.main([*args, "--json"])
    return json.loads(capsys.readouterr().out)


def _error(capsys, *args) -> tuple[int, str]:
    """(exit status, stderr) of the command as a person runs it (cli.run)."""
    with pytest.raises(SystemExit) as exit_:
        cli.run(lambda: generate.main(list(args)))
    return exit_.value.code, capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- tokenizers
def test_sentencepiece_tokenizer_encodes_with_bos_and_eos(files):
    tok = tokenizer_lib.load(files["tokenizer"], vocab_size=256)
    ids = tok.encode("the cat3 sat on a2 mat")
    assert tok.encode("the cat3 sat on a2 mat", bos=True, eos=True) == [tok.bos_id, *ids, tok.eos_id]
    assert (tok.bos_id, tok.eos_id, tok.vocab_size, tok.name) == (1, 2, 256, files["tokenizer"])
    assert tok.decode([tok.bos_id, *ids, tok.eos_id]) == "the cat3 sat on a2 mat"


def test_hugging_face_tokenizer_directory(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    backend = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer, backend.decoder = tokenizers.pre_tokenizers.Metaspace(), tokenizers.decoders.Metaspace()
    backend.train_from_iterator(WORDS, tokenizers.trainers.BpeTrainer(vocab_size=100, special_tokens=["<unk>", "<s>", "</s>"]))
    transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                         unk_token="<unk>").save_pretrained(str(tmp_path))
    tok = tokenizer_lib.load(str(tmp_path), vocab_size=100)
    ids = tok.encode("the owl5 sat", bos=True)
    assert ids[0] == tok.bos_id == 1 and tok.eos_id == 2 and tok.decode(ids) == "the owl5 sat"
    with pytest.raises(ValueError, match=f"tokenizer {tmp_path} has 100 pieces but the model has vocab_size=256"):
        tokenizer_lib.load(str(tmp_path), vocab_size=256)


def test_bad_tokenizers_are_named(files, tmp_path):
    with pytest.raises(ValueError, match=f"tokenizer {files['small_tokenizer']} has 200 pieces but the model has "
                                         "vocab_size=256"):
        tokenizer_lib.load(files["small_tokenizer"], vocab_size=256)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tokenizer_lib.load(str(tmp_path / "missing.model"))
    with pytest.raises(FileNotFoundError, match="has none of"):
        tokenizer_lib.load(str(tmp_path))
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="is not a SentencePiece model"):
        tokenizer_lib.load(str(tmp_path / "junk.model"))


# ---------------------------------------------------------------------------------------------- weights
def test_every_kind_of_checkpoint_loads_with_its_tokenizer(files):
    root, params = files["root"], files["params"]
    convert.save_hf(CONFIG, params, str(root / "hf"), dtype="float32")
    shutil.copy(files["tokenizer"], root / "hf" / "tokenizer.model")
    os.makedirs(root / "meta")
    convert.save_meta(CONFIG, params, str(root / "meta" / "7B"), dtype="float32")
    shutil.copy(files["tokenizer"], root / "meta" / "tokenizer.model")  # Meta ships it beside the model folders
    expected = {"orbax": files["tokenizer"], "hf": str(root / "hf" / "tokenizer.model"),
                "meta": str(root / "meta" / "tokenizer.model")}
    for kind, path in (("orbax", files["orbax"]), ("hf", str(root / "hf")), ("meta", str(root / "meta" / "7B"))):
        loaded = weights.load(path, max_seq_len=CONFIG.max_seq_len)
        assert (loaded.kind, loaded.tokenizer) == (kind, expected[kind])
        assert _shape(loaded.config) == _shape(CONFIG)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), loaded.params, params)
    half = weights.load(files["orbax"], dtype="bfloat16")
    assert half.config.param_dtype == "bfloat16" and half.params["output"].dtype == jax.numpy.bfloat16


def _shape(config) -> tuple:
    return (config.dim, config.n_layers, config.n_heads, config.kv_heads, config.hidden_dim, config.vocab_size,
            config.max_seq_len, config.norm_eps, config.rope_theta)


def test_an_unknown_directory_names_what_was_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"none of checkpoints \(a training workdir\); model_config.json.*"
                                                r"params.json.*config.json"):
        weights.load(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        weights.load(str(tmp_path / "nothing"))


def test_training_workdir_loads_its_latest_parameters(workdir, files, tmp_path):
    loaded = weights.load(workdir)
    assert loaded.kind == "workdir" and loaded.tokenizer is None  # synthetic tokens: no tokenizer
    assert loaded.config == CONFIG.replace(**{k: v for k, v in debug.get_config().model.items()})
    assert set(loaded.params) == {"tok_embeddings", "layers", "norm", "output"}  # params only
    # a run on text names its tokenizer: data.tokenizer, or the corpus's own when ""
    copy = str(tmp_path / "run")
    shutil.copytree(workdir, copy)
    saved = _edit_saved_config(copy, lambda c: c["data"].update(source="mixture", tokenizer=files["tokenizer"]))
    assert weights.load(copy).tokenizer == files["tokenizer"]
    _edit_saved_config(copy, lambda c: c["data"].update(tokenizer="", corpus_dir=""))
    assert weights.load(copy).tokenizer == corpus_spec.tokenizer_path(saved["data"] | {"tokenizer": ""})
    assert corpus_spec.tokenizer_path({"tokenizer": "", "corpus_dir": ""}) == f"{corpus_spec.DEFAULT_CORPUS}/tokenizer.model"


def test_loading_a_workdir_imports_neither_tensorflow_nor_torch(workdir):
    """The GPU machines have no TensorFlow: finding a run's tokenizer must not pull in data_pipeline's stream."""
    code = ("import sys; from llama_jax.inference import generate, weights; weights.load(sys.argv[1]); "
            "print(sorted({'tensorflow', 'torch'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code, workdir], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _edit_saved_config(workdir: str, edit) -> dict:
    """Apply `edit` to the config JSON saved with the latest checkpoint of `workdir`; returns the new config."""
    directory = os.path.join(workdir, "checkpoints")
    latest = max(int(step) for step in os.listdir(directory) if step.isdigit())
    file = os.path.join(directory, str(latest), "config", "metadata")
    with open(file) as f:
        config = json.load(f)
    edit(config)
    with open(file, "w") as f:
        json.dump(config, f)
    return config


# ---------------------------------------------------------------------------------------------- the command
def test_command_prints_what_sampling_generates(files, capsys):
    tok = tokenizer_lib.load(files["tokenizer"], 256)
    prompt = "the owl3 sat on"
    expected = sampling.generate(CONFIG, files["params"], [tok.encode(prompt, bos=True)], max_new_tokens=8,
                                 eos_id=tok.eos_id)
    result = _json(capsys, f"--checkpoint={files['orbax']}", f"--prompt={prompt}", "--max_new_tokens=8")
    assert result["ids"] == expected.tokens and result["finish"] == expected.finish
    assert result["text"] == [generate.continuation(tok, tok.encode(prompt, bos=True), expected.tokens[0])]
    assert result["prompts"] == [prompt] and result["prefill_tokens_per_s"] > 0
    generate.main([f"--checkpoint={files['orbax']}", f"--prompt={prompt}", "--max_new_tokens=8"])
    printed = capsys.readouterr().out
    assert printed.startswith(prompt + result["text"][0]) and "tokens/s" in printed and "time to first token" in printed


def test_command_on_a_training_workdir_with_ids_or_a_tokenizer(workdir, files, tmp_path, capsys):
    loaded = weights.load(workdir)
    ids = [1, 5, 9, 33]
    result = _json(capsys, f"--checkpoint={workdir}", "--prompt_ids=1,5,9,33", "--max_new_tokens=8")
    assert result["ids"] == sampling.generate(loaded.config, loaded.params, [ids], max_new_tokens=8).tokens
    assert "text" not in result and result["finish"] == ["length"]
    (tmp_path / "one.txt").write_text("the dog sat on 12\n")
    result = _json(capsys, f"--checkpoint={workdir}", f"--batch_file={tmp_path / 'one.txt'}",
                   f"--tokenizer={files['tokenizer']}", "--max_new_tokens=8")
    assert result["prompts"] == ["the dog sat on 12"] and len(result["text"]) == 1


def test_a_batch_file_holds_one_prompt_per_non_empty_line(files, tmp_path):
    tok = tokenizer_lib.load(files["tokenizer"])
    (tmp_path / "prompts.txt").write_text("the cat sat\n\n  the dog sat on 12\n")
    args = generate.parse_args(["--checkpoint=x", f"--batch_file={tmp_path / 'prompts.txt'}"])
    assert generate.read_prompts(args, tok) == [tok.encode("the cat sat", bos=True),
                                                tok.encode("  the dog sat on 12", bos=True)]


def test_bad_input_is_one_error_line(files, workdir, tmp_path, capsys):
    orbax = f"--checkpoint={files['orbax']}"
    cases = [
        ((orbax, "--prompt_ids=" + ",".join(["1"] * 64)), 1, "prompt 0 has 64 tokens but the model's context is max_seq_len=64"),
        ((orbax, "--prompt=hi", f"--tokenizer={files['small_tokenizer']}"), 1, "has 200 pieces but the model has vocab_size=256"),
        ((f"--checkpoint={workdir}", "--prompt=hi"), 1, "comes with no tokenizer to encode text prompts"),
        ((f"--checkpoint={tmp_path}", "--prompt=hi"), 1, "is not a checkpoint llama_jax reads"),
        ((orbax, "--prompt=hi", "--prompt_ids=1"), 2, "give exactly one of --prompt, --batch_file, --prompt_ids"),
        ((orbax, "--prompt_ids=1,x"), 2, "is not comma-separated integers"),
        ((orbax, "--prompt=hi", "--top_k=-1"), 1, "top_k=-1 must be >= 0"),
    ]
    broken = tmp_path / "broken"  # a config that does not describe the saved tensors
    shutil.copytree(files["orbax"], broken)
    with open(broken / "model_config.json") as f:
        fields = json.load(f)
    with open(broken / "model_config.json", "w") as f:
        json.dump(fields | {"dim": 32}, f)
    cases.append(((f"--checkpoint={broken}", "--prompt=hi"), 1, "has shape"))
    run = str(tmp_path / "run")
    shutil.copytree(workdir, run)
    _edit_saved_config(run, lambda c: c["model"].update(n_layers=3))
    cases.append(((f"--checkpoint={run}", "--prompt_ids=1"), 1, "does not match the model config saved with it"))
    for args, status, message in cases:
        code, err = _error(capsys, *args)
        assert code == status and message in err and err.startswith("error: ") and err.count("\n") == 1, (args, err)
