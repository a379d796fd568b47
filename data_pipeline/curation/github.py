"""GitHub (LLaMA §2.1, 4.5% of the mixture): RedPajama-Data v1's cleaning of public source code.

LLaMA kept projects under the Apache, BSD and MIT licences, filtered low-quality files "with heuristics based on
the line length or proportion of alphanumeric characters", removed boilerplate such as headers with regular
expressions and deduplicated exact files. RedPajama v1 (`data_prep/github`, the public reproduction) made that
concrete; its thresholds are this module's defaults, in its order:
  licence        the repository's licence, detected from its licence file's text (`licence_family`)
  skip_files     certificates (.crt) and the licence files themselves
  dedup          exact duplicates by MD5 of the content: one copy survives, the smallest id
  strip_header   the leading comment lines, then a /* */ block in the first 100 lines if it says "copyright"
                 (a line starting with # counts as a comment in every language, so a C file's leading #include
                 and #ifndef lines go too, as in RedPajama: 64 of the raw trees' .c/.h files start with one)
  filter         extension whitelist, longest line, mean line length, alphanumeric share, letters per token

RedPajama counted tokens with pythia-6.9b's tokenizer (GPT-NeoX BPE, 50k pieces), which is not available
offline. The default stand-in counts the pieces of its pre-tokenizer (GPT-2's regex: a word with its leading
space, a number, a run of punctuation, a run of whitespace): BPE merges only inside a piece, so this is a lower
bound on pythia's count and equal to it for pieces in its vocabulary. `Config(tokenizer_model=...)` counts with a
SentencePiece model instead: with this repository's 8k-piece tokenizer, which keeps every space of an
indentation as its own piece, 46% of numpy's .py files fall under 1.5 letters per token, against 8% with the
stand-in (on numpy's 417 .py files).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Iterator

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from data_pipeline.curation import io
from data_pipeline.curation.stages import DROPPED, Counted, Doc, Drop, Stage, count, drop, kept

NAME = "github"

# RedPajama's github_run_filter.py `extensions_whitelist`: matched with str.endswith on the path, case-sensitive.
EXTENSIONS = (".asm", ".bat", ".cmd", ".c", ".h", ".cs", ".cpp", ".hpp", ".c++", ".h++", ".cc", ".hh", ".C", ".H",
              ".cmake", ".css", ".dockerfile", ".f90", ".f", ".f03", ".f08", ".f77", ".f95", ".for", ".fpp", ".go",
              ".hs", ".html", ".java", ".js", ".jl", ".lua", ".md", ".markdown", ".php", ".php3", ".php4", ".php5",
              ".phps", ".phpt", ".pl", ".pm", ".pod", ".perl", ".ps1", ".psd1", ".psm1", ".py", ".rb", ".rs", ".sql",
              ".scala", ".sh", ".bash", ".command", ".zsh", ".ts", ".tsx", ".tex", ".vb", "Dockerfile", "Makefile",
              ".xml", ".rst", ".m", ".smali")

# The sentence each licence's text cannot do without, in normalised form (see `normalise_licence`). A licence file
# often carries notices of bundled code after the project's own licence (numpy's wheel appends the GCC runtime's
# GPL, CPython's LICENSE ends with a zero-clause BSD for its documentation): the first sentence found names it.
LICENCE_SENTENCES = (
    ("apache", "apache license version 2 0"),
    ("apache", "terms and conditions for use reproduction and distribution"),  # a copy without its title line
    ("mit", "permission is hereby granted free of charge to any person obtaining a copy"),
    ("mit-cmu", "permission to use copy modify and distribute this software and its documentation for any purpose "
                "and without fee is hereby granted"),  # SPDX MIT-CMU (Pillow): 'mit%' to RedPajama
    ("bsd", "redistribution and use in source and binary forms with or without modification are permitted"),
    ("isc", "permission to use copy modify and or distribute this software for any purpose with or without fee"),
    ("isc", "permission to use copy modify and distribute this software for any purpose with or without fee"),
    ("lgpl", "gnu lesser general public license"),
    ("lgpl", "gnu library general public license"),
    ("agpl", "gnu affero general public license"),
    ("gpl", "gnu general public license"),
    ("mpl", "mozilla public licen"),
    ("epl", "eclipse public license"),
    ("psf", "python software foundation license"),
    ("unlicense", "this is free and unencumbered software released into the public domain"),
    ("cc", "creative commons"),
)
LICENCE_FILE = re.compile(r"(licen[cs]e|copying)([-._].*)?", re.IGNORECASE)  # LICENSE, LICENCE.md, COPYING.txt, ...
# GPT-2's pre-tokenizer, which GPT-NeoX (pythia) uses unchanged.
PRETOKEN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
C_COMMENT = re.compile(r"/\*[^*]*\*+(?:[^/*][^*]*\*+)*/")  # RedPajama's PAT: one /* ... */ block


@dataclasses.dataclass(frozen=True)
class Config:
    """RedPajama v1's GitHub thresholds (data_prep/github/github_clean_dedup_local.py, github_run_filter.py)."""

    licences: tuple[str, ...] = ("apache", "bsd", "mit")  # BigQuery licenses LIKE 'apache%'/'bsd%'/'mit%'
    extensions: tuple[str, ...] = EXTENSIONS  # extensions_whitelist
    max_line_length: int = 1000  # discard if the longest line is longer
    max_mean_line_length: float = 100.0  # discard if len(content) / number of lines is larger
    min_alnum_fraction: float = 0.25  # discard if str.isalnum characters / len(content) is smaller
    min_alpha_per_token: float = 1.5  # discard if str.isalpha characters / tokens is smaller
    tokenizer_model: str = ""  # "" = GPT-2/NeoX pre-token stand-in for pythia's tokenizer; else a SentencePiece model
    header_lines: int = 100  # the copyright /* */ block is looked for in the first 100 lines
    # BigQuery's github_repos.contents, RedPajama's source, keeps the text of files under 1 MiB only.
    max_file_bytes: int = 1 << 20

    def __post_init__(self):
        if self.tokenizer_model and not os.path.isfile(self.tokenizer_model):
            raise FileNotFoundError(f"tokenizer_model={self.tokenizer_model!r} is not a file; give a SentencePiece "
                                    "model (e.g. .cache/corpus/tokenizer.model) or '' for the pre-token stand-in")


