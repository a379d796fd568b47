"""GitHub's raw material: source trees with their licence files, from this Python installation (the standard
library and installed distributions as repositories; read by `curation.github`).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sysconfig

from data_pipeline.curation.github import is_licence_file

# Installed distributions written as repositories: MIT, BSD or Apache ones, then three that are not (certifi:
# MPL-2.0; typing_extensions: PSF; tqdm: MPL-2.0 first, MIT for some files) and one whose wheel carries no licence
# file (tokenizers). Every one is installed by `make install` (core, data and dev extras).
DISTRIBUTIONS = ("numpy", "absl-py", "six", "wrapt", "packaging", "requests", "idna", "pyparsing", "toml", "pyyaml",
                 "protobuf", "certifi", "typing_extensions", "tqdm", "tokenizers")
COMPILED = (".pyc", ".so", ".pyd", ".dll", ".dylib", ".a")


def write_raw(roots: dict[str, str], out_dir: str) -> list[str]:
    """Source trees with their licence files, from this Python installation: `cpython/` (`stdlib_files`: the
    standard library with CPython's LICENSE, the PSF licence, which is not Apache, BSD or MIT, so the default
    Config drops it; `Config(licences=(..., "psf"))` keeps it) and one directory per distribution in
    DISTRIBUTIONS (`distribution_files`). `roots` is unused: nothing comes from the Debian packages."""
    files = stdlib_files()
    for name in DISTRIBUTIONS:
        files += distribution_files(name)
    return write_tree(files, out_dir)


def write_tree(files: list[tuple[str, str]], out_dir: str) -> list[str]:
    """Copies each (file, path in the tree) into `out_dir`, which must be new or empty; returns the files written."""
    if os.path.exists(out_dir) and os.listdir(out_dir):
        raise FileExistsError(f"{out_dir} is not empty; write the raw material into a new directory")
    written = []
    for source, target in files:
        os.makedirs(os.path.dirname(f"{out_dir}/{target}"), exist_ok=True)
        shutil.copyfile(source, f"{out_dir}/{target}")
        written.append(f"{out_dir}/{target}")
    return written


def stdlib_files() -> list[tuple[str, str]]:
    """(file, path in the tree) of `cpython/`: CPython's LICENSE and the standard library's .py files as corpus.py's
    github source takes them (no tests, idlelib, lib2to3 or site-packages)."""
    stdlib = sysconfig.get_paths()["stdlib"]
    files = [(f"{stdlib}/LICENSE.txt", "cpython/LICENSE")]
    for dirpath, dirnames, filenames in os.walk(stdlib):
        rel_dir = os.path.relpath(dirpath, stdlib)
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "test", "tests", "idlelib", "lib2to3",
                                                              "__pycache__"))
        files += [(f"{dirpath}/{name}", os.path.normpath(f"cpython/Lib/{rel_dir}/{name}"))
                  for name in sorted(filenames) if name.endswith(".py")]
    return files


def distribution_files(name: str) -> list[tuple[str, str]]:
    """(installed file, path in the tree) of one installed distribution, as a repository named after it: the licence
    files at the top of its .dist-info (or .dist-info/licenses) at the root, then its installed files except
    compiled ones."""
    dist = importlib.metadata.distribution(name)
    repo = dist.metadata["Name"].lower().replace("_", "-")
    pairs = []
    for entry in dist.files or []:
        parts = entry.parts
        source = str(dist.locate_file(entry))
        if parts[0].endswith(".dist-info"):
            top = parts[1:] if len(parts) == 2 else parts[2:] if len(parts) == 3 and parts[1] == "licenses" else ()
            if len(top) == 1 and is_licence_file(top[0]):
                pairs.append((source, f"{repo}/{top[0]}"))
        elif parts[0] != ".." and "__pycache__" not in parts and not entry.name.endswith(COMPILED) \
                and ".so." not in entry.name:
            pairs.append((source, f"{repo}/{entry.as_posix()}"))
    return sorted(pairs, key=lambda pair: pair[1])
