"""arXiv cleaning (RedPajama v1's rules, without its bugs) on real LaTeX from Debian's texlive-science-doc and
texlive-publishers-doc: comments, macros, back matter and preamble, each with hand-checked output; the reader on
.tex, .tex.gz, tarballs and damaged files; one TestPipeline run (module-scoped) serves the end-to-end checks."""

import gzip
import io as _io
import json
import re
import tarfile

import curation_runs
import pytest

from data_pipeline.curation import arxiv, io

# mathfixs/mafxsamp.tex (texlive-science-doc), abridged: its only headers are \paragraph.
MAFXSAMP = r"""%% This is file `mafxsamp.tex',
%% generated with the docstrip utility.
\documentclass[12pt]{article}

\RequirePackage{amsmath}
\RequirePackage[autobold]{mathfixs}

\begin{document}

\paragraph{Fractions.}

\[
x\frac{a+b}{c+d}\frac{e}{f}.
\]

\paragraph{Spaces Representing Multiplication.}

\newcommand{\der}{\mathrm{d}}
\[
\int x\.\der x
\]

\newcommand{\diff}[1]{\mathinner{\der#1}}
\[
\int x\diff{x}
\]

\end{document}
\endinput
%%
%% End of file `mafxsamp.tex'.
"""
MAFXSAMP_CLEAN = r"""\paragraph{Fractions.}

\[
x\frac{a+b}{c+d}\frac{e}{f}.
\]

\paragraph{Spaces Representing Multiplication.}

\[
\int x\.\mathrm{d} x
\]

\newcommand{\diff}[1]{\mathinner{\mathrm{d}#1}}
\[
\int x\diff{x}
\]

\end{document}
\endinput
"""
# ptptex/template.tex (texlive-publishers-doc), from \begin{document} to the bibliography: the appendix and a
# second section are commented out.
PTPTEX = r"""\begin{document}

\maketitle

\section{Section Title}
Start your paper from here.


%\section*{Acknowledgements}
%We would like to thank ...........


%\appendix
%\section{First Appendix} %Empty argument \section{} yields `Appendix'.
%
%\section{Second Appendix}


\begin{thebibliography}{99}
%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%
% Some macros are available for the bibliography:
\bibitem{}


\end{thebibliography}
\end{document}
"""
# yathesis/french/documentation/extraits-these/introduction.tex (texlive-publishers-doc), lines 1-2 and 10-12.
YATHESIS_INTRO = "\\chapter*{Introduction générale}\n\\lipsum[26]\n"
YATHESIS_SUBPARAGRAPH = "\\lipsum[31]\n\\subparagraph{Un sous-paragraphe d'introduction}\n\\lipsum[32]\n"
# ksp-thesis/demo/full/content/{docinfo.tex, mainmatter.tex.gz (lines 1-10), appendix.tex} (texlive-publishers-doc).
KSP_DOCINFO = r"""\newcommand{\doctitle}{\foreignlanguage{english}{The \texttt{ksp-thesis} class}}
\newcommand{\docsubtitle}{A \LaTeX\ class for theses published with KIT Scientific Publishing}
\newcommand{\docauthor}{Publi Cator}
\newcommand{\docauthortitle}{\mbox{Dipl.-\TeX.}\xspace}
\newcommand{\docauthoremail}{foo@bar.baz}
\newcommand{\doctime}{\today}"""
# ksp-thesis/demo/full/content/front/titlepage.tex, lines 25 and 47: \docauthor is a prefix of \docauthortitle.
KSP_TITLEPAGE = "\t{\\docauthortitle~\\docauthor}\n\\lowertitleback{\\raggedright\\docauthor: \\textit{\\doctitle,} \\doctime }\n"
KSP_MAINMATTER = r"""%%% ===========================================================================
%%% main matter
%%% ===========================================================================
\mainmatter

\part{The First}

\chapter{This is a chapter title which is definitely quite long}

\section{This is a section title which is also quite long, causing a line break}
"""
KSP_APPENDIX = r"""%%% appendix
%%% =============================================================
\appendix
\part*{Appendix}

\blinddocument
"""
# RedPajama v1's section regex (arxiv_cleaner.py): `^(.*)(` and one alternative per command; as published, the
# `|` between the \paragraph and \subparagraph alternatives is missing.
_RP_ALTERNATIVES = [rf"\\\b{c}\b\*?(?:\[(.*)\])?\{{(.*)\}}" for c in arxiv.Config.section_commands]
REDPAJAMA_SECTION = r"^(.*)(" + "|".join(_RP_ALTERNATIVES[:-1]) + _RP_ALTERNATIVES[-1] + ")"
REDPAJAMA_SECTION_FIXED = r"^(.*)(" + "|".join(_RP_ALTERNATIVES) + ")"


