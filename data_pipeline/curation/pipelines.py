"""Wiring: a source's reader, its stages and the writer into one Beam pipeline, and the runner it runs on.

The runner comes from ordinary Beam pipeline options. `--runner=DirectRunner` (the default) runs Beam's Python
FnApiRunner, which honours `--direct_running_mode` and `--direct_num_workers`: Beam's own DirectRunner first
tries the Prism runner, which downloads a Go binary (offline: a failed download and a fallback per run), and
Beam's maintainers advise pinning FnApiRunner to keep the Python runner (apache/beam#34612). Any other runner
(DataflowRunner, FlinkRunner, SparkRunner, PrismRunner, ...) is passed through untouched.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

PYTHON_DIRECT_RUNNER = "FnApiRunner"
DIRECT_RUNNERS = ("DirectRunner", "SwitchingDirectRunner")


def pipeline_options(beam_args: list[str]) -> PipelineOptions:
    """Beam options from command-line style `beam_args`, with the DirectRunner pinned to the Python one."""
    options = PipelineOptions(beam_args)
    standard = options.view_as(StandardOptions)
    if standard.runner is None or standard.runner in DIRECT_RUNNERS:
        standard.runner = PYTHON_DIRECT_RUNNER
    return options
