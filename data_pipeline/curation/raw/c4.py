"""C4's raw material: C4-style JSON lines (`url`, `text`, `timestamp`) of the documentation pages the corpus's c4
stand-in is made of, before any C4 rule (read by `curation.c4`).
"""

from __future__ import annotations

import datetime
import gzip
import json
import os


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
