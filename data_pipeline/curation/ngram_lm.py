"""An n-gram language model with interpolated modified Kneser-Ney smoothing (Chen & Goodman 1998), written as
ARPA for KenLM to score: CCNet's quality signal (Wenzek et al. 2020, §3.3) trained on a reference corpus.

KenLM's Python module builds from its sdist but has no trainer (`lmplz` is a separate C++ build), so the
counts, discounts and backoffs are computed here, in plain Python, the way `lmplz` does: the highest order
keeps raw counts, lower orders use continuation counts (the number of distinct words seen before the n-gram)
except n-grams that start with <s>, which have no left context and keep raw counts; three discounts per order
from the count-of-counts; unigrams interpolated with the uniform distribution over the vocabulary and <unk>.
In ARPA form each n-gram carries its interpolated log10 probability and each context its backoff weight
(gamma(h), the mass its discounts freed), so that KenLM's backoff arithmetic gives back the interpolated model.

Text is tokenised as CCNet does: each line normalised (lowercase, accents stripped, digits to 0, Unicode
punctuation to ASCII, control characters removed) and split into SentencePiece pieces of a model trained on
the same reference text; a line is a sentence.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator

from data_pipeline.curation.dedup import CCNET_PUNCT

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
# CCNet text_normalizer.UNICODE_PUNCT: each mapped to its ASCII counterpart (normalize(punct=1)).
_CCNET_ASCII = [",", ".", ",", '"', '"', '"', '"', '"', '"', '"', '"', '"', '"', "'", ":", ":", "?", "!", "(", ")", ";",
                "-", " - ", ". ", "~", "'", "...", "-", "<", ">", "[", "]", "%", "-"]
_PUNCT_TO_ASCII = dict(zip(CCNET_PUNCT, _CCNET_ASCII, strict=True))
_CONTROL = re.compile(f"[{''.join(map(chr, list(range(32)) + list(range(127, 160))))}]")
_DIGIT = re.compile(r"\d")
# Fallback discounts when a tiny corpus lacks some count-of-counts (lmplz refuses such data instead).
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)


def normalize(line: str) -> str:
    """CCNet's `text_normalizer.normalize` (accent, case, numbers, punct=1): the text the LM sees."""
    line = line.strip().lower()
    line = "".join(c for c in unicodedata.normalize("NFD", line) if unicodedata.category(c) != "Mn")
    line = _DIGIT.sub("0", line)
    line = "".join(_PUNCT_TO_ASCII.get(c, c) for c in line)
    return _CONTROL.sub("", line)


def train_tokenizer(lines: Iterable[str], model_prefix: str, vocab_size: int) -> None:
    """A SentencePiece unigram model (CCNet's LM tokenizer) on the normalised `lines`: `model_prefix`.model."""
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([normalize(line) for line in lines if line.strip()]), model_prefix=model_prefix,
        model_type="unigram", vocab_size=vocab_size, character_coverage=0.9999, input_sentence_size=1_000_000,
        shuffle_input_sentence=True, num_threads=1, minloglevel=2, bos_id=-1, eos_id=-1, unk_id=0)


def sentences(text: str, sp) -> Iterator[list[str]]:
    """The tokenised sentences (one per non-blank line) of `text`, as the LM sees them."""
    for line in text.split("\n"):
        normalized = normalize(line)
        if normalized:
            yield sp.encode(normalized, out_type=str)


# ---------------------------------------------------------------------------------------------- counting
def count_ngrams(corpus: Iterable[list[str]], order: int) -> list[Counter]:
    """Kneser-Ney adjusted counts [order 1, ..., order `order`]: raw counts at the top order and for n-grams
    starting with <s>; elsewhere the number of distinct words preceding the n-gram."""
    raw = Counter()
    bos_raw: list[Counter] = [Counter() for _ in range(order)]
    for tokens in corpus:
        padded = [BOS, *tokens, EOS]
        for i in range(len(padded)):
            top = tuple(padded[max(0, i - order + 1): i + 1])
            if len(top) == order:
                raw[top] += 1
            else:  # a shorter n-gram that starts at <s>: no higher order covers it
                bos_raw[len(top) - 1][top] += 1
    counts = [Counter() for _ in range(order)]
    counts[order - 1] = raw
    for n in range(order - 1, 0, -1):  # continuation counts of order n from the distinct n-grams of order n + 1
        for gram in counts[n]:
            if gram[1:][0] != BOS:
                counts[n - 1][gram[1:]] += 1
        counts[n - 1].update(bos_raw[n - 1])
    counts[0].pop((BOS,), None)
    return counts