# ---------------------------------------------------------------------------------------------- rules
def normalise_licence(text: str) -> str:
    """Lowercase words separated by single spaces: line breaks, markup and punctuation of a licence file gone."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def licence_family(text: str) -> str | None:
    """The licence a licence file states ("apache", "mit", "bsd", "isc", "gpl", "lgpl", "mpl", "psf", ...): the
    family whose defining sentence comes first in it; None if it holds none of LICENCE_SENTENCES."""
    norm = normalise_licence(text)
    found = [(norm.find(sentence), family) for family, sentence in LICENCE_SENTENCES if sentence in norm]
    return min(found)[1] if found else None


def is_licence_file(path: str) -> bool:
    """Whether `path` (inside a repository) is a licence file at its root: LICENSE, LICENCE.txt, COPYING, ..."""
    return "/" not in path and bool(LICENCE_FILE.fullmatch(path))


def strip_licence_header(text: str, header_lines: int = 100) -> str:
    """RedPajama's `clean_copyright_comments`: drops the leading lines that start with //, # or -- (after
    indentation) or are empty, then the first /* */ block within the next `header_lines` lines if it contains
    "copyright" (any case)."""
    lines = text.split("\n")
    skip = 0
    for line in lines:
        if not line or line.lstrip().startswith(("//", "#", "--")):
            skip += 1
        else:
            break
    lines = lines[skip:]
    head = "\n".join(lines[:header_lines])
    match = C_COMMENT.search(head)
    if match and "copyright" in match.group().lower():
        head = head[:match.start()] + head[match.end():]
    return "\n".join([head, *lines[header_lines:]])


@functools.cache
def token_counter(tokenizer_model: str = "") -> Callable[[str], int]:
    """Counts tokens: GPT-2/NeoX pre-tokens for "", else the pieces of a SentencePiece model."""
    if not tokenizer_model:
        import regex

        pattern = regex.compile(PRETOKEN)
        return lambda text: sum(1 for _ in pattern.finditer(text))
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=tokenizer_model)
    return lambda text: len(processor.encode(text))


def quality_drop(text: str, path: str, config: Config) -> Drop | None:
    """RedPajama's `discard_record`, in its order: why the file goes, or None if it stays."""
    if not text:
        return Drop("empty")
    if not path.endswith(config.extensions):
        return Drop("extension")
    lengths = [len(line) for line in text.splitlines()]
    if max(lengths) > config.max_line_length:
        return Drop("long_line")
    if len(text) / len(lengths) > config.max_mean_line_length:
        return Drop("long_mean_line")
    if sum(c.isalnum() for c in text) / len(text) < config.min_alnum_fraction:
        return Drop("low_alnum")
    tokens = token_counter(config.tokenizer_model)(text)
    if not tokens or sum(c.isalpha() for c in text) / tokens < config.min_alpha_per_token:
        return Drop("low_alpha_per_token")
    return None


