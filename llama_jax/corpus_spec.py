"""The facts about the pre-training corpus that both llama_jax and data_pipeline need: Table 1's seven sources
with their sampling proportions and epochs, and where the default corpus and its tokenizer live. llama_jax
reads them here, so it never imports data_pipeline (which builds and streams the corpus)."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping

# Table 1 of the paper: sampling proportion and epochs over 1.4T tokens.
TABLE1 = {
    "commoncrawl": (0.67, 1.10),
    "c4": (0.15, 1.06),
    "github": (0.045, 0.64),
    "wikipedia": (0.045, 2.45),
    "books": (0.045, 2.23),
    "arxiv": (0.025, 1.06),
    "stackexchange": (0.02, 1.03),
}
SOURCE_NAMES = tuple(TABLE1)
LLAMA_MIXTURE = {name: weight for name, (weight, _) in TABLE1.items()}  # the sampling proportions alone
DEFAULT_CORPUS = str(pathlib.Path(__file__).resolve().parents[1] / ".cache" / "corpus")  # built by `make corpus`


def corpus_dir(data: Mapping) -> str:
    """The corpus directory of a config's `data` section (a ConfigDict, or the dict a checkpoint saved)."""
    return data.get("corpus_dir", "") or DEFAULT_CORPUS


def tokenizer_path(data: Mapping) -> str:
    """The SentencePiece model of a config's `data` section: `data.tokenizer`, or when "" the corpus's own."""
    return data.get("tokenizer", "") or f"{corpus_dir(data)}/tokenizer.model"


def table1_unique_tokens(total_tokens: float = 1.4e12) -> dict[str, float]:
    """Unique tokens of each LLaMA source, from Table 1: its share of the 1.4T tokens over its epochs."""
    return {name: weight * total_tokens / epochs for name, (weight, epochs) in TABLE1.items()}
