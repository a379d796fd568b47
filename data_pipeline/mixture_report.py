"""`python -m data_pipeline.mixture_report --config=experiments/configs/tiny.py --batches=N [--json]`: the mixture table.

Draws N batches of this process's training stream and prints, per source, the target and observed share of
tokens, documents and tokens drawn, and epochs of the source so far next to Table 1's epochs over 1.4T tokens,
plus skipped records.
"""

from __future__ import annotations

import json

from absl import flags
from ml_collections import config_flags

from llama_jax import cli

FLAGS = flags.FLAGS



def format_report(report: dict) -> str:
    """The report of Stream.report() as a fixed-width table."""
    lines = [f"{report['batches']} batches, {report['tokens']:,} tokens",
             f"{'source':14s} {'target':>7s} {'observed':>8s} {'docs':>8s} {'tokens':>12s} {'epochs':>8s} "
             f"{'paper':>6s}  skipped"]
    for s in report["sources"]:
        skipped = ", ".join(f"{k} {v}" for k, v in s["skipped"].items() if v) or "-"
        paper = f"{s['paper_epochs']:6.2f}" if s["paper_epochs"] is not None else f"{'-':>6s}"
        lines.append(f"{s['name']:14s} {s['target']:7.2%} {s['observed']:8.2%} {s['docs']:8,d} {s['tokens']:12,d} "
                     f"{s['epochs']:8.4f} {paper}  {skipped}")
    return "\n".join(lines)


def define_flags() -> None:
    """The command's flags (defined only when run as a command, so that importing it defines none)."""
    config_flags.DEFINE_config_file("config", None, "experiment config file (experiments/configs/*.py)")
    flags.DEFINE_integer("batches", 100, "batches to draw")
    flags.DEFINE_bool("json", False, "print the report as JSON")
    flags.DEFINE_integer("process_index", 0, "which host's share to draw")
    flags.DEFINE_integer("process_count", 1, "number of hosts the sources are split across")


def main(argv: list[str]) -> None:
    del argv
    import data_pipeline

    stream = data_pipeline.train_stream(FLAGS.config, process_index=FLAGS.process_index,
                                        process_count=FLAGS.process_count)
    for _ in range(FLAGS.batches):
        next(stream)
    report = stream.report()
    print(json.dumps(report, indent=1) if FLAGS.json else format_report(report))


if __name__ == "__main__":
    define_flags()
    flags.mark_flag_as_required("config")
    cli.run_absl(main)
