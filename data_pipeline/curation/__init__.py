"""Corpus curation on Apache Beam: one pipeline per LLaMA source (§2.1), from raw dumps to the mixture's JSON lines.

    make curate                      # raw material -> reference models -> seven pipelines -> tokenizer
    python -m data_pipeline.curate --source=commoncrawl --input='.cache/raw/commoncrawl/*.warc.wet.gz' \
        --output=.cache/curated/commoncrawl [--runner=DirectRunner --direct_running_mode=multi_processing ...]

Engine: `stages` (Stage, Counted, count, Drop: counted building blocks), `io` (`ReadFiles`, the reading step
every source opens with, and the sharded writer), `pipelines` (wiring, runner options, runs), `stats` (the
per-stage table), `logs` (Beam's own logging kept off the console). Sources: one module each (`commoncrawl`,
`c4`, `github`, `books`, `wikipedia`, `arxiv`, `stackexchange`) with its `Config`, `read` and `curate`;
CommonCrawl's helpers `dedup`, `langid`, `ngram_lm`, `perplexity`, `quality`. `raw/`: the raw material each
source's pipeline reads, one module per source. Commands: `raw` (the raw material), `reference_models`
(CommonCrawl's LM and classifier), `mixture` (all seven and the tokenizer), `bench` (behind `curate --bench`). Importing this package imports nothing heavy.
"""
