"""Where each source's documents come from (source specs) and the checked sampling weights of a mixture; Table 1's
sources and the default corpus are in llama_jax.corpus_spec.

A source spec (`config.data.sources.<name>`) says how to read a source:
  ""                         the embedded corpus: `<corpus_dir>/<name>/{split}-*.jsonl` (built by `make corpus`)
  "jsonl:<glob>"             JSON lines with a "text" field; `{split}` in the glob becomes train/validation
  "tfrecord:<glob>"          tf.train.Example records with a "text" bytes feature
  "tfds:<name>[?train=<split>&validation=<split>&text=<feature>&data_dir=<dir>]"   a prepared TFDS dataset
  "pretokenized:<dir>"       token shards written by `python -m data_pipeline.pretokenize`
Paths may be local or `gs://` (everything goes through `tf.io.gfile`).
"""

from __future__ import annotations

import dataclasses
import math
import urllib.parse
from collections.abc import Mapping

from llama_jax.corpus_spec import SOURCE_NAMES, TABLE1

SPLITS = ("train", "validation")
KINDS = ("corpus", "jsonl", "tfrecord", "tfds", "pretokenized")


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """Where one source's documents live: `kind` is one of KINDS, `location` a glob, directory or TFDS name."""

    name: str
    kind: str
    location: str
    options: Mapping[str, str] = dataclasses.field(default_factory=dict)


def parse_spec(name: str, spec: str, corpus_dir: str) -> SourceSpec:
    """Turns the config string `spec` of source `name` into a SourceSpec (see the module docstring)."""
    if not spec:
        return SourceSpec(name, "corpus", f"{corpus_dir.rstrip('/')}/{name}")
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in KINDS or not rest:
        raise ValueError(
            f"data.sources.{name}={spec!r} is not a source spec; expected '' (embedded corpus) or "
            f"'<kind>:<location>' with kind one of {KINDS[1:]}, e.g. 'jsonl:gs://bucket/c4/{{split}}-*.json.gz'")
    options: dict[str, str] = {}
    if kind == "tfds":
        rest, _, query = rest.partition("?")
        options = dict(urllib.parse.parse_qsl(query))
        unknown = set(options) - {"train", "validation", "text", "data_dir"}
        if unknown:
            raise ValueError(f"data.sources.{name}={spec!r}: unknown TFDS options {sorted(unknown)}; "
                             "allowed: train, validation, text, data_dir")
    if kind == "pretokenized":
        rest = rest.rstrip("/")
    return SourceSpec(name, kind, rest, options)


def mixture_weights(weights: Mapping[str, float], sources: Mapping[str, str], *,
                    normalize: bool = False) -> dict[str, float]:
    """Checked sampling weights of the sources with weight > 0; they must sum to 1 unless `normalize`."""
    weights = {name: float(w) for name, w in weights.items()}
    for name, w in weights.items():
        if name not in TABLE1 and not sources.get(name):
            raise ValueError(
                f"data.weights has a weight for unknown source {name!r}; known sources are {list(TABLE1)} "
                f"(or give its location in data.sources.{name})")
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"data.weights.{name}={w} must be a finite number >= 0")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"data.weights {weights} give no source a positive weight")
    if not normalize and abs(total - 1.0) > 1e-6:
        raise ValueError(
            f"data.weights sum to {total:.6f}, expected 1 (weights: {weights}); fix them or set "
            "data.normalize_weights=True to divide them by their sum")
    order = sorted(weights, key=lambda n: (SOURCE_NAMES.index(n) if n in TABLE1 else len(TABLE1), n))
    return {name: weights[name] / total for name in order if weights[name] > 0}  # in Table 1's order


def subsample_fractions(subsample: Mapping[str, float], weights: Mapping[str, float]) -> dict[str, float]:
    """The fraction of each weighted source's training documents the stream keeps (`data.subsample`, default 1
    for every source): a fixed subset chosen by a hash of each document, the same in every epoch, so that a
    proxy run repeats a source as often as a run on `1 / fraction` times its tokens would (arXiv 2606.07597)."""
    fractions = {name: 1.0 for name in weights}
    for name, value in subsample.items():
        value = float(value)
        if name not in TABLE1 and name not in weights:
            raise ValueError(f"data.subsample has a fraction for unknown source {name!r}; known sources are "
                             f"{list(TABLE1)}")
        if not (math.isfinite(value) and 0 < value <= 1):
            raise ValueError(f"data.subsample.{name}={value} must be a fraction in (0, 1] of the source's documents")
        if name in fractions:
            fractions[name] = value
    return fractions


def implied_epochs(weights: Mapping[str, float], tokens: float,
                   unique_tokens: Mapping[str, float | None]) -> dict[str, float | None]:
    """Epochs of each source that training on `tokens` tokens drawn with `weights` implies (Table 1's column):
    its share of the tokens over its unique tokens; None where the source's size is unknown."""
    total = sum(weights.values())
    return {name: weight / total * tokens / unique_tokens[name] if unique_tokens.get(name) else None
            for name, weight in weights.items()}