def _clean(files: list[str]) -> list[str]:
    """The four rules in the pipeline's order, on a paper's files."""
    files = arxiv.expand_paper_macros([arxiv.strip_comments(tex) for tex in files])
    return [arxiv.cut_preamble(arxiv.cut_back_matter(tex)) for tex in files]


def test_a_lone_paragraph_or_subparagraph_starts_the_text():
    """RedPajama's regex (a `|` missing) finds neither header alone, and so empties these files; ours keeps them."""
    assert arxiv.cut_preamble(MAFXSAMP).startswith("\\paragraph{Fractions.}\n")
    assert arxiv.cut_preamble(YATHESIS_SUBPARAGRAPH) == (
        "\\subparagraph{Un sous-paragraphe d'introduction}\n\\lipsum[32]\n")
    assert not re.search(REDPAJAMA_SECTION, MAFXSAMP, flags=re.DOTALL)
    assert not re.search(REDPAJAMA_SECTION, YATHESIS_SUBPARAGRAPH, flags=re.DOTALL)


def test_section_headers_starred_optional_or_not_a_header():
    assert arxiv.cut_preamble(YATHESIS_INTRO) == YATHESIS_INTRO  # \chapter*{...}
    assert arxiv.cut_preamble("x\n\\section[Short]{A long title}\ny") == "\\section[Short]{A long title}\ny"
    assert arxiv.cut_preamble("$\\partial f$ and \\sectionmark{x}\n") == ""  # no header: the file goes


def test_the_first_header_counts_and_commented_headers_do_not():
    """ptptex's template: RedPajama's greedy `^(.*)` keeps the text from the last header, here the commented-out
    `%\\section{Second Appendix}` (its preamble cut runs before comment removal)."""
    assert _clean([PTPTEX]) == ["\\section{Section Title}\nStart your paper from here.\n\n\n\n\n\n\n"]
    redpajama = re.sub(REDPAJAMA_SECTION_FIXED, r"\2", PTPTEX, flags=re.DOTALL)
    assert redpajama.startswith("\\section{Second Appendix}")


def test_comments():
    # elbioimp/test1.tex lines 6 and 73; hepthesis/example/chap1.tex lines 13-14.
    assert arxiv.strip_comments("\\usepackage{lipsum}  %% For generating random text\n") == "\\usepackage{lipsum}  \n"
    line = "    middle 50\\% (box) and smallest and largest point within\n"
    assert arxiv.strip_comments(line) == line
    assert arxiv.strip_comments("\\chapterquote{Laws were made to be broken.}%\n"
                                "{Christopher North, 1785--1854}%: Blackwood's Magazine May 1830\n") == (
        "\\chapterquote{Laws were made to be broken.}\n{Christopher North, 1785--1854}\n")
    assert arxiv.strip_comments("%% For normal draft builds\n%\\documentclass{hepthesis}\n\\documentclass{x}\n") == (
        "\\documentclass{x}\n")
    assert arxiv.strip_comments("a line break\\\\% then a comment\n") == "a line break\\\\\n"


def test_back_matter():
    assert arxiv.cut_back_matter("text\n\\bibliographystyle{plain}\nmore\n\\bibliography{refs}\nlist") == (
        "text\n\\bibliographystyle{plain}\nmore\n")
    assert arxiv.cut_back_matter(KSP_APPENDIX) == "%%% appendix\n%%% " + "=" * 61 + "\n"
    # On text with its comments the commented-out `%\\appendix` cuts: comments go first.
    assert arxiv.cut_back_matter(PTPTEX) == PTPTEX[:PTPTEX.index("\\appendix")]
    assert arxiv.cut_back_matter("\\appendixpage\nx") == "\\appendixpage\nx"  # another command