def licence_drop(licence: str | None, licences: Iterable[str]) -> Drop | None:
    """Why a file whose repository has `licence` (None: no licence file; "unrecognised": a licence file that
    states no known licence) goes, or None if the licence is one of `licences` (by prefix, as RedPajama's LIKE)."""
    if licence is None:
        return Drop("licence_missing")
    if licence == "unrecognised":
        return Drop("licence_unrecognised")
    return None if licence.startswith(tuple(licences)) else Drop("licence_not_permissive")


# ---------------------------------------------------------------------------------------------- stages
def _path(doc: Doc) -> str:
    return doc.get("meta", {}).get("path", doc["id"])


def _licence(config: Config):
    def rule(doc: Doc) -> Doc | Drop:
        return licence_drop(doc.get("meta", {}).get("licence"), config.licences) or doc
    return rule


def _skip_files(doc: Doc) -> Doc | Drop:
    path = _path(doc)
    if path.endswith(".crt"):
        return Drop("certificate")
    return Drop("licence_file") if is_licence_file(path) else doc


def _strip_header(config: Config):
    def rule(doc: Doc) -> Doc:
        return {**doc, "text": strip_licence_header(doc["text"], config.header_lines)}
    return rule


def _filter(config: Config):
    def rule(doc: Doc) -> Doc | Drop:
        return quality_drop(doc["text"], _path(doc), config) or doc
    return rule


def _first_copy(group: tuple[str, Iterable[Doc]]) -> Iterator[Doc]:
    _, docs = group
    first, *copies = sorted(docs, key=lambda d: d["id"])
    yield first
    for doc in copies:
        yield drop(NAME, "dedup", doc["id"], "duplicate")


class DedupFiles(beam.PTransform):
    """Exact file-level deduplication (RedPajama: MD5 of the content, locally then globally) as a group-by on the
    MD5: of each group of identical files the one with the smallest id survives, whatever the workers."""

    def expand(self, docs: beam.PCollection) -> beam.PCollection:
        return kept(docs | "ByContent" >> beam.Map(lambda d: (hashlib.md5(d["text"].encode("utf-8")).hexdigest(), d))
                | "Group" >> beam.GroupByKey()
                | "First" >> beam.FlatMap(_first_copy).with_outputs(DROPPED, main="docs"), NAME)


