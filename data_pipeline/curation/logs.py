"""Beam's own logging kept off the console, in the launcher and in the worker processes it starts.

Beam's Python runner logs each worker's start and end at INFO (about twenty lines a worker: "Python sdk harness
starting", "Creating insecure state channel ...") and warns about optional libraries ("apitools not found") and
staging ("No semi_persistent_directory found"). With `--direct_running_mode=multi_processing` every worker is a
process of its own (`python -m apache_beam.runners.worker.sdk_worker_main`, started by `subprocess.Popen` with
the launcher's environment and standard error) whose root logger gets a handler on standard error from the first
module-level `logging.warning` and level INFO from the harness. So, while a pipeline runs, `to_file` points file
descriptor 2, which the workers inherit, at the log file; and in the launcher a handler on the root logger sends
every record logged from Beam's code there (records logged before a run, such as the import-time warnings, are
held and written into the first run's log). Records of any other code keep Python's default: WARNING and above
on standard error. What a person reads, the per-stage tables and the commands' own lines, goes to standard
output, untouched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

BEAM_LOG = "beam.log"
_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


def _from_beam(record: logging.LogRecord) -> bool:
    """Whether `record` was logged by Apache Beam's code (its logger, or the root logger from inside Beam)."""
    return record.name.startswith("apache_beam") or f"{os.sep}apache_beam{os.sep}" in record.pathname


class _BeamHandler(logging.Handler):
    """Beam's records to the current log file (held in memory while there is none); other records of WARNING and
    above to standard error, as Python does for a root logger without handlers."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.held: list[logging.LogRecord] = []
        self.file = None

    def emit(self, record: logging.LogRecord) -> None:
        if not _from_beam(record):
            if record.levelno >= logging.WARNING:
                sys.stderr.write(logging.lastResort.format(record) + "\n")
            return
        if self.file is None:
            self.held.append(record)
        else:
            self.file.write(_FORMAT.format(record) + "\n")
            self.file.flush()


def _handler() -> _BeamHandler:
    """The one `_BeamHandler` on the root logger (installed by the first call)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, _BeamHandler):
            return handler
    handler = _BeamHandler()
    root.addHandler(handler)
    return handler


def hold() -> None:
    """From now on Beam's records in this process are held for the next `to_file` instead of being printed; call it
    before apache_beam is first imported (it warns at import)."""
    _handler()


@contextlib.contextmanager
def to_file(path: str) -> Iterator[str]:
    """While the block runs, Beam's log records, this process's and its workers', go to the local file `path`
    (appended; a remote path such as gs://... gets a local log, copied there when the block ends). Yields the
    local path."""
    local = path if "://" not in path else os.path.join(tempfile.mkdtemp(prefix="curation-log-"), BEAM_LOG)
    os.makedirs(os.path.dirname(os.path.abspath(local)), exist_ok=True)
    handler = _handler()
    with open(local, "a", encoding="utf-8") as f:
        previous, handler.file = handler.file, f
        for record in handler.held:
            handler.emit(record)
        handler.held.clear()
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(f.fileno(), 2)
        try:
            yield local
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            handler.file = previous
    if local != path:
        from apache_beam.io.filesystems import FileSystems

        with open(local, "rb") as src, FileSystems.create(path) as dst:
            dst.write(src.read())
