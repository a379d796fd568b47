"""Wikipedia (LLaMA §2.1: "remove hyperlinks, comments and other formatting boilerplate"): articles from MediaWiki
XML dumps, wikitext turned into plain text with mwparserfromhell as the Hugging Face `wikipedia` builder does
(the data RedPajama v1 used), short stubs and disambiguation pages dropped.

Markup removal follows the HF builder's `_parse_and_clean_wikicode`: links become their text, links to files and
images go, `<ref>` and tables go, templates and comments go (mwparserfromhell's `strip_code`), magic words
(`__NOTOC__`) go; unlike the builder, category links go too (it kept their names as text) and so do
interlanguage links. Stubs: Dolma (Soldaini et al. 2024) removes Wikipedia pages of 25 or fewer words,
"short, templated pages ... or XML parsing errors". Disambiguation pages are recognised by the templates that
mark them (`{{Disambiguation}}`, `{{Homonymie}}`, `{{Desambiguación}}`, ...).

Raw format (`read`): MediaWiki XML export dumps (`*wiki-*-pages-articles.xml[.bz2|.gz]`, any export schema
version), streamed line by line and cut into `<page>` elements, each parsed on its own: expat stops at the first
error of a document, so one page with an undefined entity or bytes that are not UTF-8 would otherwise lose the rest
of the dump; here it is counted and skipped. Only the article namespace (ns 0) is kept; redirects are skipped; a
page's last revision is its text. JSON-lines files (`.jsonl`, `.json`, gzipped or not) are read as documents
whose text is wikitext or text.
"""

from __future__ import annotations

import bz2
import dataclasses
import functools
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import apache_beam as beam
import mwparserfromhell
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from data_pipeline.curation import io
from data_pipeline.curation.stages import Doc, Drop, Stage, count

NAME = "wikipedia"


@dataclasses.dataclass(frozen=True)
class Config:
    # Namespaces kept: 0 is the article namespace (the HF builder and WikiExtractor keep only it).
    namespaces: tuple[int, ...] = (0,)
    # Links into the file and media namespaces are removed (HF `wikipedia` builder): their names and aliases in
    # LLaMA's 20 languages, from MediaWiki 1.39's languages/messages/Messages{Bg,Ca,...,Uk}.php.
    media_namespaces: tuple[str, ...] = (
        "File", "Image", "Media", "Медия", "Файл", "Картинка", "Fitxer", "Imatge", "Média", "Soubor", "Fil", "Billede",
        "Medium", "Datei", "Bild", "Medio", "Archivo", "Imagen", "Fichier", "Mediji", "Datoteka", "Slika", "Fájl",
        "Kép", "Immagine", "Bestand", "Afbeelding", "Plik", "Grafika", "Multimédia", "Ficheiro", "Imagem", "Arquivo",
        "Fișier", "Imagine", "Fişier", "Медиа", "Изображение", "Медиј", "Датотека", "Медија", "Слика", "Medij",
        "Medija", "Медіа", "Зображення")
    # Category links are removed (the HF builder kept the names as text); names from the same Messages*.php.
    category_namespaces: tuple[str, ...] = (
        "Category", "Категория", "Categoria", "Kategorie", "Kategori", "Categoría", "Catégorie", "Kategorija",
        "Kategória", "Categorie", "Kategoria", "Категорија", "Категорія")
    # HF builder: `<ref>` tags (footnotes) and tables are removed with their content.
    removed_tags: tuple[str, ...] = ("ref", "table")
    # The templates that mark a disambiguation page on en/fr/es Wikipedia (and their common redirects).
    disambiguation_templates: tuple[str, ...] = ("disambiguation", "disambig", "dab", "disamb", "hndis", "geodis",
                                                 "homonymie", "desambiguación", "desambiguacion")
    # Dolma (Soldaini et al. 2024): documents of 25 or fewer words are dropped.
    stub_max_words: int = 25


# ---------------------------------------------------------------------------------------------- the rules
def is_disambiguation(wikitext: str, templates: tuple[str, ...] = Config.disambiguation_templates) -> bool:
    """Whether `wikitext` transcludes one of the disambiguation `templates` (`{{Disambiguation}}`,
    `{{disambig|geo}}`, ...; names compared case-insensitively)."""
    names = "|".join(re.escape(t) for t in templates)
    return re.search(r"\{\{\s*(?:" + names + r")\s*(?:\||\}\})", wikitext, flags=re.I) is not None


_MAGIC_WORD = re.compile(r"__[A-ZÀ-Þ_]+?__")  # __NOTOC__, __AUCUNSOMMAIRE__, __SIN_TDC__ (HF builder's re_rm_magic)
_INTERLANGUAGE = re.compile(r"^:?[a-z]{2,3}(?:-[a-z]+)*:")  # [[fr:Paris]]: namespaces are capitalised


