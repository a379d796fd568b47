"""The import rules of .ci/check_imports.py: the repository keeps them, and a planted violation of each fails."""

import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, ".ci", "check_imports.py")


def check(root) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, str(root)], capture_output=True, text=True)


def tree(tmp_path, files: dict[str, str]):
    """A copy of the repository's three packages with `files` (path -> source) added or replaced."""
    for package in ("llama_jax", "data_pipeline", "experiments"):
        shutil.copytree(os.path.join(ROOT, package), tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__", "results", "notebooks"))
    for path, source in files.items():
        (tmp_path / path).write_text(source)
    return tmp_path


def test_the_repository_keeps_the_rules():
    result = check(ROOT)
    assert result.returncode == 0, result.stderr


def test_llama_jax_importing_data_pipeline_fails_even_inside_a_function(tmp_path):
    root = tree(tmp_path, {"llama_jax/planted.py": "def f():\n    from data_pipeline import sources\n"})
    result = check(root)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: llama_jax/planted.py:2: llama_jax imports data_pipeline.sources; llama_jax must not import "
        "data_pipeline or experiments (move the shared fact to llama_jax, e.g. llama_jax.corpus_spec, or load it "
        "by name)"]


def test_data_pipeline_may_import_llama_jax(tmp_path):
    assert check(tree(tmp_path, {"data_pipeline/planted.py": "from llama_jax import cli\n"})).returncode == 0


def test_a_cycle_fails_and_names_its_modules(tmp_path):
    root = tree(tmp_path, {"llama_jax/planted_a.py": "from llama_jax import planted_b\n",
                           "llama_jax/planted_b.py": "def f():\n    import llama_jax.planted_a\n"})
    result = check(root)
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["error: import cycle: llama_jax.planted_a <-> llama_jax.planted_b"]
