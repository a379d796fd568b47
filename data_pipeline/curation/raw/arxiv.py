"""arXiv's raw material: LaTeX sources of the texlive documentation and journal templates, a document of several
files as a `.tar.gz` of its `.tex` files, as arXiv serves a submission (read by `curation.arxiv`).
"""

from __future__ import annotations

import glob
import gzip
import io as _io
import os
import re
import tarfile

_DOCUMENTCLASS = re.compile(rb"^[ \t]*\\documentclass", re.M)
_INCLUDE = re.compile(rb"\\(?:input|include|subfile)\s*\{([^}]+)\}")
_BYTES_COMMENT = re.compile(rb"(?<!\\)%.*")


def _includes(data: bytes) -> list[bytes]:
    """The file names a LaTeX source `\\input`s or `\\include`s, in order, outside comments."""
    return [m.group(1).strip() for line in data.split(b"\n") for m in _INCLUDE.finditer(_BYTES_COMMENT.sub(b"", line))]


def projects(paths: list[str]) -> list[list[str]]:
    """The `.tex`/`.tex.gz` `paths` grouped into papers: each file with `\\documentclass` and the files it includes
    (recursively, resolved beside it, main file first, in order of inclusion); every other file alone."""
    sources = {path: _read_bytes(path) for path in paths}
    included, papers = set(), []
    for path in sorted(paths):
        if not _DOCUMENTCLASS.search(sources[path]):
            continue
        members, todo = [], [path]
        while todo:
            current = todo.pop(0)
            if current in members:
                continue
            members.append(current)
            for name in _includes(sources[current]):
                base = os.path.normpath(os.path.join(os.path.dirname(path), name.decode("utf-8", "replace")))
                found = next((p for p in (base, base + ".tex", base + ".tex.gz") if p in sources and p not in members),
                             None)
                if found:
                    todo.append(found)
        included.update(members[1:])
        papers.append(members)
    mains = {members[0] for members in papers}
    return papers + [[path] for path in sorted(paths) if path not in mains and path not in included]


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    return gzip.decompress(data) if path.endswith(".gz") else data


def _tarball(members: list[str]) -> bytes:
    """A gzipped tarball of `members` (names relative to their common directory), byte-identical across runs."""
    root = os.path.commonpath([os.path.dirname(m) for m in members])
    buffer = _io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path in members:
            data = _read_bytes(path)
            info = tarfile.TarInfo(os.path.relpath(path, root).removesuffix(".gz"))
            info.size, info.mtime, info.mode = len(data), int(os.path.getmtime(path)), 0o644
            tar.addfile(info, _io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), mtime=0)


def write_raw(roots: dict[str, str], out_dir: str) -> list[str]:
    """arXiv-style sources from the LaTeX documentation and journal templates of texlive-science-doc and
    texlive-publishers-doc: a document of several files (a `\\documentclass` file and what it includes) as a
    `.tar.gz` of its `.tex` files, a single file as it is (`.tex` or `.tex.gz`), bytes untouched (some are Latin-1,
    as real submissions are). The files go flat into `out_dir` (`out_dir/*` reads them all), named after their
    path in the package with "--" between the parts; returns them."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for package in ("texlive-science-doc", "texlive-publishers-doc"):
        root = roots[package]
        paths = sorted(p for pattern in ("**/*.tex", "**/*.tex.gz")
                       for p in glob.glob(f"{root}/{pattern}", recursive=True) if os.path.isfile(p))
        for members in projects(paths):
            name = "--".join([package, *os.path.relpath(members[0], f"{root}/usr/share/doc/texlive-doc").split("/")])
            if len(members) > 1:
                name, data = name.removesuffix(".gz").removesuffix(".tex") + ".tar.gz", _tarball(members)
            else:
                with open(members[0], "rb") as f:
                    data = f.read()
            with open(f"{out_dir}/{name}", "xb") as f:  # "x": two papers never share a name
                f.write(data)
            written.append(f"{out_dir}/{name}")
    return written