def wikitext_to_text(wikitext: str, config: Config = Config()) -> str:
    """The plain text of `wikitext`: link text kept; templates, comments, references, tables, file, category and
    interlanguage links removed; paragraphs separated by one blank line."""
    code = mwparserfromhell.parse(wikitext)
    namespace = re.compile(r"^\s*:?\s*(?:" + "|".join(map(re.escape, config.media_namespaces
                                                          + config.category_namespaces)) + r")\s*:", re.I)
    doomed = [link for link in code.filter_wikilinks(recursive=True)
              if namespace.match(str(link.title)) or _INTERLANGUAGE.match(str(link.title).strip())]
    doomed += code.filter_tags(recursive=True, matches=lambda tag: str(tag.tag).lower() in config.removed_tags)
    for node in doomed:
        try:
            code.remove(node)
        except ValueError:  # already gone with an enclosing node (a file link inside a removed table)
            pass
    text = _MAGIC_WORD.sub("", code.strip_code(normalize=True, collapse=True))
    lines = [line.strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def word_count(text: str) -> int:
    """Whitespace-separated words of `text`."""
    return len(text.split())


def curate(docs: beam.PCollection, config: Config = Config()) -> beam.PCollection:
    """Disambiguation pages dropped (on the wikitext), markup removed, stubs dropped."""
    return (docs
            | Stage(NAME, "drop_disambiguation", lambda doc: Drop("disambiguation")
                    if is_disambiguation(doc["text"], config.disambiguation_templates) else doc)
            | Stage(NAME, "strip_markup", lambda doc: {**doc, "text": wikitext_to_text(doc["text"], config)})
            | Stage(NAME, "drop_stubs", lambda doc: Drop("stub")
                    if word_count(doc["text"]) <= config.stub_max_words else doc))


# ---------------------------------------------------------------------------------------------- reading
def dump_lines(path: str) -> Iterator[bytes]:
    """The lines of a dump file: bz2 (as Wikimedia publishes dumps), gzip or plain; damage counted as read drops."""
    if not path.endswith(".bz2"):
        yield from io.read_lines(path, NAME)
        return
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        if not raw.read(1):
            count(NAME, "read/dropped/empty_file")
            return
        raw.seek(0)
        try:
            yield from bz2.BZ2File(raw)
        except EOFError:  # "Compressed file ended before the end-of-stream marker was reached"
            count(NAME, "read/dropped/truncated_bz2")
        except OSError:  # "Invalid data stream"
            count(NAME, "read/dropped/corrupt_bz2")


def elements(lines: Iterator[bytes], tags: tuple[bytes, ...] = (b"siteinfo", b"page")) -> Iterator[bytes | str]:
    """The `<siteinfo>` and `<page>` elements of a dump's lines, as bytes, in order; "truncated_page" for one the
    input ends inside. MediaWiki writes each opening and closing tag of these on a line of its own, and a tag
    inside page text is escaped (`&lt;page&gt;`), so a line that starts with `<page>` starts a page."""
    chunk, closing = None, None
    for line in lines:
        stripped = line.strip()
        if chunk is None:
            for tag in tags:
                if stripped.startswith(b"<" + tag + b">"):
                    chunk, closing = [], b"</" + tag + b">"
                    break
        if chunk is not None:
            chunk.append(line)
            if stripped.endswith(closing):
                yield b"".join(chunk)
                chunk = None
    if chunk is not None:
        yield "truncated_page"


def parse_element(data: bytes) -> ET.Element | str:
    """One element's bytes -> the element, or why not: `not_utf8`, `broken_entity`, `malformed_xml`."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "not_utf8"
    try:
        return ET.fromstring(data)
    except ET.ParseError as error:
        return "broken_entity" if "undefined entity" in str(error) else "malformed_xml"


def site_of(siteinfo: ET.Element) -> dict[str, str]:
    """The dump's wiki: `lang` (from its dbname, `enwiki` -> `en`) and `url` prefix of its pages (from `base`)."""
    dbname = siteinfo.findtext("dbname") or ""
    base = siteinfo.findtext("base") or ""
    return {"dbname": dbname, "lang": dbname.removesuffix("wiki"), "url": base.rsplit("/", 1)[0] + "/" if base else ""}


def article_of(page: ET.Element, site: dict[str, str], namespaces: tuple[int, ...]) -> Doc | str:
    """A `<page>` -> its article document, or why it is not one: `not_article` (another namespace), `redirect`,
    `no_text` (no revision text, or hidden)."""
    title = page.findtext("title") or ""
    ns = page.findtext("ns")
    if ns is None or not ns.strip().lstrip("-").isdigit() or int(ns) not in namespaces:
        return "not_article"
    revisions = page.findall("revision")
    text = revisions[-1].findtext("text") if revisions else None
    if page.find("redirect") is not None or (text or "").lstrip().upper().startswith("#REDIRECT"):
        return "redirect"
    if not text or not text.strip():
        return "no_text"
    doc = {"id": f"{site['dbname'] or 'wiki'}/{page.findtext('id') or title}", "text": text,
           "meta": {"title": title, "lang": site["lang"]}}
    if site["url"]:
        doc["url"] = site["url"] + title.replace(" ", "_")
    return doc


def read_dump(path: str, name: str, namespaces: tuple[int, ...]) -> Iterator[Doc]:
    """The articles of one dump file (`io.ReadFiles`'s format reader), counting every page it skips by reason."""
    del name  # an article's id is its wiki's and page's
    site = {"dbname": "", "lang": "", "url": ""}
    for chunk in elements(dump_lines(path)):
        element = parse_element(chunk) if isinstance(chunk, bytes) else chunk
        if isinstance(element, ET.Element) and element.tag == "siteinfo":
            site = site_of(element)
            continue
        doc = article_of(element, site, namespaces) if isinstance(element, ET.Element) else element
        if isinstance(doc, str):
            count(NAME, f"read/dropped/{doc}")
        else:
            yield doc


def read(pipeline: beam.Pipeline, input_glob: str, config: Config = Config()) -> beam.PCollection:
    """Articles (wikitext) of the MediaWiki XML dumps and documents of the JSON-lines files `input_glob` matches."""
    return pipeline | "ReadDump" >> io.ReadFiles(
        NAME, input_glob, functools.partial(read_dump, namespaces=config.namespaces))
