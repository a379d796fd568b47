"""Test setup: 8 fake CPU devices (before jax is imported), so meshes of 1 to 8 devices run on a laptop."""

import os

import pytest

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
# The suite compiles hundreds of tiny programs and runs each a few steps: LLVM's optimisation of the CPU code
# costs more than it saves (measured: test_model.py + test_sharding.py 147 s -> 107 s on the 2-core box).
# Only code generation changes; XLA's graph passes, and so the programs and their memory plans, do not.
os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Persistent compilation cache: the same train step compiles once for the tests and the training processes
# they launch (which inherit this environment), instead of once per test.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache", "jax-tests")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> str:
    """A real seven-source corpus in the embedded corpus's layout (700 stdlib docstring paragraphs per source) with
    its own 1024-piece tokenizer, built once per session so that no test needs `make corpus`; under pytest-xdist
    (`make test` runs 2 workers) once for all workers, in their shared temporary directory, under a file lock."""
    from filelock import FileLock
    from helpers import build_corpus

    if "PYTEST_XDIST_WORKER" not in os.environ:
        return build_corpus(str(tmp_path_factory.mktemp("corpus")), vocab_size=1024, docs_per_source=700)
    shared = tmp_path_factory.getbasetemp().parent
    out, done = shared / "small_corpus", shared / "small_corpus.done"
    with FileLock(str(shared / "small_corpus.lock")):
        if not done.exists():
            build_corpus(str(out), vocab_size=1024, docs_per_source=700)
            done.touch()
    return str(out)
