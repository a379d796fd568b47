"""Text <-> token ids for generation and evaluation: a SentencePiece model file or a Hugging Face tokenizer.

    tok = tokenizer.load("tokenizer.model", vocab_size=config.vocab_size)   # or an HF tokenizer directory
    ids = tok.encode("The capital of France is", bos=True)                  # the reference's prompt: BOS, no EOS
    text = tok.decode(ids)

`load` checks the vocabulary against the model's: a tokenizer of another size would index the wrong embedding
rows. `data_pipeline.spm_tokenizer` reads its SentencePiece files through `sentencepiece_processor`, so training
and generation refuse the same mismatches with the same message. No TensorFlow here; transformers is imported
only for a Hugging Face directory.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

import sentencepiece as spm

# Files that make a directory a Hugging Face tokenizer (AutoTokenizer.from_pretrained reads it).
HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


class Tokenizer(Protocol):
    """What generation and evaluation need from a tokenizer."""

    name: str  # the path it was loaded from
    add_bos: bool  # whether a text is encoded after BOS, the tokenizer's own setting (lm-evaluation-harness's rule)
    bos_id: int
    eos_id: int
    vocab_size: int

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids of `text`, with BOS prepended and EOS appended when asked."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """The text of `ids`; BOS, EOS and other control tokens are dropped."""
        ...


def check_vocab_size(found: int, vocab_size: int | None, name: str) -> None:
    """Raise when a tokenizer of `found` pieces (loaded from `name`) meets a model of another `vocab_size`."""
    if vocab_size is not None and found != vocab_size:
        raise ValueError(
            f"tokenizer {name} has {found} pieces but the model has vocab_size={vocab_size}; use the tokenizer "
            f"the model was trained with, or (training) set config.model.vocab_size={found} or build a tokenizer "
            f"of {vocab_size} pieces (`python -m data_pipeline.corpus --vocab_size={vocab_size}`)"
        )


def sentencepiece_processor(proto: bytes, name: str, vocab_size: int | None = None) -> spm.SentencePieceProcessor:
    """The SentencePiece model serialized in `proto` (read from `name`), checked against `vocab_size` and for
    the BOS/EOS pieces that prompts and document packing need."""
    sp = spm.SentencePieceProcessor(model_proto=proto)
    check_vocab_size(sp.vocab_size(), vocab_size, name)
    if sp.bos_id() < 0 or sp.eos_id() < 0:
        raise ValueError(f"tokenizer {name} has no BOS/EOS pieces (bos={sp.bos_id()}, eos={sp.eos_id()}); "
                         "prompts and document packing need both")
    return sp


class SentencePieceTokenizer:
    """A SentencePiece model (the paper's BPE tokenizer, Meta's `tokenizer.model`); texts are encoded after BOS
    unless `add_bos` is False, as Meta's reference and the harness's `hf` backend with LLaMA's tokenizer do."""

    def __init__(self, sp: spm.SentencePieceProcessor, name: str, add_bos: bool = True):
        self.sp, self.name, self.add_bos = sp, name, add_bos
        self.bos_id, self.eos_id, self.vocab_size = sp.bos_id(), sp.eos_id(), sp.vocab_size()

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        return self.sp.encode(text, add_bos=bos, add_eos=eos)

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([int(i) for i in ids])


class HuggingFaceTokenizer:
    """A `transformers.AutoTokenizer` directory; the vocabulary counts its added tokens (`len(tokenizer)`).

    BOS goes before a text when the tokenizer's own encoding puts it there (LLaMA's does; a GPT-2-style byte-level
    BPE does not), or as `add_bos` forces: lm-evaluation-harness's `hf` backend passes its `add_bos_token` to
    the tokenizer the same way and encodes with the tokenizer's special tokens."""

    def __init__(self, path: str, add_bos: bool | None = None):
        from transformers import AutoTokenizer

        options = {} if add_bos is None else {"add_bos_token": add_bos}
        self.hf, self.name = AutoTokenizer.from_pretrained(path, **options), path
        self.vocab_size = len(self.hf)
        self.bos_id, self.eos_id = self.hf.bos_token_id, self.hf.eos_token_id
        if self.bos_id is None or self.eos_id is None:
            raise ValueError(f"tokenizer {path} has no BOS/EOS token (bos={self.bos_id}, eos={self.eos_id}); "
                             "prompts need both")
        special = self.hf.encode("a", add_special_tokens=True if add_bos is None else add_bos)
        self.add_bos = special[:1] == [self.bos_id]

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        ids = self.hf.encode(text, add_special_tokens=False)
        return [self.bos_id] * bos + ids + [self.eos_id] * eos

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=True)


def load(path: str, vocab_size: int | None = None, add_bos: bool | None = None) -> Tokenizer:
    """The tokenizer at `path` (a SentencePiece model file or a Hugging Face tokenizer directory), checked
    against the model's `vocab_size` when given; `add_bos` forces BOS before texts on or off (default: the
    tokenizer's own setting; a SentencePiece model adds it)."""
    if os.path.isdir(path):
        if not any(os.path.isfile(os.path.join(path, f)) for f in HF_TOKENIZER_FILES):
            raise FileNotFoundError(f"tokenizer directory {path} has none of {HF_TOKENIZER_FILES}; give a "
                                    "Hugging Face tokenizer directory or a SentencePiece model file")
        tok = HuggingFaceTokenizer(path, add_bos)
        check_vocab_size(tok.vocab_size, vocab_size, path)
        return tok
    if not os.path.isfile(path):
        raise FileNotFoundError(f"tokenizer {path} does not exist; give a SentencePiece model file "
                                "(e.g. tokenizer.model) or a Hugging Face tokenizer directory")
    with open(path, "rb") as f:
        proto = f.read()
    try:
        sp = sentencepiece_processor(proto, path, vocab_size)
    except RuntimeError as error:  # SentencePiece's parse failure
        raise ValueError(f"tokenizer {path} is not a SentencePiece model: {error}") from error
    return SentencePieceTokenizer(sp, path, add_bos=True if add_bos is None else add_bos)
