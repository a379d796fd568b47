"""The curation pipelines end to end under Beam's TestPipeline: all seven sources in one pipeline (one Beam
start-up), each with a planted document its rules must drop, found by id in the drop log with its stage and
reason (a GPL file, a duplicate book, a disambiguation page, a lorem-ipsum page, a French page), and every drop log
agreeing with its counters; CommonCrawl from WET files with planted duplicates and broken input, counted by reason;
line dedup on a hand-checked corpus of duplicates and near-duplicates split over two shards (exact lines and
counts); the same files, byte for byte, on the DirectRunner with 2 worker processes as with 1; a rerun into a
non-empty directory refused before anything runs. Two pipeline runs in all (module-scoped)."""

import gzip
import io as _io
import json
import os
import sysconfig
from collections import Counter

import curation_runs
import pytest
from curation_pages import MOD_DIR_EN, MOD_ENV_EN, MOD_ENV_FR, SHLEX, WIKIPEDIA, build_reference_models

from data_pipeline import curate
from data_pipeline.curation import commoncrawl, dedup, io, pipelines, stats
from data_pipeline.curation.raw import commoncrawl as raw_commoncrawl
from data_pipeline.curation.stages import Counted
from data_pipeline.sources import parse_spec
from llama_jax import cli
from llama_jax.corpus_spec import SOURCE_NAMES

# Duplicates and near-duplicates over two shards; what survives is worked out by hand in the comments.
PLANTED = [
    [{"id": "d1", "text": "Apache HTTP Server Version 2.4\n"  # = d0's first line: goes
                          "This module allows for control of internal environment variables that are used by "
                          "various Apache HTTP Server modules.\n"
                          "Copyright 2026 The Apache Software Foundation.\n"  # = d0's second line (digits, case)
                          "Modules | Directives | FAQ | Glossary | Sitemap | Report a bug"},  # first copy: stays
     {"id": "d3", "text": "Apache HTTP Server Version 2.4\n\nCopyright 2026 The Apache Software Foundation.\n"
                          "Modules | Directives | FAQ | Glossary | Sitemap | Report a bug"}],  # all copies: dropped
    [{"id": "d0", "text": "APACHE HTTP SERVER VERSION 2.4!\nCopyright 2019, the Apache Software Foundation\n"
                          "This module provides for \"trailing slash\" redirects."},  # smallest id: all stay
     {"id": "d2", "text": "Modules | Directives | FAQ | Glossary | Sitemap | Report a bug\n"  # d1 has it: goes
                          "Modules | Directives | FAQ | Glossary | Sitemap\n"  # shorter: not a duplicate
                          "This module allows for control of external environment variables that are used by "
                          "various Apache HTTP Server modules."},  # one word differs: not a duplicate
     {"id": "d4", "text": "Base\nStatus:\nbase"}],  # a repeat inside one page: the second goes
]
PLANTED_EXPECTED = {
    "d0": PLANTED[1][0]["text"],
    "d1": "This module allows for control of internal environment variables that are used by various Apache HTTP "
          "Server modules.\nModules | Directives | FAQ | Glossary | Sitemap | Report a bug",
    "d2": "Modules | Directives | FAQ | Glossary | Sitemap\nThis module allows for control of external environment "
          "variables that are used by various Apache HTTP Server modules.",
    "d4": "Base\nStatus:",
}
CC_STAGES = ["line_dedup", "min_length", "language", "perplexity", "ppl_bucket", "quality"]
URL = "https://httpd.apache.org/docs/2.4/"


def wet(pages: list[tuple[str, str]]) -> bytes:
    from warcio.warcwriter import WARCWriter

    out = _io.BytesIO()
    writer = WARCWriter(out, gzip=True)
    for url, text in pages:
        writer.write_record(writer.create_warc_record(
            url, "conversion", payload=_io.BytesIO(text.encode()), warc_headers_dict={
                "WARC-Record-ID": raw_commoncrawl.record_id(url), "Content-Type": "text/plain"}))
    return out.getvalue()


def write_jsonl(path, docs) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(doc) + "\n" for doc in docs)


