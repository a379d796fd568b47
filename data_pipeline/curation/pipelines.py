"""Wiring: a source's reader, its stages and the writer into one Beam pipeline, the runner it runs on, and a run.

The runner comes from ordinary Beam pipeline options. `--runner=DirectRunner` (the default) runs Beam's Python
FnApiRunner, which honours `--direct_running_mode` and `--direct_num_workers`: Beam's own DirectRunner first
tries the Prism runner, which downloads a Go binary (offline: a failed download and a fallback per run), and
Beam's maintainers advise pinning FnApiRunner to keep the Python runner (apache/beam#34612). Any other runner
(DataflowRunner, FlinkRunner, SparkRunner, PrismRunner, ...) is passed through untouched.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import json
import types
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from data_pipeline.curation import io, logs, stages, stats
from llama_jax.cli import UsageError
from llama_jax.corpus_spec import SOURCE_NAMES

PYTHON_DIRECT_RUNNER = "FnApiRunner"
DIRECT_RUNNERS = ("DirectRunner", "SwitchingDirectRunner")


def pipeline_options(beam_args: list[str]) -> PipelineOptions:
    """Beam options from command-line style `beam_args`, with the DirectRunner pinned to the Python one; an
    argument no Beam option knows is a UsageError (Beam itself would only log and ignore it)."""
    parser = beam.options.pipeline_options._BeamArgumentParser(allow_abbrev=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(beam_args)
    if unknown:
        known = [opt for action in parser._actions for opt in action.option_strings]
        close = difflib.get_close_matches(unknown[0].split("=")[0], known, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UsageError(f"unknown option {unknown[0]!r}: neither a curate flag nor a Beam pipeline option{hint}")
    options = PipelineOptions(beam_args)
    standard = options.view_as(StandardOptions)
    if standard.runner is None or standard.runner in DIRECT_RUNNERS:
        standard.runner = PYTHON_DIRECT_RUNNER
    return options


def source_module(source: str) -> types.ModuleType:
    """The curation module of `source` (`data_pipeline.curation.<source>`: NAME, Config, read, curate)."""
    if source not in SOURCE_NAMES:
        raise UsageError(f"--source={source!r} is not a LLaMA source; expected one of {', '.join(SOURCE_NAMES)}")
    return importlib.import_module(f"data_pipeline.curation.{source}")


def make_config(module: types.ModuleType, overrides: dict[str, str]) -> Any:
    """The source's Config with `overrides` (field name -> text, converted to the field's default's type)."""
    config = module.Config()
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    values = {}
    for name, text in overrides.items():
        if name not in fields:
            raise UsageError(f"--config.{name}: {module.NAME} has no such setting; its settings are "
                             f"{', '.join(fields)}")
        default = fields[name]
        try:
            if isinstance(default, bool):
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                values[name] = text.lower() in ("true", "1")
            elif isinstance(default, (int, float)):
                values[name] = type(default)(text)
            elif isinstance(default, tuple):  # comma-separated items of the default's item type
                item = type(default[0]) if default else str
                values[name] = tuple(item(x) for x in text.split(",") if x)
            else:
                values[name] = text
        except ValueError:
            raise UsageError(f"--config.{name}={text!r}: expected a {type(default).__name__} "
                             f"like its default {default!r}") from None
    return dataclasses.replace(config, **values)


def check_output(output_dir: str) -> None:
    """Refuses an output directory that already holds files: a curation run never overwrites (nor resumes)."""
    try:
        (found,) = FileSystems.match([output_dir.rstrip("/") + "/*"])
        existing = sorted(m.path for m in found.metadata_list)
    except (OSError, beam.io.filesystem.BeamIOError):
        existing = []
    if existing:
        raise FileExistsError(f"--output={output_dir} is not empty ({len(existing)} files, e.g. {existing[0]}); "
                              "curation never overwrites nor resumes: choose a new directory or delete this one")


@dataclasses.dataclass(frozen=True)
class Job:
    """One source to curate: from the files `input_glob` matches into `output_dir`, with its module's `config`."""

    source: str
    input_glob: str
    output_dir: str
    config: Any = None

    def module_config(self) -> Any:
        """The job's config, or its source's defaults."""
        return self.config if self.config is not None else source_module(self.source).Config()


class Curate(beam.PTransform):
    """A source's reader, stages and sharded writer, under the source's name (so that several sources can share
    one pipeline), and its drop log (`io.WriteDropLog`); yields the written shard paths."""

    def __init__(self, job: Job):
        super().__init__(label=job.source)
        self.job = job

    def expand(self, begin: beam.pvalue.PBegin) -> beam.PCollection:
        module, config = source_module(self.job.source), self.job.module_config()
        docs = module.curate(module.read(begin, self.job.input_glob, config), config)
        drops = stages.drop_logs(begin.pipeline, self.job.source)
        if drops:
            _ = drops | "FlattenDrops" >> beam.Flatten() | "WriteDrops" >> io.WriteDropLog(self.job.output_dir)
        return docs | "Write" >> io.WriteJsonl(self.job.source, self.job.output_dir)


def apply_jobs(pipeline: beam.Pipeline, jobs: list[Job]) -> None:
    """Adds every job's `Curate` to `pipeline`, after checking that each output directory is new or empty."""
    if len({job.source for job in jobs}) != len(jobs):
        raise ValueError(f"one job per source, got {[job.source for job in jobs]}")
    for job in jobs:
        check_output(job.output_dir)
    for job in jobs:
        _ = pipeline | Curate(job)


def collect(result: beam.runners.runner.PipelineResult, pipeline: beam.Pipeline, jobs: list[Job]) -> dict[str, dict]:
    """Waits for the run, writes each job's `output_dir/stats.json`; returns source -> per-stage stats."""
    result.wait_until_finish()
    summaries = {}
    for job in jobs:
        summary = stats.summarize(stats.counters(result, job.source), job.source,
                                  stats.stage_names(pipeline, job.source))
        summary["config"] = dataclasses.asdict(job.module_config())
        with FileSystems.create(f"{job.output_dir.rstrip('/')}/stats.json") as f:
            f.write(json.dumps(summary, indent=1).encode())
        summaries[job.source] = summary
    return summaries


def run_jobs(jobs: list[Job], beam_args: list[str]) -> dict[str, dict]:
    """Curates every job in one Beam pipeline on the runner `beam_args` select; returns source -> stats. Beam's
    own logging (launcher and workers) goes to the first job's `output_dir/beam.log` (`logs.to_file`)."""
    pipeline = beam.Pipeline(options=pipeline_options(beam_args))
    apply_jobs(pipeline, jobs)
    with logs.to_file(f"{jobs[0].output_dir.rstrip('/')}/{logs.BEAM_LOG}"):
        return collect(pipeline.run(), pipeline, jobs)


def run(source: str, input_glob: str, output_dir: str, beam_args: list[str], config: Any = None) -> dict:
    """Curates `source` from `input_glob` into `output_dir`; returns its per-stage stats (also in stats.json)."""
    return run_jobs([Job(source, input_glob, output_dir, config)], beam_args)[source]
