"""The scaling study's tokenizer and what the bundled corpus weighs in it.

    python -m experiments.study_tokenizer --vocab_size=2048 --out=.cache/study/tokenizer_2048

The tokenizer is the corpus's own recipe (data_pipeline.corpus: SentencePiece BPE, digits split, byte fallback,
trained on the same Table-1-weighted sample) with a smaller vocabulary: the output layer costs 6 x dim x vocab
FLOPs per token, so with the corpus's 8192 pieces it would be most of a small model's compute (see
experiments/configs/cpu_sweep.py). It is written next to the corpus, never into it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile

from data_pipeline import corpus
from llama_jax import cli


def build(corpus_dir: str, out_prefix: str, vocab_size: int, threads: int = 2) -> str:
    """Train the tokenizer on `corpus_dir`'s sample into `out_prefix`.model; returns its path.

    A tokenizer already there is kept if it was trained on this corpus (`out_prefix`.corpus records the
    manifest's shard hashes and the vocabulary size) and retrained otherwise: a rebuilt corpus gets its own."""
    path, stamp_path = f"{out_prefix}.model", f"{out_prefix}.corpus"
    if os.path.realpath(path).startswith(os.path.realpath(corpus_dir) + os.sep):
        raise ValueError(f"--out={out_prefix} is inside the corpus {corpus_dir}, which is never written to; "
                         "choose a path beside it, e.g. .cache/study/tokenizer_2048")
    manifest_path = os.path.join(corpus_dir, "manifest.json")
    if not os.path.exists(manifest_path):
        raise FileNotFoundError(f"{manifest_path} does not exist: build the corpus first (make corpus)")
    with open(manifest_path) as f:
        manifest = json.load(f)
    stamp = {"corpus": hashlib.sha256(json.dumps(manifest["sources"], sort_keys=True).encode()).hexdigest(),
             "vocab_size": vocab_size}
    if os.path.exists(path) and os.path.exists(stamp_path):
        with open(stamp_path) as f:
            if json.load(f) == stamp:
                return path
    os.makedirs(os.path.dirname(os.path.abspath(out_prefix)), exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        corpus.tokenizer_sample(corpus_dir, manifest, f"{tmp}/sample.txt", corpus.TOKENIZER_SAMPLE_BYTES)
        corpus.train_tokenizer(f"{tmp}/sample.txt", f"{tmp}/tokenizer", vocab_size, threads)
        os.replace(f"{tmp}/tokenizer.model", path)  # whole or not at all
    with open(f"{stamp_path}.tmp", "w") as f:
        json.dump(stamp, f)
    os.replace(f"{stamp_path}.tmp", stamp_path)
    return path


def corpus_tokens(corpus_dir: str, tokenizer_path: str, sample_bytes: int = 1 << 18) -> dict[str, float]:
    """Training tokens of each source of the corpus under the tokenizer: its train bytes (manifest) times the
    tokens per byte of the first `sample_bytes` of its first train shard."""
    import sentencepiece as spm

    with open(os.path.join(corpus_dir, "manifest.json")) as f:
        manifest = json.load(f)
    sp = spm.SentencePieceProcessor(model_file=tokenizer_path)
    tokens = {}
    for name, source in manifest["sources"].items():
        train = source["splits"]["train"]
        texts, size = [], 0
        with open(os.path.join(corpus_dir, train["shards"][0]["path"]), encoding="utf-8") as f:
            for line in f:
                texts.append(json.loads(line)["text"])
                size += len(texts[-1].encode())
                if size >= sample_bytes:
                    break
        per_byte = sum(len(ids) + 2 for ids in sp.encode(texts)) / size  # + BOS and EOS per document
        tokens[name] = train["bytes"] * per_byte
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.study_tokenizer", description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=".cache/corpus", help="the corpus directory (make corpus)")
    parser.add_argument("--vocab_size", type=int, default=2048)
    parser.add_argument("--out", default=".cache/study/tokenizer_2048", help="model prefix (.model is added)")
    args = parser.parse_args()
    path = build(args.corpus, args.out, args.vocab_size)
    for name, count in corpus_tokens(args.corpus, path).items():
        print(f"{name:14s} {count / 1e6:8.2f}M tokens")


if __name__ == "__main__":
    cli.run(main)