def commoncrawl_input(d) -> str:
    """WET shards of real pages (an untranslated Spanish copy of an English page, as the Apache manual ships),
    a truncated shard, one with a malformed record, an empty one, and JSON lines with a bad line of each kind."""
    wiki = [(f"https://en.wikipedia.org/wiki/{title.replace(' ', '_')}", text) for title, text in WIKIPEDIA]
    (d / "cc-00000.warc.wet.gz").write_bytes(wet(
        [(URL + "en/mod/mod_env.html", MOD_ENV_EN), (URL + "es/mod/mod_env.html", MOD_ENV_EN),
         (URL + "fr/mod/mod_env.html", MOD_ENV_FR), (URL + "en/mod/mod_dir.html", MOD_DIR_EN),
         ("https://docs.python.org/3.11/library/shlex.html", SHLEX)] + wiki[:12]))
    whole = wet(wiki[12:15])
    (d / "cc-00001.warc.wet.gz").write_bytes(whole[:-100])  # the third record is cut short
    garbage = gzip.compress(b"WARC/9.9 unknown\r\nContent-Length: 3\r\n\r\nabc\r\n\r\n")
    (d / "cc-00002.warc.wet.gz").write_bytes(wet(wiki[15:17]) + garbage + wet(wiki[17:19]))
    (d / "cc-00003.warc.wet.gz").write_bytes(b"")
    with open(d / "cc-00004.jsonl", "wb") as f:
        f.write(json.dumps({"id": "json-page", "url": wiki[19][0], "text": wiki[19][1]}).encode() + b"\n")
        f.write(b'{"id": "latin-1", "text": "caf\xe9"}\n{"id": "cut", "text": "unterminated\n')
    return f"{d}/cc-*"


def other_inputs(d) -> dict[str, str]:
    """Small JSON-lines inputs of real text for the other sources (their modules test their own raw formats)."""
    shlex_py = open(os.path.join(sysconfig.get_paths()["stdlib"], "shlex.py"), encoding="utf-8").read()
    lead = WIKIPEDIA[0][1]
    docs = {
        "c4": [{"id": "mod_env", "url": URL + "en/mod/mod_env.html", "text": MOD_ENV_EN,
                "timestamp": "2019-04-25T12:57:54Z"},
               {"id": "lorem", "url": "https://example.com/lorem",
                "text": "Lorem ipsum dolor sit amet, consectetur adipiscing."}],
        "wikipedia": [{"id": "en/Counterpoint", "text": "'''Counterpoint''' is a [[music|musical]] technique. "
                                                        + WIKIPEDIA[15][1] + "\n[[Category:Music theory]]"},
                      {"id": "en/Mercury", "text": "'''Mercury''' may refer to:\n* [[Mercury (planet)]]\n"
                                                   "{{Disambiguation}}"}],
        "github": [{"id": "cpython/Lib/shlex.py", "text": shlex_py,
                    "meta": {"path": "cpython/Lib/shlex.py", "licence": "mit"}},
                   {"id": "gpl/shlex.py", "text": shlex_py, "meta": {"path": "gpl/shlex.py", "licence": "gpl-3.0"}}],
        "books": [{"id": "lead", "text": lead}, {"id": "lead-copy", "text": lead}],
        "arxiv": [{"id": "paper", "text": "\\documentclass{article}\n\\begin{document}\n\\section{Introduction}\n"
                                          f"{lead}\n\\bibliography{{refs}}\n"}],
        "stackexchange": [{"id": "q1", "text": "Q: <p>How do I split a string like a shell?</p>\n"
                                               "A: <p>Use <code>shlex.split</code>:</p><ul><li>quotes</li></ul>"}],
    }
    globs = {}
    for source, items in docs.items():
        os.makedirs(d / source)
        write_jsonl(d / source / "input.jsonl", items)
        globs[source] = f"{d}/{source}/*.jsonl"
    return globs


