"""ArXiv (LLaMA §2.1, after Lewkowycz et al. 2022): LaTeX sources with everything before the first section, the
comments, the bibliography and the appendices removed, and the authors' argument-free macros expanded inline.

The rules are RedPajama v1's `arxiv_cleaner.py` (the public reproduction of LLaMA's recipe), without its bugs:
- its section regex lacks a `|` between `paragraph` and `subparagraph`, so neither a lone `\\paragraph{...}` nor a
  lone `\\subparagraph{...}` starts the text; and its greedy `^(.*)` keeps the text from the LAST section header,
  not the first. Here the first header of any of the seven levels starts the text.
- its inline-comment regex `[^\\\\]%.+$` also eats the character before the `%` ("50%" -> "5") and keeps a
  comment after `\\\\` (a line break). Here a `%` preceded by an even number of backslashes starts a comment.
- it finds macro definitions in the raw text (a commented-out `\\newcommand` counts) by a greedy one-line regex
  (`\\newcommand{\\a}{x}\\newcommand{\\b}{y}` defines `\\a` as `x}\\newcommand{\\b}{y`) and expands one level only.
  Here definitions are read from the comment-free text with balanced braces, removed once expanded, and
  expanded in the text and in each other (to `Config.macro_depth` levels).
- it cuts the preamble before removing comments; here comments go first, so a commented-out `%\\section` in the
  preamble does not start the text. And the back matter is cut before the preamble, so a file that opens with
  `\\appendix` (an `appendix.tex` of a multi-file paper) is cut whole, not kept from its first `\\section` on.
As in RedPajama, a paper's several `.tex` files are cleaned one by one and joined with "\\n" (a file with no
section header contributes nothing); macros defined in any file are expanded in all of them. Also as in RedPajama,
the cuts are per file: an appendix kept in its own file after the main file's `\\appendix` survives (following
`\\input` order to cut across files would need the paper flattened first, as latexpand does).

Raw formats (`read`): `.tex`, `.tex.gz`, and tarballs (`.tar`, `.tar.gz`, `.tgz`) holding the `.tex` files of
one paper (members in archive order), and JSON lines (`.jsonl`, `.json`, gzipped or not). A paper of several files
carries `meta["files"]` (the member names) and `meta["file_chars"]` (each file's length in the text, joined with
"\\n"), so that each per-file rule sees the file boundaries.
"""

from __future__ import annotations

import dataclasses
import gzip
import io as _io
import os
import re
import tarfile
import zlib
from collections.abc import Callable, Iterator

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from data_pipeline.curation import io
from data_pipeline.curation.stages import Doc, Stage, count

NAME = "arxiv"
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


@dataclasses.dataclass(frozen=True)
class Config:
    # RedPajama v1 arxiv_cleaner: the text starts at the first of these commands (starred or with an optional
    # argument); a file with none of them is dropped.
    section_commands: tuple[str, ...] = ("chapter", "part", "section", "subsection", "subsubsection", "paragraph",
                                         "subparagraph")
    # RedPajama v1 arxiv_cleaner: everything from the first of these (regexes) on is cut: appendices and the
    # bibliography. `\bibliography{` does not match `\bibliographystyle{`.
    back_matter: tuple[str, ...] = (r"\\appendix(?![A-Za-z])", r"\\begin\{references\}", r"\\begin\{REFERENCES\}",
                                    r"\\begin\{thebibliography\}", r"\\bibliography\{")
    # Levels of macros used inside other macros' definitions that are expanded (RedPajama: 1); a cycle of
    # definitions (\def\a{\b} \def\b{\a}) stops here.
    macro_depth: int = 8


# ---------------------------------------------------------------------------------------------- the rules
_FULL_LINE_COMMENT = re.compile(r"^[ \t]*%.*(?:\n|\Z)", re.M)
_INLINE_COMMENT = re.compile(r"(?<!\\)((?:\\\\)*)%.*$", re.M)  # a % after an even number of backslashes


def strip_comments(tex: str) -> str:
    """`tex` without `%` comments: comment-only lines go whole, an inline comment to the end of its line; `\\%` (a
    percent sign) stays, `\\\\%` (a line break, then a comment) is a comment."""
    return _INLINE_COMMENT.sub(r"\1", _FULL_LINE_COMMENT.sub("", tex))


def _section_pattern(commands: tuple[str, ...]) -> re.Pattern:
    return re.compile(r"\\(?:" + "|".join(map(re.escape, commands)) + r")(?![A-Za-z])\*?\s*(?:\[[^\]]*\])?\s*\{")


def cut_preamble(tex: str, commands: tuple[str, ...] = Config.section_commands) -> str:
    """`tex` from its first section-level command on (`\\section{`, `\\section*{`, `\\section[short]{`, ...); ""
    when it has none."""
    match = _section_pattern(commands).search(tex)
    return tex[match.start():] if match else ""


