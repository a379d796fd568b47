"""What several test modules share: the training processes they start (and always stop), a small real corpus, and
a record of a workdir's files.

Processes: `started(...)` starts commands in their own process groups and, when the `with` block ends for any
reason (a failed assertion, a timeout), kills every group that still runs, children included. No test waits on
wall-clock time for correctness: `wait_until` polls a condition that only becomes true, with a deadline that is
only a safety net. `python tests/helpers.py STOP TRAIN_ARGS...` is the training command whose data stream blocks
for good before the batch of step STOP + 1, so that a test kills it at a known step.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEADLINE_S = 1200.0  # a safety net against a hung process, far beyond any run's time on a loaded machine
# Lines that libraries print on a CPU machine when nobody asked them: libtpu probing for a TPU ("could not determine
# TPU worker hostnames", "jellyfish", "libtpu"), JAX giving up on it ("Unable to initialize backend"), TensorFlow's
# banners (its oneDNN notice and the absl line before it on AVX-512 processors, its CPU-instruction notices).
# A quiet console shows none of them (test_tensorflow_settings.py shows TensorFlow's are caught when it prints them).
NOISE = ("could not determine TPU worker hostnames", "Unable to initialize backend", "jellyfish", "oneDNN",
         "cpu_feature_guard", "rebuild TensorFlow", "absl::InitializeLog", "libtpu")


def person_env(**extra: str) -> dict[str, str]:
    """The environment a person's shell has: this session's fake devices and compilation cache, without the
    settings conftest.py or the package add (JAX_PLATFORMS=cpu, TF_CPP_MIN_LOG_LEVEL, TF_ENABLE_ONEDNN_OPTS), so that
    commands show what a person would see."""
    added = ("JAX_PLATFORMS", "TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")
    env = {k: v for k, v in os.environ.items() if k not in added}
    return {**env, **extra}


class Process:
    """A command started in its own process group, its stderr in a file (a pipe could fill and block it)."""

    def __init__(self, command: list[str], log: str, env: dict[str, str] | None = None):
        self.command, self.log = command, log
        with open(log, "w") as stderr:
            self.popen = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
                                          start_new_session=True)

    def stderr(self) -> str:
        with open(self.log, errors="replace") as f:
            return f.read()

    def kill(self) -> int:
        """SIGKILL the whole process group; returns the exit status (-9 unless it had ended)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        return self.popen.wait()

    def wait(self) -> int:
        """Wait for it to end (up to the safety deadline); its exit status."""
        try:
            return self.popen.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired as timeout:
            self.kill()
            raise AssertionError(f"{self.command} did not end in {DEADLINE_S:.0f} s: {self.stderr()[-3000:]}") from timeout


@contextlib.contextmanager
def started(*commands: tuple[list[str], str], env: dict[str, str] | None = None) -> Iterator[list[Process]]:
    """Start each (command, stderr log file); on leaving, kill those still running with all their children."""
    processes: list[Process] = []
    try:
        for command, log in commands:
            processes.append(Process(command, log, env))
        yield processes
    finally:
        for process in processes:
            if process.popen.poll() is None:
                process.kill()


def wait_until(condition: Callable[[], bool], process: Process, what: str) -> None:
    """Poll `condition` until it holds; fail if `process` ends first (or at the safety deadline)."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if process.popen.poll() is not None:
            if condition():
                return
            raise AssertionError(f"{process.command} ended (status {process.popen.returncode}) before {what}: "
                                 f"{process.stderr()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {DEADLINE_S:.0f} s: {process.stderr()[-3000:]}")
        time.sleep(0.05)


def train_command(workdir: str, *overrides: str, stop_at: int | None = None) -> list[str]:
    """`python -m llama_jax.train` on the debug config; with `stop_at`, the run blocks after step `stop_at`."""
    entry = ["-m", "llama_jax.train"] if stop_at is None else [os.path.abspath(__file__), str(stop_at)]
    return [sys.executable, *entry, "--config=experiments/configs/debug.py", f"--workdir={workdir}", *overrides]


class StreamHook:
    """A training stream that calls `hook()` once, before it gives its batch number `at` (counted from 0 in this
    run, whatever step the run resumed at), and is otherwise the stream it wraps."""

    def __init__(self, stream, at: int, hook: Callable[[], None]):
        self._stream, self._at, self._hook, self._served = stream, at, hook, 0

    def __iter__(self):
        return self

    def __next__(self):
        if self._served == self._at:
            self._hook()
        self._served += 1
        return next(self._stream)

    def __getattr__(self, name: str):  # get_state, set_state, report
        return getattr(self._stream, name)


def hooked_streams(train_module, at: int, hook: Callable[[], None]) -> Callable:
    """A replacement for `train_module.data_streams` whose training stream runs `hook` after `at` steps of the run."""
    original = train_module.data_streams

    def data_streams(config):
        stream, eval_streams = original(config)
        return StreamHook(stream, at, hook), eval_streams

    return data_streams


# ---------------------------------------------------------------------------------------------- workdirs
def files(directory: str) -> dict[str, tuple[int, int]]:
    """Every file under `directory`: relative path -> (size, mtime in ns); equal records mean nothing was written."""
    found = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            stat = os.stat(path)
            found[os.path.relpath(path, directory)] = (stat.st_size, stat.st_mtime_ns)
    return found


# ---------------------------------------------------------------------------------------------- corpus
def stdlib_paragraphs() -> list[str]:
    """Paragraphs of the docstrings of the standard library's top-level modules, in file order: real text that
    is on every machine."""
    stdlib = sysconfig.get_paths()["stdlib"]
    paragraphs = []
    for name in sorted(os.listdir(stdlib)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(stdlib, name), encoding="utf-8", errors="replace") as f:
            try:
                tree = ast.parse(f.read())
            except SyntaxError:
                continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and (doc := ast.get_docstring(node)):
                paragraphs.extend(p.strip() for p in doc.split("\n\n") if len(p.strip()) > 40)
    return list(dict.fromkeys(paragraphs))  # some docstrings are repeated across modules


def build_corpus(out: str, vocab_size: int, docs_per_source: int) -> str:
    """The seven sources in the embedded corpus's layout (each a different slice of the stdlib's docstrings,
    written by the corpus builder's own functions) and a SentencePiece tokenizer trained on them; returns `out`."""
    from data_pipeline import corpus
    from llama_jax.corpus_spec import SOURCE_NAMES

    paragraphs = stdlib_paragraphs()
    manifest = {"version": corpus.VERSION, "sources": {}}
    for k, name in enumerate(SOURCE_NAMES):
        docs = [(f"{name}/{i}", text) for i, text in enumerate(paragraphs[k::len(SOURCE_NAMES)][:docs_per_source])]
        manifest["sources"][name] = corpus.write_source(name, docs, out)
    corpus.tokenizer_sample(out, manifest, f"{out}/sample.txt", 1 << 20)
    corpus.train_tokenizer(f"{out}/sample.txt", f"{out}/tokenizer", vocab_size, threads=2)
    with open(f"{out}/manifest.json", "w") as f:
        json.dump(manifest, f)
    return out


def _block_forever() -> None:
    threading.Event().wait()


if __name__ == "__main__":  # the training command, stopped for good before the batch of step STOP + 1
    from llama_jax import cli
    from llama_jax.train import loop as train

    stop_at = int(sys.argv.pop(1))
    train.data_streams = hooked_streams(train, stop_at, _block_forever)
    train.define_flags()
    cli.run_absl(train.main)
