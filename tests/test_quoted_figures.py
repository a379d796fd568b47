"""The TPU-fit figures the docs quote are the committed raw reports' (benchmarks/results/tpu_aot_2026-11-26.jsonl
for docs/benchmarks.md's table, experiments/results/aot_fit.jsonl for experiments/results/README.md): each
quoted setting is a report that fits, with the quoted GiB per chip."""

import json
import os
import re

from llama_jax.perf import aot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _reports(path: str) -> dict[tuple, aot.FitReport]:
    """(preset, topology, remat, microbatches) -> report of each line of a committed JSON-lines file."""
    reports = {}
    with open(os.path.join(ROOT, path)) as f:
        for line in f:
            record = json.loads(line)
            fields = {k: v for k, v in record.get("report", record).items() if k in aot.FitReport.__dataclass_fields__}
            report = aot.FitReport(**fields)
            reports[(report.model, report.topology, report.remat, report.microbatches)] = report
    return reports


def _gib(report: aot.FitReport) -> float:
    return round(report.total_bytes / aot.GIB, 1)


def test_the_benchmarks_table_of_fitting_settings_is_the_committed_reports():
    reports = _reports("benchmarks/results/tpu_aot_2026-11-26.jsonl")
    with open(os.path.join(ROOT, "docs", "benchmarks.md")) as f:
        rows = re.findall(r"^\| (llama_\w+) \| [\w-]+ = `([\w:]+)` \(\d+\) \| (\w+) \| (\d+) \| ([\d.]+) of \d+ GiB \|",
                          f.read(), re.MULTILINE)
    assert len(rows) == 6
    for preset, topology, remat, microbatches, gib in rows:
        report = reports[(preset, topology, remat, int(microbatches))]
        assert report.fits and _gib(report) == float(gib), (preset, topology, remat, microbatches)


def test_the_fit_search_of_the_paper_sweep_is_the_committed_cache():
    """experiments/results/README.md: on v5p-512 every preset fits with 1 microbatch, 7B and 13B with save_linear,
    33B and 65B only with full remat; the search's rule (fewest microbatches, then the least remat) replayed on the
    cached reports gives those settings and the quoted GiB."""
    reports = _reports("experiments/results/aot_fit.jsonl")
    with open(os.path.join(ROOT, "experiments", "results", "README.md")) as f:
        text = " ".join(f.read().split())
    quoted = re.search(r"7B at ([\d.]+) and 13B at ([\d.]+) GiB of 95 per chip with (\w+) remat, 33B at ([\d.]+) and "
                       r"65B at ([\d.]+) GiB with (\w+) remat", text)
    assert quoted and "every run fits with 1 microbatch" in text
    expected = {"llama_7b": (quoted[3], quoted[1]), "llama_13b": (quoted[3], quoted[2]),
                "llama_33b": (quoted[6], quoted[4]), "llama_65b": (quoted[6], quoted[5])}
    for preset, (remat, gib) in expected.items():
        settings = sorted((m, ("none", "save_linear", "full").index(r), r) for (p, _, r, m), report in reports.items()
                          if p == preset and report.fits)
        microbatches, _, chosen = settings[0]
        assert (microbatches, chosen) == (1, remat), preset
        assert _gib(reports[(preset, "v5p:4x8x8", chosen, 1)]) == float(gib), preset


