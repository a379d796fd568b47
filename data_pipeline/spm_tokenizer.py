"""The SentencePiece tokenizer (§2.1: BPE, digits split, byte fallback) and the batch encoder the tf.data graph calls."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import sentencepiece as spm

from llama_jax.inference.tokenizer import sentencepiece_processor

# What the encoder counts about the documents it is given, in this order (see `encode_batch`).
COUNTERS = ("docs", "invalid_utf8", "malformed", "empty", "split_long")


def load(path: str, vocab_size: int | None = None) -> spm.SentencePieceProcessor:
    """The SentencePiece model at `path` (local or gs://), checked against the model's `vocab_size` by the
    check generation uses too (`llama_jax.inference.tokenizer.sentencepiece_processor`)."""
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"tokenizer {path!r} does not exist; run `make corpus` to build the default one "
                                "or set config.data.tokenizer to a SentencePiece model (e.g. Meta's tokenizer.model)")
    with tf.io.gfile.GFile(path, "rb") as f:
        proto = f.read()
    return sentencepiece_processor(proto, path, vocab_size)


# Fields of sentencepiece_model.proto that record how a training run was executed, not what it learned:
# ModelProto.trainer_spec (2) holds input (1), model_prefix (2), input_format (7) and num_threads (16). The same
# text trained on another machine (other paths, another core count) gives the same pieces, scores and encodings.
TRAINER_SPEC, RUN_FIELDS = 2, frozenset({1, 2, 7, 16})


def _fields(message: bytes) -> list[tuple[int, bytes, bytes]]:
    """(field number, whole encoded field, payload of a length-delimited field or b"") of a serialized protobuf
    message, in order (protobuf's wire format)."""

    def varint(at: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = message[at]
            value, shift, at = value | (byte & 0x7F) << shift, shift + 7, at + 1
            if byte < 0x80:
                return value, at

    fields, at = [], 0
    while at < len(message):
        start = at
        tag, at = varint(at)
        payload = b""
        if tag & 7 == 0:
            _, at = varint(at)
        elif tag & 7 == 2:
            length, at = varint(at)
            payload, at = message[at:at + length], at + length
        elif tag & 7 in (1, 5):
            at += 8 if tag & 7 == 1 else 4
        else:
            raise ValueError(f"tokenizer model: unsupported protobuf wire type {tag & 7} at byte {start}")
        fields.append((tag >> 3, message[start:at], payload))
    return fields


def fingerprint(sp: spm.SentencePieceProcessor) -> str:
    """sha256 of what decides the tokenizer's encodings (its serialized model without the fields that record the
    training run: input paths, thread count): pretokenized shards record it and refuse another tokenizer."""
    digest = hashlib.sha256()
    for number, encoded, payload in _fields(sp.serialized_model_proto()):
        if number != TRAINER_SPEC:
            digest.update(encoded)
            continue
        for inner, inner_encoded, _ in _fields(payload):
            if inner not in RUN_FIELDS:
                digest.update(inner_encoded)
    return digest.hexdigest()


class BatchEncoder:
    """Turns a batch of raw records into BOS + ids + EOS per document, counting what it had to skip.

    Called from the tf.data graph through `tf.numpy_function`; SentencePiece encodes the batch on `threads`
    C++ threads with the GIL released.
    """

    def __init__(self, sp: spm.SentencePieceProcessor, record_format: str, max_doc_chars: int, threads: int):
        if record_format not in ("jsonl", "text"):
            raise ValueError(f"record_format={record_format!r}; expected 'jsonl' or 'text'")
        self.sp, self.record_format, self.max_doc_chars = sp, record_format, max_doc_chars
        # `threads` calls in flight in tf.data, each encoding on `threads` C++ threads (measured faster than one)
        self.calls, self.threads = threads, threads

    def texts(self, records: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Valid, non-empty document texts of `records` (long ones split into pieces) and the COUNTERS."""
        counts = np.zeros(len(COUNTERS), np.int64)
        texts = []
        for record in records:
            try:
                text = record.decode("utf-8")
            except UnicodeDecodeError:
                counts[1] += 1
                continue
            if self.record_format == "jsonl":
                try:
                    text = json.loads(text)["text"]
                    if not isinstance(text, str):
                        raise TypeError
                except (ValueError, KeyError, TypeError):
                    counts[2] += 1
                    continue
            if not text.strip():
                counts[3] += 1
                continue
            counts[0] += 1
            if len(text) > self.max_doc_chars:  # a multi-megabyte line: consecutive pieces, nothing dropped
                counts[4] += 1
                texts.extend(text[i:i + self.max_doc_chars] for i in range(0, len(text), self.max_doc_chars))
            else:
                texts.append(text)
        return texts, counts

    def __call__(self, records: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """records [n] bytes -> (token ids [total] int32, document lengths [docs] int64, COUNTERS [5] int64)."""
        texts, counts = self.texts(records)
        if not texts:
            return np.zeros([0], np.int32), np.zeros([0], np.int64), counts
        # return_type="numpy": int32 arrays straight from C++, no Python int per token
        ids = self.sp.encode(texts, add_bos=True, add_eos=True, num_threads=self.threads, return_type="numpy")
        return np.concatenate(ids), np.array([len(x) for x in ids], np.int64), counts


def default_threads() -> int:
    """Threads for tokenization and tf.data: half the host's cores (the rest drive the accelerator), at least 1."""
    return max(1, (os.cpu_count() or 2) // 2)
