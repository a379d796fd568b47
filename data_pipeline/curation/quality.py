"""The paper's quality filter (§2.1): a linear classifier of "pages used as references in Wikipedia v.s. randomly
sampled pages", fastText-style, as RedPajama trained it (keep pages with p(reference) >= 0.25).

The features are fastText's: lowercased word unigrams and bigrams, hashed into `buckets` slots (CRC-32, stable
across processes) and averaged over the page (a bag of n-grams normalised to sum 1, which is what fastText's
averaged input embeddings feed its linear layer). The model is a logistic regression on them with an L2
penalty, fitted by L-BFGS (scipy) in full batch: deterministic, and a few seconds for thousands of pages.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence

import numpy as np

WORD = re.compile(r"\w+")
DEFAULT_BUCKETS = 1 << 18


def ngram_ids(text: str, buckets: int) -> np.ndarray:
    """Hashed slots of the page's word unigrams and bigrams (lowercased), one per occurrence [n] int64."""
    words = WORD.findall(text.lower())
    grams = words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]
    return np.array([zlib.crc32(g.encode("utf-8")) % buckets for g in grams], np.int64)


def features(texts: Sequence[str], buckets: int):
    """[pages, buckets] sparse matrix (scipy CSR) of averaged hashed n-gram counts."""
    from scipy import sparse

    rows, cols, vals = [], [], []
    for i, text in enumerate(texts):
        ids = ngram_ids(text, buckets)
        if len(ids):
            slots, counts = np.unique(ids, return_counts=True)
            rows.append(np.full(len(slots), i))
            cols.append(slots)
            vals.append(counts / len(ids))
    if not rows:
        return sparse.csr_matrix((len(texts), buckets))
    return sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(len(texts), buckets))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


class Classifier:
    """p(reference | page) = sigmoid(w . features(page) + b)."""

    def __init__(self, weights: np.ndarray, bias: float):
        self.weights, self.bias, self.buckets = np.asarray(weights, np.float64), float(bias), len(weights)

    @classmethod
    def fit(cls, texts: Sequence[str], labels: Sequence[int], buckets: int = DEFAULT_BUCKETS,
            l2: float = 1e-4, max_iter: int = 500) -> Classifier:
        """Logistic regression (labels 1 = reference, 0 = random page), mean log-loss + l2/2 |w|^2, by L-BFGS."""
        from scipy import optimize

        x, y = features(texts, buckets), np.asarray(labels, np.float64)
        if set(np.unique(y)) != {0.0, 1.0}:
            raise ValueError(f"the classifier needs pages of both classes; got labels {sorted(set(labels))}")

        def loss_and_grad(params):
            w, b = params[:-1], params[-1]
            z = x @ w + b
            p = _sigmoid(z)
            # log(1 + e^z) - y z, stably
            loss = np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * w @ w
            residual = (p - y) / len(y)
            return loss, np.concatenate([x.T @ residual + l2 * w, [residual.sum()]])

        result = optimize.minimize(loss_and_grad, np.zeros(buckets + 1), jac=True, method="L-BFGS-B",
                                   options={"maxiter": max_iter})
        return cls(result.x[:-1], result.x[-1])

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """p(reference) of each page [pages]."""
        return _sigmoid(features(texts, self.buckets) @ self.weights + self.bias)

    def probability(self, text: str) -> float:
        """p(reference) of one page (newlines are word separators, as RedPajama's collapsing to spaces)."""
        ids = ngram_ids(text, self.buckets)
        if not len(ids):
            return float(_sigmoid(np.array(self.bias)))
        return float(_sigmoid(self.weights[ids].mean() + self.bias))

    def save(self, path: str, info: dict) -> None:
        """Writes the weights (`path`, .npz) and `info` (held-out accuracy, data) beside them as JSON."""
        np.savez(path, weights=self.weights.astype(np.float32), bias=np.array(self.bias))
        with open(path.removesuffix(".npz") + ".json", "w") as f:
            json.dump(info, f, indent=1)

    @classmethod
    def load(cls, path: str) -> Classifier:
        """The classifier `save` wrote."""
        with np.load(path) as data:
            return cls(data["weights"], float(data["bias"]))