def test_make_trains_quoted_accuracies_and_losses_are_the_committed_runs():
    """README's "Evaluation" quotes make train's cloze accuracy and mean held-out loss at steps 0, 100 and 200:
    each is the committed run's (experiments/results/make_train_metrics.jsonl), to the digits quoted."""
    with open(os.path.join(ROOT, "experiments", "results", "make_train_metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    evaluated = {r["step"]: r for r in records if "eval/cloze/acc" in r}
    assert sorted(evaluated) == [0, 100, 200]
    accuracy = [f"{100 * evaluated[s]['eval/cloze/acc']:.1f}%" for s in (0, 100, 200)]
    losses = []
    for s in (0, 100, 200):
        per_source = [v for k, v in evaluated[s].items() if re.fullmatch(r"eval/\w+/loss", k) and "cloze" not in k]
        assert len(per_source) == 7
        losses.append(f"{sum(per_source) / 7:.2f}")
    with open(os.path.join(ROOT, "README.md")) as f:
        text = " ".join(f.read().split())
    quote = text[text.index("What `make train` shows"):][:900]
    assert (f"scores {accuracy[0]} untrained (step 0), {accuracy[1]} at step 100 (205k tokens) and {accuracy[2]} at "
            f"step 200") in quote, (accuracy, quote)
    assert f"falls from {losses[0]} to {losses[1]} and {losses[2]} nats" in quote, (losses, quote)


def test_the_readmes_curation_table_is_the_committed_stats():
    """README's per-stage table of `make curate` is `curation.stats.table` of the committed stats.json files
    (experiments/results/curation/<source>.stats.json, copied from .cache/curated/<source>/stats.json)."""
    from data_pipeline.curation import stats

    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    start = readme.index("Per-stage table of `make curate`")
    fence = readme.index("```", start) + 4
    quoted = readme[fence:readme.index("```", fence)].strip()
    tables = []
    for source in ("commoncrawl", "c4", "github", "wikipedia", "books", "arxiv", "stackexchange"):
        with open(os.path.join(ROOT, "experiments", "results", "curation", f"{source}.stats.json")) as f:
            tables.append(stats.table(json.load(f)))
    assert quoted == "\n".join(tables).strip()


def test_the_readmes_classifier_accuracy_is_the_committed_reference_models():
    """The quality classifier's held-out figures the README quotes are those `python -m
    data_pipeline.curation.reference_models` wrote (experiments/results/curation/reference_models.json)."""
    with open(os.path.join(ROOT, "experiments", "results", "curation", "reference_models.json")) as f:
        classifier = json.load(f)["classifier"]
    with open(os.path.join(ROOT, "README.md")) as f:
        text = " ".join(f.read().split())
    assert (f"accuracy ({classifier['held_out']} pages never trained on): {100 * classifier['held_out_accuracy']:.1f}%; "
            f"at 0.25 it keeps {100 * classifier['held_out_reference_kept_at_0.25']:.0f}% of held-out reference pages "
            f"and {100 * classifier['held_out_web_kept_at_0.25']:.1f}% of held-out raw web pages") in text


def test_the_readmes_curation_ablation_is_the_committed_results():
    """README's ablation table (held-out loss per source of the raw- and curated-CommonCrawl models) is
    experiments/results/curation/ablation.json, written by `python -m experiments.curation_ablation`."""
    with open(os.path.join(ROOT, "experiments", "results", "curation", "ablation.json")) as f:
        results = json.load(f)
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    for source, raw in results["raw"].items():
        curated = results["curated"][source]
        label = f"{source} (raw)" if source == "commoncrawl" else source
        assert f"| {label} | {raw:.3f} | {curated:.3f} | {curated - raw:+.3f} |" in readme, source


def test_the_curation_engine_tables_are_the_committed_bench_runs():
    """README's "Engine cost" table and docs/benchmarks.md's Curation table quote the committed
    `python -m data_pipeline.curate --bench` lines (benchmarks/results/curation_engine_2026-12-03.jsonl), rounded."""
    with open(os.path.join(ROOT, "benchmarks", "results", "curation_engine_2026-12-03.jsonl")) as f:
        runs = [json.loads(line) for line in f]
    expected = {(f"{r['megabytes']:.1f}", r["direct_running_mode"]): r for r in runs}
    assert len(expected) == 4 and all(r["kept_plain"] == r["kept_beam"] for r in runs)
    for path, pattern in (
            ("README.md", r"^\| ([\d.]+) MB, \d+ pages \| (in memory|multi_processing), \d workers? \| ([\d.]+)(?: MB/s "
                          r"per core)? \| ([\d.]+)(?: MB/s per core)? \| ([\d.]+) \|$"),
            ("docs/benchmarks.md", r"^\| ([\d.]+) MB, \d+ pages \| DirectRunner (in memory|multi_processing), \d "
                                   r"workers? \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| \d+ \|$")):
        with open(os.path.join(ROOT, path)) as f:
            rows = re.findall(pattern, f.read(), re.MULTILINE)
        assert len(rows) == 4, path
        for mb, mode, plain, beam, ratio in rows:
            run = expected[(mb, mode.replace(" ", "_"))]
            assert (float(plain), float(beam), float(ratio)) == (round(run["plain_mb_per_cpu_s"], 2),
                                                                 round(run["beam_mb_per_cpu_s"], 2),
                                                                 round(run["beam_over_plain"], 2)), (path, mb, mode)


def test_the_sweep_overhead_table_is_the_committed_timings():
    from experiments import overhead

    columns = ["caches_off", "caches_on_eval_after_save", "after", "stream_start_local", "stream_start_inline"]
    phases = [("start",), ("setup",), ("compile",), ("steps",), ("data_wait",), ("eval",),
              ("checkpoint", "plot", "other"), ("total",)]
    with open(os.path.join(ROOT, "docs", "benchmarks.md")) as f:
        text = f.read()
    section = text[text.index("## The sweep's overheads"):text.index("## TPU: fit and projected speed")]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| phase")]
    assert len(rows) == len(phases) + 1
    for column, name in enumerate(columns):
        with open(os.path.join(ROOT, "benchmarks", "results", f"cpu_sweep_overhead_{name}_2026-12-03.json")) as f:
            runs = json.load(f)
        total = {phase: sum(run[phase] for run in runs.values()) for phase in (*overhead.PHASES, "total")}
        for row, keys in zip(rows, phases, strict=False):
            quoted = float(row.split(" | ")[column + 1].split(" (")[0].strip(" |"))
            assert abs(quoted - sum(total[k] for k in keys)) <= 1.0, (name, keys, quoted)
        share = round(100 * overhead.overhead(total))
        assert rows[-1].split(" | ")[column + 1].strip(" |") == f"{share}%", (name, share)
