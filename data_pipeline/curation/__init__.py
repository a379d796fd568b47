"""Corpus curation on Apache Beam: one pipeline per LLaMA source (§2.1), from raw dumps to the mixture's JSON lines.

    python -m data_pipeline.curate --source=commoncrawl --input='.cache/raw/commoncrawl/*.warc.wet.gz' \
        --output=.cache/curated/commoncrawl [--runner=DirectRunner --direct_running_mode=multi_processing ...]

`stages` holds the counted building blocks (Stage, Counted, count, Drop), `io` the JSON-lines reader and the
sharded writer, `pipelines` the wiring and the runner options, `stats` the per-stage table; each source has a
module (`commoncrawl`, `c4`, `github`, `books`, `wikipedia`, `arxiv`, `stackexchange`) with its `Config`, `read`,
`curate` and `write_raw`. Importing this package imports nothing heavy.
"""