def cut_back_matter(tex: str, patterns: tuple[str, ...] = Config.back_matter) -> str:
    """`tex` up to the first appendix or bibliography marker (`\\appendix`, `\\begin{thebibliography}`, ...)."""
    match = re.search("|".join(f"(?:{p})" for p in patterns), tex)
    return tex[:match.start()] if match else tex


# \newcommand{\x}, \newcommand*\x, \def\x: the name, then what follows must be the body's brace (no arguments).
_DEFINITION = re.compile(r"\\newcommand\*?\s*(?:\{\s*\\([A-Za-z]+)\s*\}|\\([A-Za-z]+))\s*|\\def\s*\\([A-Za-z]+)\s*")


def _braced(tex: str, start: int) -> int | None:
    """The index just past the brace group opening at `tex[start]` ("{"), or None if it never closes."""
    depth, i = 0, start
    while i < len(tex):
        c = tex[i]
        if c == "\\":
            i += 2  # an escaped character (\{, \}) does not count
            continue
        depth += (c == "{") - (c == "}")
        i += 1
        if depth == 0:
            return i
    return None


def macro_definitions(tex: str) -> dict[str, tuple[str, list[tuple[int, int]]]]:
    """The argument-free macros `tex` defines with `\\newcommand{\\x}{...}`, `\\newcommand*` or `\\def\\x{...}`:
    name (without backslash) -> (body, spans of its definitions in `tex`). A macro with parameters
    (`\\newcommand{\\x}[1]{...}`, `\\def\\x#1{...}`) is not one; a later definition replaces an earlier one."""
    found: dict[str, tuple[str, list[tuple[int, int]]]] = {}
    for match in _DEFINITION.finditer(tex):
        if not tex.startswith("{", match.end()):
            continue  # `[n]` arguments or `#1` parameters follow the name
        end = _braced(tex, match.end())
        if end is None:
            continue
        name = match.group(1) or match.group(2) or match.group(3)
        spans = found.get(name, ("", []))[1]
        found[name] = (tex[match.end() + 1:end - 1], [*spans, (match.start(), end)])
    return found


_CONTROL_WORD_END = re.compile(r"\\[A-Za-z]+\Z")


def _use_pattern(names) -> re.Pattern:
    # A control word ends at the first non-letter: \foo does not match inside \foobar.
    return re.compile(r"\\(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True)) + r")(?![A-Za-z])")


def expand_macros(tex: str, macros: dict[str, str], depth: int = Config.macro_depth) -> str:
    """`tex` with every use of the argument-free `macros` (name -> body) replaced by its body, macros inside
    bodies expanded to `depth` levels; a macro whose body uses itself is left alone. A body that starts with a
    letter after a control word gets a space (`\\raggedright\\author` -> `\\raggedright Publi Cator`, not the
    new control word `\\raggedrightPubli`)."""
    macros = {name: body for name, body in macros.items() if not _use_pattern([name]).search(body)}
    if not macros:
        return tex
    use = _use_pattern(macros)

    def substitute(text: str, bodies: dict[str, str]) -> str:
        def body(m: re.Match) -> str:
            value = bodies[m.group(1)]
            after_control_word = value[:1].isalpha() and _CONTROL_WORD_END.search(text, max(0, m.start() - 64), m.start())
            return " " + value if after_control_word else value
        return use.sub(body, text)

    resolved = dict(macros)
    for _ in range(depth - 1):
        expanded = {name: substitute(body, resolved) for name, body in resolved.items()}
        if expanded == resolved:
            break
        resolved = expanded
    return substitute(tex, resolved)


def remove_spans(tex: str, spans: list[tuple[int, int]]) -> str:
    """`tex` without the given (start, end) spans; a span that was a whole line takes its line break along."""
    out, pos = [], 0
    for start, end in sorted(spans):
        if start < pos:
            continue
        out.append(tex[pos:start])
        whole_line = (start == 0 or tex[start - 1] == "\n") and tex.startswith("\n", end)
        pos = end + 1 if whole_line else end
    out.append(tex[pos:])
    return "".join(out)


def expand_paper_macros(files: list[str], depth: int = Config.macro_depth) -> list[str]:
    """Each file with the macros defined in any of `files` expanded and their definitions removed (RedPajama
    collects the definitions of all of a paper's files and expands them in each)."""
    definitions = [macro_definitions(tex) for tex in files]
    macros = {name: body for found in definitions for name, (body, _) in found.items()}
    return [expand_macros(remove_spans(tex, [s for _, spans in found.values() for s in spans]), macros, depth)
            for tex, found in zip(files, definitions, strict=True)]


# ---------------------------------------------------------------------------------------------- documents
def files_of(doc: Doc) -> list[str]:
    """The texts of a document's files: split at the boundaries `meta["file_chars"]` records, else one file."""
    lengths = doc.get("meta", {}).get("file_chars")
    if not lengths:
        return [doc["text"]]
    files, pos = [], 0
    for n in lengths:
        files.append(doc["text"][pos:pos + n])
        pos += n + 1
    return files


