"""A curation command on Beam's multi-process DirectRunner, as a person runs it (a subprocess with a shell's
environment): the console shows the per-stage table and the command's own line, and none of the lines Beam's
launcher and worker processes log (they are in OUTPUT/beam.log, which the test checks they reached)."""

import json
import subprocess
import sys

from helpers import NOISE, ROOT, person_env

# Lines Beam's Python runner logs around a run: each worker's start and end, its gRPC channels, and warnings
# about optional libraries and staging.
BEAM_NOISE = ("Python sdk harness", "Creating insecure", "State channel established", "apitools not found",
              "No semi_persistent_directory found", "sdk_worker", "apache_beam", "INFO:", "WARNING:")
PAGE = ("The shlex class makes it easy to write lexical analyzers for simple syntaxes resembling that of the Unix "
        "shell. This will often be useful for writing minilanguages, for example in run control files for Python "
        "applications. It is also useful for parsing quoted strings.")


def test_a_multi_process_curation_run_prints_its_table_and_no_beam_log_line(tmp_path):
    with open(tmp_path / "pages.jsonl", "w") as f:
        f.write(json.dumps({"id": "shlex", "url": "https://docs.python.org/3/library/shlex.html", "text": PAGE}) + "\n")
        f.write(json.dumps({"id": "lorem", "text": "Lorem ipsum dolor sit amet, consectetur adipiscing elit."}) + "\n")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "data_pipeline.curate", "--source=c4", f"--input={tmp_path}/*.jsonl", f"--output={out}",
         "--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"],
        cwd=ROOT, env=person_env(PYTHONPATH=ROOT), capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stdout + result.stderr
    assert not [line for line in console.splitlines() if any(noise in line for noise in BEAM_NOISE + NOISE)], console
    assert result.stderr == ""
    assert result.stdout.splitlines()[0] == "c4: 1 files read" and result.stdout.splitlines()[-1].startswith(f"wrote {out}")
    log = (out / "beam.log").read_text()
    assert log.count("Python sdk harness starting") == 2 and "Creating insecure state channel" in log  # both workers'
