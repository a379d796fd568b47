"""Converting holds about one copy of the weights: peak anonymous memory of load_meta / load_hf, measured in a
fresh process on a 168M-parameter checkpoint (slow: it writes about 1 GB to disk)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RssAnon from /proc")]

PARAMS_JSON = {"dim": 1024, "multiple_of": 256, "n_heads": 8, "n_layers": 8, "norm_eps": 1e-6, "vocab_size": 32000}

# Runs in a fresh process: import everything, then sample RssAnon (file-backed mmap pages are page cache, not
# a copy) every millisecond while converting; print the peak above the starting point, in bytes.
MEASURE = textwrap.dedent("""
    import json, sys, threading, time
    from llama_jax import convert

    def rss_anon():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))

    start, peak, done = rss_anon(), [0], []
    def sample():
        while not done:
            peak[0] = max(peak[0], rss_anon())
            time.sleep(0.001)
    thread = threading.Thread(target=sample)
    thread.start()
    config, params = getattr(convert, sys.argv[1])(sys.argv[2])
    done.append(True)
    thread.join()
    print(json.dumps({"peak_bytes": peak[0] - start, "weights_bytes": sum(x.nbytes for x in
                      __import__("jax").tree.leaves(params))}))
""")


def _measure(loader: str, path: str) -> dict:
    result = subprocess.run([sys.executable, "-c", MEASURE, loader, path], capture_output=True, text=True,
                            check=True, env=os.environ | {"JAX_PLATFORMS": "cpu"})
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_conversion_peak_memory_is_about_one_copy_of_the_weights(tmp_path):
    from llama_jax.convert import formats as convert
    from llama_jax.convert.layout import meta_names, meta_shape
    from llama_jax.model.llama import count_params

    config = convert.config_from_params_json(PARAMS_JSON)
    meta = tmp_path / "meta"
    meta.mkdir()
    (meta / "params.json").write_text(json.dumps(PARAMS_JSON))
    generator = torch.Generator().manual_seed(0)
    shards = [{}, {}]
    for name in meta_names(config):  # fp16 like the LLaMA-1 release, split as its two-rank 13B files are
        tensor = torch.randn(meta_shape(config, name), generator=generator).to(torch.float16)
        axis = 1 if "wo" in name or "w2" in name or "tok_embeddings" in name else 0
        for rank in range(2):
            shards[rank][name] = tensor.clone() if tensor.ndim == 1 else tensor.chunk(2, dim=axis)[rank].clone()
    for rank, shard in enumerate(shards):
        torch.save(shard, meta / f"consolidated.{rank:02d}.pth")
    del shards

    # One float32 copy of the weights, plus tensors in transit: at most twice the largest one (the embedding, 131
    # MB here; 1 GB of 260 GB for the 65B model).
    largest = 4 * config.vocab_size * config.dim
    loaded = _measure("load_meta", str(meta))
    assert loaded["weights_bytes"] == 4 * count_params(config) == 4 * 168_313_856
    assert loaded["peak_bytes"] < loaded["weights_bytes"] + 2 * largest, loaded

    convert.convert("meta", "hf", str(meta), str(tmp_path / "hf"), dtype="float32")
    loaded_hf = _measure("load_hf", str(tmp_path / "hf"))
    assert loaded_hf["peak_bytes"] < loaded_hf["weights_bytes"] + 2 * largest, loaded_hf
    print(f"peak anonymous memory above start: load_meta {loaded['peak_bytes'] / 2**20:.0f} MiB, "
          f"load_hf {loaded_hf['peak_bytes'] / 2**20:.0f} MiB; weights {loaded['weights_bytes'] / 2**20:.0f} MiB")
