"""CommonCrawl's raw material: WET files of the Apache httpd and Python manual pages with all their visible text,
each page under its real address (read by `curation.commoncrawl`; `reference_models` takes its negatives from them).
"""

from __future__ import annotations

import hashlib
import io as _io
import os
import uuid

SITES = {"apache2-doc/usr/share/doc/apache2-doc/manual/": "https://httpd.apache.org/docs/2.4/",
         "python3.11-doc/usr/share/doc/python3.11/html/": "https://docs.python.org/3.11/"}
RAW_SHARDS = 4
CRAWL_DATE = "2023-06-01T00:00:00Z"  # a fixed date: the stand-in crawl has none (RedPajama's last dump: 2023-06)


def url_of(doc_id: str) -> str:
    """The page's address on its real web site, from its path in the Debian package."""
    for prefix, site in SITES.items():
        if doc_id.startswith(prefix):
            return site + doc_id[len(prefix):]
    raise ValueError(f"{doc_id!r} is not under any of {list(SITES)}")


def record_id(url: str) -> str:
    """A WARC-Record-ID that is a function of the URL (uuid5), so rebuilt raw files are identical."""
    return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, url)}>"


def write_raw(roots: dict[str, str], out_dir: str) -> list[str]:
    """CommonCrawl WET files of the Apache httpd and Python manual pages (all their languages), with all their
    visible text: navigation, footers, language menus, as a crawl's WET records hold (corpus.commoncrawl)."""
    from warcio.warcwriter import WARCWriter

    from data_pipeline.corpus import commoncrawl

    os.makedirs(out_dir, exist_ok=True)
    paths = [f"{out_dir}/CC-MAIN-stand-in-{k:05d}.warc.wet.gz" for k in range(RAW_SHARDS)]
    files = [open(path, "wb") for path in paths]
    try:
        writers = [WARCWriter(f, gzip=True) for f in files]
        for k, writer in enumerate(writers):
            writer.write_record(writer.create_warcinfo_record(
                os.path.basename(paths[k]), {"software": "llama_jax data_pipeline.curation.commoncrawl",
                                             "description": "WET stand-in: Debian apache2-doc and python3.11-doc"}))
        for doc_id, text in commoncrawl(roots):
            if not text.strip():
                continue
            url = url_of(doc_id)
            shard = int.from_bytes(hashlib.sha256(url.encode()).digest()[:4], "big") % RAW_SHARDS
            writers[shard].write_record(writers[shard].create_warc_record(
                url, "conversion", payload=_io.BytesIO(text.encode("utf-8")),
                warc_headers_dict={"WARC-Record-ID": record_id(url), "WARC-Date": CRAWL_DATE,
                                   "Content-Type": "text/plain"}))
    finally:
        for f in files:
            f.close()
    return paths