# What each source's input plants for its rules to drop: source -> (document id, (stage, reason)).
PLANTED_DROPS = {
    "github": ("gpl/shlex.py", ("licence", "licence_not_permissive")),
    "books": ("lead-copy", ("near_dedup", "near_duplicate")),  # "lead" has the smaller id: it stays
    "wikipedia": ("en/Mercury", ("drop_disambiguation", "disambiguation")),
    "c4": ("lorem", ("clean", "lorem_ipsum")),
    "commoncrawl": (raw_commoncrawl.record_id(URL + "fr/mod/mod_env.html"), ("language", "not_english")),
}


def run(jobs, planted_glob, planted_out, beam_args):
    """One TestPipeline: the jobs plus the planted dedup corpus (read, deduplicated, written)."""
    def build(pipeline):
        pipelines.apply_jobs(pipeline, jobs)
        _ = (io.read_jsonl(pipeline, planted_glob, "planted")
             | Counted("planted", "line_dedup", dedup.LineDedup("planted", "line_dedup", buckets=3))
             | io.WriteJsonl("planted", planted_out))

    pipeline, result = curation_runs.run(build, beam_args)
    summaries = pipelines.collect(result, pipeline, jobs)
    summaries["planted"] = stats.summarize(stats.counters(result, "planted"), "planted", ["line_dedup"])
    return summaries


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """All seven sources in one in-memory run; CommonCrawl and the planted corpus again on 2 processes."""
    d = tmp_path_factory.mktemp("curation")
    models = d / "models"
    os.makedirs(models)
    build_reference_models(str(models))
    cc_glob = commoncrawl_input(d)
    os.makedirs(d / "planted")
    for k, shard in enumerate(PLANTED):
        write_jsonl(d / "planted" / f"shard{k}.jsonl", shard)
    cc_config = commoncrawl.Config(models_dir=str(models))
    jobs = [pipelines.Job("commoncrawl", cc_glob, str(d / "out1" / "commoncrawl"), cc_config)]
    jobs += [pipelines.Job(source, glob, str(d / "out1" / source)) for source, glob in other_inputs(d).items()]
    one = run(jobs, f"{d}/planted/*.jsonl", str(d / "out1" / "planted"), [])
    two = run([pipelines.Job("commoncrawl", cc_glob, str(d / "out2" / "commoncrawl"), cc_config)],
              f"{d}/planted/*.jsonl", str(d / "out2" / "planted"),
              ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    return d, jobs, one, two


def read_output(out: str) -> dict[str, list[dict]]:
    shards = {}
    for name in sorted(os.listdir(out)):
        if name.startswith(io.SPLITS) and name.endswith(".jsonl.gz"):  # the shards, not the drop log
            with gzip.open(f"{out}/{name}", "rt", encoding="utf-8") as f:
                shards[name] = [json.loads(line) for line in f]
    return shards


def test_planted_duplicates_are_removed_exactly(runs):
    d, _, one, _ = runs
    docs = {doc["id"]: doc["text"] for shard in read_output(str(d / "out1" / "planted")).values() for doc in shard}
    assert docs == PLANTED_EXPECTED
    row = one["planted"]["stages"][0]
    assert (row["docs_in"], row["docs_out"]) == (5, 4)
    assert row["dropped"] == {"only_duplicate_lines": 1} and row["other"] == {"lines_removed": 7}


def test_two_worker_processes_write_the_same_files_as_one(runs):
    d, _, one, two = runs
    for name in ("commoncrawl", "planted"):
        first, second = d / "out1" / name, d / "out2" / name
        files = sorted(f for f in os.listdir(first) if f.endswith(".jsonl.gz"))
        assert files == sorted(f for f in os.listdir(second) if f.endswith(".jsonl.gz")) and files
        for f in files:
            assert (first / f).read_bytes() == (second / f).read_bytes(), f
    for key in ("read", "stages", "written"):
        assert one["commoncrawl"][key] == two["commoncrawl"][key]


def test_broken_commoncrawl_input_is_counted_by_reason(runs):
    _, _, one, _ = runs
    read = one["commoncrawl"]["read"]
    assert read["files"] == 5
    assert read["dropped"] == {"truncated_record": 1, "malformed_warc": 1, "empty_file": 1, "not_utf8": 1,
                               "bad_json": 1}
    # 17 pages in shard 0, 2 of 3 in shard 1, 2 before the malformed record in shard 2, 1 JSON page
    assert read["docs_out"] == 17 + 2 + 2 + 1


def test_commoncrawl_stages_and_what_they_kept(runs):
    d, _, one, _ = runs
    cc = one["commoncrawl"]
    assert [row["name"] for row in cc["stages"]] == CC_STAGES
    rows = {row["name"]: row for row in cc["stages"]}
    assert rows["line_dedup"]["docs_in"] == cc["read"]["docs_out"]
    assert rows["line_dedup"]["dropped"] == {"only_duplicate_lines": 1}  # the Spanish copy of mod_env
    assert rows["language"]["dropped"]["not_english"] >= 1  # the French page
    for before, after in zip(cc["stages"], cc["stages"][1:], strict=False):
        assert after["docs_in"] == before["docs_out"] and after["bytes_in"] == before["bytes_out"]
    for row in cc["stages"]:
        assert row["docs_out"] + sum(row["dropped"].values()) == row["docs_in"], row["name"]
    bucket = rows["ppl_bucket"]
    assert set(bucket["dropped"]) <= {"perplexity_tail"} and bucket["docs_out"] >= 1
    kept = [doc for shard in read_output(str(d / "out1" / "commoncrawl")).values() for doc in shard]
    assert len(kept) == rows["quality"]["docs_out"] == sum(w["docs"] for w in cc["written"].values())
    tail_from = bucket["other"]["tail_from_x10"] / 10
    for doc in kept:
        meta = doc["meta"]
        assert meta["lang_score"] >= 0.5 and meta["wiki_prob"] >= 0.25 and len(doc["text"]) >= 300
        assert meta["bucket"] in ("head", "middle") and meta["perplexity"] < tail_from + 0.05
    texts = "\n".join(doc["text"] for doc in kept)
    assert texts.count("Modules | Directives | FAQ | Glossary | Sitemap | Report a bug") <= 1
    with open(d / "out1" / "commoncrawl" / "stats.json") as f:
        assert json.load(f)["stages"] == cc["stages"]
    assert "line_dedup" in stats.table(cc) and "not_english" in stats.table(cc)


@pytest.mark.parametrize("source", SOURCE_NAMES)
def test_every_source_runs_end_to_end_and_its_output_is_a_stream_source(runs, source):
    d, jobs, one, _ = runs
    summary, out = one[source], str(d / "out1" / source)
    assert summary["stages"], "no counted stage"
    for row in summary["stages"]:
        assert row["docs_out"] + sum(row["dropped"].values()) <= row["docs_in"] or row["name"] == "pair", row
    docs = [doc for shard in read_output(out).values() for doc in shard]
    assert len(docs) == summary["stages"][-1]["docs_out"] == sum(w["docs"] for w in summary["written"].values())
    assert all(set(doc) >= {"id", "text"} and doc["text"].strip() for doc in docs)
    spec = parse_spec(source, f"jsonl:{out}/{{split}}-*.jsonl.gz", "")
    assert spec.kind == "jsonl" and os.path.exists(f"{out}/stats.json")


def test_every_planted_document_is_dropped_by_its_rule_for_its_reason(runs):
    d, _, _, _ = runs
    for source, (doc_id, stage_reason) in PLANTED_DROPS.items():
        dropped = io.read_drop_log(str(d / "out1" / source))
        assert dropped.get(doc_id) == [stage_reason], (source, doc_id, dropped)
        assert doc_id not in curation_runs.written_docs(str(d / "out1" / source))


@pytest.mark.parametrize("source", SOURCE_NAMES)
def test_the_drop_log_names_every_document_the_counters_count_as_dropped(runs, source):
    d, _, one, _ = runs
    dropped = io.read_drop_log(str(d / "out1" / source))
    logged = Counter((stage, reason) for reasons in dropped.values() for stage, reason in reasons)
    counted = Counter({(row["name"], reason): n for row in one[source]["stages"] for reason, n in row["dropped"].items()})
    assert logged == counted
    assert not set(dropped) & set(curation_runs.written_docs(str(d / "out1" / source)))


def test_a_rerun_into_a_non_empty_output_is_refused_and_changes_nothing(runs):
    d, jobs, _, _ = runs
    out = d / "out1" / "commoncrawl"
    before = {f: (out / f).stat().st_mtime_ns for f in os.listdir(out)}
    with pytest.raises(FileExistsError, match="not empty"):
        pipelines.run_jobs(jobs[:1], [])
    with pytest.raises(FileExistsError, match="not empty"):
        curate.main(["--source=commoncrawl", f"--input={jobs[0].input_glob}", f"--output={out}"])
    assert before == {f: (out / f).stat().st_mtime_ns for f in os.listdir(out)}


def test_the_command_line_names_what_is_wrong(tmp_path):
    with pytest.raises(cli.UsageError, match="missing --input, --output"):
        curate.main(["--source=commoncrawl"])
    with pytest.raises(cli.UsageError, match="not a LLaMA source"):
        curate.main(["--source=reddit", "--input=x", f"--output={tmp_path}/o"])
    with pytest.raises(cli.UsageError, match="no such setting; its settings are dedup_buckets"):
        curate.main(["--source=commoncrawl", "--input=x", f"--output={tmp_path}/o", "--config.min_len=3"])
    with pytest.raises(cli.UsageError, match="did you mean --direct_num_workers"):
        pipelines.pipeline_options(["--direct_num_worker=2"])
    with pytest.raises(FileNotFoundError, match="matches no files"):
        curate.main(["--source=commoncrawl", f"--input={tmp_path}/none-*.wet.gz", f"--output={tmp_path}/o"])
    config = pipelines.make_config(commoncrawl, {"min_chars": "500", "keep_tail": "true", "lid_model": "/m.bin"})
    assert (config.min_chars, config.keep_tail, config.lid_model) == (500, True, "/m.bin")
    with pytest.raises(cli.UsageError, match="expected a int like its default 300"):
        pipelines.make_config(commoncrawl, {"min_chars": "many"})
    assert pipelines.pipeline_options([]).view_as(
        pipelines.StandardOptions).runner == pipelines.PYTHON_DIRECT_RUNNER


def test_the_curated_output_feeds_the_tokenizer_sample_and_the_configs(runs, tmp_path):
    from data_pipeline import corpus
    from data_pipeline.curation import mixture
    from experiments.configs import curation_ablation, tiny_curated

    d, jobs, _, _ = runs
    out = str(d / "out1")
    assert sorted(job.source for job in jobs) == sorted(SOURCE_NAMES)
    corpus.tokenizer_sample(out, mixture.manifest(out), str(tmp_path / "sample.txt"), 1 << 16)
    sample = (tmp_path / "sample.txt").read_text()
    for source in SOURCE_NAMES:  # every source's curated train text reaches the sample
        train = curation_runs.written_docs(f"{out}/{source}", ("train",)).values()
        assert any(line.strip() and line in sample for doc in train for line in doc["text"].split("\n")), source
    c = tiny_curated.get_config()
    assert c.data.sources.wikipedia == ".cache/curated/wikipedia/{split}-*.jsonl.gz".join(["jsonl:", ""])
    assert c.data.tokenizer == ".cache/curated/tokenizer.model"
    raw, curated = curation_ablation.get_config("raw"), curation_ablation.get_config("curated")
    assert raw.data.weights.commoncrawl == curated.data.weights.commoncrawl == 1.0 and raw.data.sources.commoncrawl == ""
    assert sum(curated.data.weights.values()) == 1.0 and curated.data.tokenizer == raw.data.tokenizer == ""
    assert raw.train.steps * raw.train.global_batch_size == curated.train.steps * curated.train.global_batch_size


def test_the_ablation_reads_each_sources_loss_not_its_standard_error():
    from experiments import curation_ablation

    metrics = {"eval/c4/loss": 6.4, "eval/c4/loss_se": 0.06, "eval/books/loss_se": 0.03, "eval/books/loss": 6.9}
    assert curation_ablation.per_source(metrics) == {"c4": 6.4, "books": 6.9}