def with_files(doc: Doc, files: list[str]) -> Doc:
    """`doc` with its text replaced by `files` joined with "\\n"; files left empty are dropped with their names."""
    meta = doc.get("meta", {})
    names = meta.get("files", [None] * len(files))
    kept = [(name, tex) for name, tex in zip(names, files, strict=True) if tex.strip()]
    out = {**doc, "text": "\n".join(tex for _, tex in kept)}
    if "file_chars" in meta:
        out["meta"] = {**meta, "files": [name for name, _ in kept], "file_chars": [len(tex) for _, tex in kept]}
    return out


def per_file(rule: Callable[[str], str]) -> Callable[[Doc], Doc]:
    """A document rule that applies the text rule `rule` to each of the document's files."""
    return lambda doc: with_files(doc, [rule(tex) for tex in files_of(doc)])


def curate(docs: beam.PCollection, config: Config = Config()) -> beam.PCollection:
    """RedPajama's arXiv cleaning, one counted stage per rule: comments, macros, back matter, preamble."""
    return (docs
            | Stage(NAME, "strip_comments", per_file(strip_comments))
            | Stage(NAME, "expand_macros",
                    lambda doc: with_files(doc, expand_paper_macros(files_of(doc), config.macro_depth)))
            | Stage(NAME, "cut_back_matter", per_file(lambda tex: cut_back_matter(tex, config.back_matter)))
            | Stage(NAME, "cut_preamble", per_file(lambda tex: cut_preamble(tex, config.section_commands))))


# ---------------------------------------------------------------------------------------------- reading
def paper_from_files(doc_id: str, members: list[tuple[str, bytes]]) -> tuple[Doc | None, list[str]]:
    """A paper from its (name, bytes) `.tex` files: the files that decode as UTF-8, joined with "\\n" (RedPajama
    keeps only `.tex` files that decode as UTF-8); returns the document (None if no file decodes) and the names
    that did not decode."""
    texts, names, bad = [], [], []
    for name, data in members:
        try:
            texts.append(data.decode("utf-8"))
            names.append(name)
        except UnicodeDecodeError:
            bad.append(name)
    if not texts:
        return None, bad
    doc = {"id": doc_id, "text": "\n".join(texts)}
    if len(texts) > 1:
        doc["meta"] = {"files": names, "file_chars": [len(t) for t in texts]}
    return doc, bad


def tex_members(data: bytes) -> list[tuple[str, bytes]]:
    """The `.tex` members of a tar archive (plain or compressed) in archive order; raises tarfile.TarError,
    EOFError or zlib.error for a damaged archive."""
    with tarfile.open(fileobj=_io.BytesIO(data), mode="r:*") as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile() and m.name.endswith(".tex")]


def read_paper(path: str, doc_id: str) -> tuple[Doc | None, list[str]]:
    """One raw file -> (the paper or None, the drop reasons to count): `.tex`, `.tex.gz`, a tarball, or `.gz` (a
    gzipped tex or tarball, as arXiv serves a paper)."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        data = f.read()
    if not data:
        return None, ["empty_file"]
    is_tar = path.endswith(TAR_SUFFIXES)
    if not is_tar and data[:2] == io.GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except EOFError:
            return None, ["truncated_gzip"]
        except (gzip.BadGzipFile, zlib.error):
            return None, ["corrupt_gzip"]
        is_tar = data[257:262] == b"ustar"  # the POSIX tar magic: a gzipped tarball behind a .gz name
    if is_tar:
        try:
            members = tex_members(data)
        except (tarfile.TarError, EOFError, zlib.error, OSError):
            return None, ["truncated_or_corrupt_archive"]
        if not members:
            return None, ["no_tex_files"]
    else:
        members = [(os.path.basename(path).removesuffix(".gz"), data)]
    doc, bad = paper_from_files(doc_id, members)
    return doc, ["not_utf8"] * len(bad)


def read_paper_file(path: str, name: str) -> Iterator[Doc]:
    """The paper in one file (`io.ReadFiles`'s format reader; id: `name` without its .tar/.tgz/.gz/.tex suffixes),
    counting each file or archive member it could not use as `read/dropped/<reason>`."""
    doc, reasons = read_paper(path, re.sub(r"(\.tar|\.tgz|\.gz|\.tex)+$", "", name))
    for reason in reasons:
        count(NAME, f"read/dropped/{reason}")
    if doc is not None:
        yield doc


def read(pipeline: beam.Pipeline, input_glob: str, config: Config = Config()) -> beam.PCollection:
    """Papers from the `.tex`/`.tex.gz` files, tarballs and JSON-lines files `input_glob` matches."""
    return pipeline | "ReadTex" >> io.ReadFiles(NAME, input_glob, read_paper_file)
