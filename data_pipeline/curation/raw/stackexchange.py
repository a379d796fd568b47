"""Stack Exchange's raw material: `Posts.xml` dumps of the Perl, Python and Debian FAQs, each FAQ question a
question post with its answer as the accepted answer (read by `curation.stackexchange`).
"""

from __future__ import annotations

import datetime
import glob
import hashlib
import os
import re
import subprocess
from xml.sax import saxutils

from data_pipeline.curation.stackexchange import html_to_text

# FAQ site -> (package, pages, heading level of a question, start and end of the page's main text: a page without
# the start, a table of contents, has no questions). A question is a heading of that level, its answer the HTML up
# to the next heading of that level or above.
FAQS = {
    "perlfaq": ("perl-doc", "usr/share/perl/*/pod/perlfaq[1-9].pod", 2, "", ""),
    "python-faq": ("python3.11-doc", "usr/share/doc/python3.11/html/faq/*.html", 3, 'role="main">',
                   '<div class="sphinxsidebar"'),
    "debian-faq": ("debian-faq", "usr/share/doc/debian/FAQ/*.en.html", 2, '<div class="chapter"',
                   '<div class="navfooter"'),
}
_HEADING = re.compile(r"<h([1-6])\b[^>]*>(.*?)</h\1>", re.S | re.I)
_WRAPPER = re.compile(r"</?(?:section|div)\b[^>]*>", re.I)  # page structure, not part of a post's body


def pod_to_html(path: str) -> str:
    """A POD file as HTML, by Perl's own converter (Pod::Simple::XHTML, which perldoc.perl.org uses)."""
    script = ("use Pod::Simple::XHTML; my $p = Pod::Simple::XHTML->new; $p->html_header(''); $p->html_footer('');"
              "my $out; $p->output_string(\\$out); $p->parse_file($ARGV[0]); binmode(STDOUT, ':encoding(UTF-8)'); print $out;")
    result = subprocess.run(["perl", "-e", script, path], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"perl could not convert {path} to HTML: {result.stderr.strip()[-300:]}; is perl "
                           "(with Pod::Simple) installed?")
    return result.stdout


def faq_entries(page: str, level: int) -> list[tuple[str, str]]:
    """(question, answer HTML) pairs of an FAQ page: each heading of `level` and what follows it up to the next
    heading of that level or above; the question's section number ("1.2.") and permalink sign go."""
    headings = list(_HEADING.finditer(page))
    entries = []
    for i, heading in enumerate(headings):
        if int(heading.group(1)) != level:
            continue
        end = next((h.start() for h in headings[i + 1:] if int(h.group(1)) <= level), len(page))
        title = re.sub(r"^\d+(?:\.\d+)*\.\s*", "", " ".join(html_to_text(heading.group(2)).replace("¶", "").split()))
        body = _WRAPPER.sub("", page[heading.end():end]).strip()
        if title and html_to_text(body).strip():
            entries.append((title, body))
    return entries


def _attr(value: str) -> str:
    """An XML attribute value as the dumps write it (line breaks as &#xA;, so that a row stays one line)."""
    return saxutils.escape(value, {'"': "&quot;", "\n": "&#xA;", "\r": "&#xD;", "\t": "&#x9;"})


def posts_xml(entries: list[tuple[str, str, str]], tag: str) -> str:
    """A Posts.xml of (question, answer HTML, creation date) entries: each a question (PostTypeId 1, empty body)
    with one accepted answer (PostTypeId 2). Ids count up in entry order; scores are a hash of the body mod 100."""
    rows = []
    for k, (title, answer, date) in enumerate(entries):
        qid, aid = 2 * k + 1, 2 * k + 2
        score = int(hashlib.sha256(answer.encode()).hexdigest()[:8], 16) % 100
        rows.append(f'  <row Id="{qid}" PostTypeId="1" AcceptedAnswerId="{aid}" CreationDate="{date}" Score="0" '
                    f'Body="" Title="{_attr(title)}" Tags="{_attr(f"<{tag}>")}" AnswerCount="1" />')
        rows.append(f'  <row Id="{aid}" PostTypeId="2" ParentId="{qid}" CreationDate="{date}" Score="{score}" '
                    f'Body="{_attr(answer)}" />')
    return '<?xml version="1.0" encoding="utf-8"?>\n<posts>\n' + "\n".join(rows) + "\n</posts>\n"


def write_raw(roots: dict[str, str], out_dir: str) -> list[str]:
    """`out_dir/<faq>/Posts.xml` in the Stack Exchange dump format from the Perl, Python and Debian FAQs: each FAQ
    question a question post (its heading as the title, an empty body, as the FAQs ask in one line) with its
    answer as the one accepted answer, HTML as the FAQ's own (the Perl FAQ's POD through Perl's HTML converter).
    Fields the FAQs lack are derived: ids count up in page order, an answer's score is a hash of its body (0..99),
    a question's score 0, the creation date is the FAQ file's modification time in its package."""
    written = []
    for site, (package, pattern, level, start, end) in FAQS.items():
        entries = []
        for path in sorted(glob.glob(f"{roots[package]}/{pattern}")):
            page = pod_to_html(path) if path.endswith(".pod") else open(path, encoding="utf-8").read()
            if start:
                if start not in page:
                    continue
                page = page[page.index(start) + len(start):]
                page = page[:page.index(end)]
            date = datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.000")
            entries += [(title, answer, date) for title, answer in faq_entries(page, level)]
        target = f"{out_dir}/{site}/Posts.xml"
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "x", encoding="utf-8") as f:
            f.write(posts_xml(entries, site.split("-")[0].removesuffix("faq")))
        written.append(target)
    return written
