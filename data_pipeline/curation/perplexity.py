"""CCNet's quality buckets (Wenzek et al. 2020, §3.3): a page's perplexity under an n-gram model of a reference
corpus (Wikipedia), and head / middle / tail buckets at the 30th and 60th percentiles of the scores.

CCNet scores each line (normalised, SentencePiece pieces) with KenLM and reports the page's perplexity
10^(-sum log10 p / sum tokens), counting each line's </s>. Its English cutoffs (340, 520) belong to its own
model; here the cutoffs are the percentiles of the scores of the data being curated (CCNet's definition of
them), computed by Beam's ApproximateQuantiles (exact on small inputs), and RedPajama keeps head and middle.
"""

from __future__ import annotations

import functools

import apache_beam as beam

from data_pipeline.curation import ngram_lm
from data_pipeline.curation.io import local_path
from data_pipeline.curation.stages import DROPPED, Doc, count, drop, kept

BUCKETS = ("head", "middle", "tail")


@functools.cache
def load(tokenizer_path: str, arpa_path: str):
    """(SentencePiece processor, kenlm.Model) of the reference LM, loaded once per process."""
    import kenlm
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=local_path(tokenizer_path))
    return sp, kenlm.Model(local_path(arpa_path))


def perplexity(text: str, sp, lm) -> float:
    """The page's perplexity under `lm`, CCNet's way (lines as sentences, </s> counted), rounded to 0.1."""
    log10_prob, tokens = 0.0, 0
    for pieces in ngram_lm.sentences(text, sp):
        log10_prob += lm.score(" ".join(pieces), bos=True, eos=True)
        tokens += len(pieces) + 1
    return round(10.0 ** (-log10_prob / tokens), 1) if tokens else float("inf")


def bucket(score: float, head_below: float, tail_from: float) -> str:
    """CCNet's bucket of a perplexity: head < head_below <= middle < tail_from <= tail."""
    return "head" if score < head_below else "middle" if score < tail_from else "tail"


def cutoffs(quantiles: list[float], head_percentile: int, tail_percentile: int) -> tuple[float, float]:
    """(head_below, tail_from) from the 101 percentiles [0, 1, ..., 100] of the scores."""
    return quantiles[head_percentile], quantiles[tail_percentile]


class Buckets(beam.PTransform):
    """Puts each document (with `meta["perplexity"]`) in its bucket at the data's percentiles and keeps the
    `keep` buckets; counts the others as `<name>/dropped/perplexity_<bucket>` and records the cutoffs as
    counters `<name>/head_below_x10` and `<name>/tail_from_x10` (perplexity x 10, integers)."""

    def __init__(self, source: str, name: str, head_percentile: int, tail_percentile: int, keep: tuple[str, ...]):
        super().__init__()
        if not 0 <= head_percentile <= tail_percentile <= 100:
            raise ValueError(f"perplexity percentiles {head_percentile}, {tail_percentile}; expected "
                             "0 <= head <= tail <= 100")
        unknown = set(keep) - set(BUCKETS)
        if unknown:
            raise ValueError(f"perplexity buckets to keep {sorted(unknown)} are not among {BUCKETS}")
        self.source, self.name, self.keep = source, name, tuple(keep)
        self.percentiles = (head_percentile, tail_percentile)

    def expand(self, docs: beam.PCollection) -> beam.PCollection:
        quantiles = (docs | "Scores" >> beam.Map(lambda doc: doc["meta"]["perplexity"])
                     | "Percentiles" >> beam.ApproximateQuantiles.Globally(101))
        limits = beam.pvalue.AsSingleton(
            quantiles | "Cutoffs" >> beam.Map(self._cutoffs, self.source, self.name, self.percentiles))
        return kept(docs | "Bucket" >> beam.FlatMap(_keep_bucket, limits, self.source, self.name, self.keep)
                    .with_outputs(DROPPED, main="docs"), self.source)

    @staticmethod
    def _cutoffs(quantiles: list[float], source: str, name: str, percentiles: tuple[int, int]) -> tuple[float, float]:
        if not quantiles:  # no documents: nothing to bucket
            return float("inf"), float("inf")
        head_below, tail_from = cutoffs(quantiles, *percentiles)
        count(source, f"{name}/head_below_x10", round(10 * head_below))
        count(source, f"{name}/tail_from_x10", round(10 * tail_from))
        return head_below, tail_from


def _keep_bucket(doc: Doc, limits: tuple[float, float], source: str, name: str, keep: tuple[str, ...]):
    which = bucket(doc["meta"]["perplexity"], *limits)
    if which in keep:
        yield {**doc, "meta": {**doc["meta"], "bucket": which}}
    else:
        yield drop(source, name, doc["id"], f"perplexity_{which}")