# ---------------------------------------------------------------------------------------------- reading
def repositories(paths: Iterable[str], input_glob: str) -> list[tuple[str, list[str]]]:
    """(repository, its files): the first directory of each path under the glob's base directory; a file directly
    in the base directory is its own group with repository "" (JSON lines, or a file of no repository)."""
    repos: dict[str, list[str]] = {}
    loose = []
    for path in paths:
        repo, sep, _ = io.relative_name(path, input_glob).partition("/")
        if sep:
            repos.setdefault(repo, []).append(path)
        else:
            loose.append(("", [path]))
    return sorted(repos.items()) + loose


def _read_bytes(path: str, limit: int = -1) -> bytes:
    """The file's bytes, at most `limit` of them (-1: all)."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read(limit)


class _ReadRepository(beam.DoFn):
    """(repository, its file paths) -> one document per source file, with the repository's licence in `meta`."""

    def __init__(self, input_glob: str, max_file_bytes: int):
        self.input_glob, self.max_file_bytes = input_glob, max_file_bytes

    def process(self, repo_paths: tuple[str, list[str]]) -> Iterator[Doc]:
        repo, paths = repo_paths
        if not repo:  # a file directly in the base directory: JSON lines, or a file of no repository
            for path in paths:
                if io.is_jsonl(path):
                    count(NAME, "read/files")
                    yield from io.jsonl_docs(path, NAME, self.input_glob)
                else:
                    count(NAME, "read/dropped/not_in_a_repository")
            return
        count(NAME, "read/repositories")
        inside = {path: io.relative_name(path, self.input_glob)[len(repo) + 1:] for path in paths}
        licence_paths = sorted((p for p in paths if is_licence_file(inside[p])), key=lambda p: inside[p])
        licence = None
        if licence_paths:
            text = "\n".join(_read_bytes(p).decode("utf-8", errors="replace") for p in licence_paths)
            licence = licence_family(text) or "unrecognised"
        for path in sorted(paths):
            doc = self.read_file(path, f"{repo}/{inside[path]}", repo, inside[path], licence)
            if isinstance(doc, Drop):
                count(NAME, f"read/dropped/{doc.reason}")
            else:
                yield doc

    def read_file(self, path: str, doc_id: str, repo: str, inside: str, licence: str | None) -> Doc | Drop:
        count(NAME, "read/files")
        data = _read_bytes(path, self.max_file_bytes)  # never more: a huge file is not read whole
        if not data:
            return Drop("empty_file")
        if len(data) >= self.max_file_bytes:
            return Drop("too_large")
        if b"\x00" in data:
            return Drop("binary")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return Drop("not_utf8")
        meta = {"repo": repo, "path": inside}
        if licence is not None:
            meta["licence"] = licence
        return {"id": doc_id, "text": text, "meta": meta}


def read(pipeline: beam.Pipeline, input_glob: str, config: Config = Config()) -> beam.PCollection:
    """Source trees (`DIR/**`: each directory under DIR a repository, its licence file at its root) and JSON-lines
    files directly in DIR (`meta.path`, and `meta.licence` as BigQuery's licence key, e.g. "apache-2.0")."""
    repos = repositories(io.match(input_glob), input_glob)
    return (pipeline | "Repositories" >> beam.Create(repos)
            | "SpreadRepositories" >> beam.Reshuffle()
            | "ReadRepository" >> beam.ParDo(_ReadRepository(input_glob, config.max_file_bytes))
            | "CountRead" >> beam.Map(io.count_read, NAME)
            | "SpreadFiles" >> beam.Reshuffle())


def curate(docs: beam.PCollection, config: Config) -> beam.PCollection:
    """RedPajama v1's GitHub steps in its order (see the module docstring)."""
    return (docs
            | Stage(NAME, "licence", _licence(config))
            | Stage(NAME, "skip_files", _skip_files)
            | Counted(NAME, "dedup", DedupFiles())
            | Stage(NAME, "strip_header", _strip_header(config))
            | Stage(NAME, "filter", _filter(config)))