def test_macros_expand_across_files_and_not_inside_longer_names():
    """ksp-thesis: docinfo.tex defines six macros, the title page uses them; \\docauthor must not touch
    \\docauthortitle. Definitions go once expanded; a macro with an argument stays, with its body expanded."""
    docinfo, titlepage = arxiv.expand_paper_macros([KSP_DOCINFO, KSP_TITLEPAGE])
    assert docinfo == ""
    assert titlepage == ("\t{\\mbox{Dipl.-\\TeX.}\\xspace~Publi Cator}\n\\lowertitleback{\\raggedright Publi Cator: "
                         "\\textit{\\foreignlanguage{english}{The \\texttt{ksp-thesis} class},} \\today }\n")
    assert _clean([MAFXSAMP]) == [MAFXSAMP_CLEAN]
    defs = arxiv.macro_definitions("\\newcommand*{\\R}{\\mathbb{R}}\\newcommand{\\Rn}{\\R^n}\\def\\x#1{#1}")
    assert {name: body for name, (body, _) in defs.items()} == {"R": "\\mathbb{R}", "Rn": "\\R^n"}
    assert arxiv.expand_macros("$\\Rn$ and \\R.", {"R": "\\mathbb{R}", "Rn": "\\R^n"}) == (
        "$\\mathbb{R}^n$ and \\mathbb{R}.")
    assert arxiv.expand_macros("\\a", {"a": "\\a x"}) == "\\a"  # recursive: left alone


def _tarball(members: dict[str, bytes]) -> bytes:
    buffer = _io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, _io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Raw files (a multi-file paper, single files, damaged ones) -> read -> curate -> written; returns
    (documents by id, counters)."""
    d = tmp_path_factory.mktemp("arxiv")
    paper = _tarball({"content/docinfo.tex": KSP_DOCINFO.encode(), "content/mainmatter.tex": KSP_MAINMATTER.encode(),
                      "content/appendix.tex": KSP_APPENDIX.encode(), "README": b"not a tex file"})
    (d / "ksp-thesis.tar.gz").write_bytes(paper)
    (d / "mafxsamp.tex.gz").write_bytes(gzip.compress(MAFXSAMP.encode()))
    (d / "ptptex.tex").write_text(PTPTEX)
    (d / "latin1.tex").write_bytes(YATHESIS_INTRO.encode("latin-1"))
    (d / "truncated.tar.gz").write_bytes(paper[: len(paper) // 2])
    (d / "truncated.tex.gz").write_bytes(gzip.compress(MAFXSAMP.encode())[:100])
    (d / "empty.tex").write_bytes(b"")
    (d / "readme-only.tar").write_bytes(_tarball({"README": b"no tex here"}))
    (d / "corpus.jsonl").write_text(json.dumps({"id": "jsonl/ptptex", "text": PTPTEX}) + "\n")  # the corpus's format
    out = str(d / "out")
    counters = curation_runs.counters(
        lambda p: arxiv.curate(arxiv.read(p, f"{d}/*.*")) | io.WriteJsonl(arxiv.NAME, out), arxiv.NAME)
    return curation_runs.written_docs(out), counters


def test_pipeline_cleans_each_paper(run):
    docs, _ = run
    assert sorted(docs) == ["jsonl/ptptex", "ksp-thesis", "mafxsamp", "ptptex"]
    assert docs["mafxsamp"]["text"] == MAFXSAMP_CLEAN
    assert docs["ptptex"]["text"] == docs["jsonl/ptptex"]["text"] == (
        "\\section{Section Title}\nStart your paper from here.\n\n\n\n\n\n\n")
    # docinfo.tex holds only definitions and appendix.tex opens with \appendix: both leave nothing.
    assert docs["ksp-thesis"]["text"] == KSP_MAINMATTER[KSP_MAINMATTER.index("\\part{The First}"):]
    assert docs["ksp-thesis"]["meta"]["files"] == ["content/mainmatter.tex"]


def test_pipeline_counts_every_skipped_file_and_stage(run):
    _, counters = run
    for reason in ("not_utf8", "truncated_or_corrupt_archive", "truncated_gzip", "empty_file", "no_tex_files"):
        assert counters[f"read/dropped/{reason}"] == 1, reason
    assert counters["read/files"] == 9 and counters["read/docs_out"] == 4
    assert counters["cut_back_matter/bytes_out"] < counters["cut_back_matter/bytes_in"]
    assert counters["cut_preamble/docs_out"] == 4
    assert counters["strip_comments/bytes_in"] == sum(len(t.encode()) for t in (
        KSP_DOCINFO, KSP_MAINMATTER, KSP_APPENDIX, MAFXSAMP, PTPTEX, PTPTEX)) + 2  # the tarball's 3 files joined by "\n"