def discounts(counts: Counter) -> tuple[float, float, float]:
    """Modified Kneser-Ney discounts (D1, D2, D3+) of one order from its count-of-counts (Chen & Goodman eq. 26)."""
    n = Counter(min(c, 4) for c in counts.values())
    if not all(n[k] for k in (1, 2, 3, 4)):
        return FALLBACK_DISCOUNTS
    y = n[1] / (n[1] + 2 * n[2])
    d = (1 - 2 * y * n[2] / n[1], 2 - 3 * y * n[3] / n[2], 3 - 4 * y * n[4] / n[3])
    return d if all(0 < x < k + 1 for k, x in enumerate(d)) else FALLBACK_DISCOUNTS


def _discount(count: int, d: tuple[float, float, float]) -> float:
    return d[min(count, 3) - 1]


# ---------------------------------------------------------------------------------------------- the model
def estimate(counts: list[Counter]) -> tuple[list[dict], list[dict]]:
    """Interpolated modified Kneser-Ney: (log10 p of every n-gram per order, log10 backoff of every context)."""
    order = len(counts)
    probs: list[dict] = [dict() for _ in range(order)]
    backoffs: list[dict] = [dict() for _ in range(order)]
    vocab = [g[0] for g in counts[0]] + [UNK]
    for n in range(order):
        d = discounts(counts[n])
        totals: dict[tuple, int] = defaultdict(int)
        freed: dict[tuple, float] = defaultdict(float)
        for gram, c in counts[n].items():
            totals[gram[:-1]] += c
            freed[gram[:-1]] += _discount(c, d)
        gamma = {h: freed[h] / totals[h] for h in totals}
        for gram, c in counts[n].items():
            h = gram[:-1]
            lower = 10 ** probs[n - 1][gram[1:]] if n else 1.0 / len(vocab)
            probs[n][gram] = math.log10((c - _discount(c, d)) / totals[h] + gamma[h] * lower)
        if n == 0:
            probs[0][(UNK,)] = math.log10(gamma[()] / len(vocab))
            probs[0][(BOS,)] = -99.0  # never predicted; present as a context
        else:
            for h, g in gamma.items():
                backoffs[n - 1][h] = math.log10(g)
    return probs, backoffs


def write_arpa(probs: list[dict], backoffs: list[dict], path: str) -> None:
    """Writes the model in ARPA format (what KenLM's `kenlm.Model` loads)."""
    order = len(probs)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n\\data\\\n")
        for n in range(order):
            f.write(f"ngram {n + 1}={len(probs[n])}\n")
        for n in range(order):
            f.write(f"\n\\{n + 1}-grams:\n")
            for gram in sorted(probs[n]):
                line = f"{probs[n][gram]:.6f}\t{' '.join(gram)}"
                if n < order - 1 and gram in backoffs[n]:
                    line += f"\t{backoffs[n][gram]:.6f}"
                elif n < order - 1 and gram == (BOS,):
                    line += "\t0.0"
                f.write(line + "\n")
        f.write("\n\\end\\\n")


def train_arpa(corpus: Iterable[list[str]], order: int, path: str) -> dict[str, int]:
    """Counts, estimates and writes an order-`order` model of the tokenised `corpus` to `path`; returns the
    number of n-grams per order."""
    if order < 2:
        raise ValueError(f"n-gram order {order}; expected >= 2")
    probs, backoffs = estimate(count_ngrams(corpus, order))
    write_arpa(probs, backoffs, path)
    return {f"{n + 1}-grams": len(p) for n, p in enumerate(probs)}
