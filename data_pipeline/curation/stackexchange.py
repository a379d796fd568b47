"""Stack Exchange (LLaMA §2.1: "removed the HTML tags from text and sorted the answers by score (from highest to
lowest)"), as RedPajama v1 built it: each question paired with its answers, "Q: <title> <question>\\nA: <answer>
\\nA: <answer>..." with the answers by descending score, HTML removed with list items kept as "*" lines; a
question with no answer is kept as "Q: ...".

Two RedPajama bugs are not copied: it sorted the answers on the score *strings* ("9" above "10", "-1" above "0"),
here the scores are integers; and it replaced `<ol>` by "\\n*" as well as `<li>`, which puts an empty item before
every numbered list, here only `<li>` starts an item. Ties keep the lower post id first (RedPajama kept dump
order, which a Beam group-by does not preserve). The title is plain text in Posts.xml and stays so (RedPajama ran
it through the HTML parser, which eats a title such as "Why does <div> collapse?").

Raw format (`read`): Stack Exchange dump `Posts.xml` files (`<site>/Posts.xml`, gzip or plain; the site is the
directory name, or the file name for `<site>.xml`), one `<row .../>` per line as the dumps write them, read line
by line so that one broken row (an undefined entity, bytes that are not UTF-8) is skipped and counted, not fatal;
questions (PostTypeId 1) and answers (PostTypeId 2, ParentId) are paired by a Beam group-by on the question id.
JSON lines (`*.jsonl*`) are read as paired documents whose text may hold HTML.
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import hashlib
import html
import html.parser
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from xml.sax import saxutils

import apache_beam as beam

from data_pipeline.curation import io
from data_pipeline.curation.stages import Counted, Doc, Drop, Stage, count

NAME = "stackexchange"
QUESTION, ANSWER = "1", "2"  # PostTypeId values in the Stack Exchange data dump


@dataclasses.dataclass(frozen=True)
class Config:
    # RedPajama v1 post_processing.cleanhtml: each <li> becomes "\n*" before the tags are removed.
    list_item_marker: str = "\n*"
    # RedPajama v1 keeps questions without answers ("Q: ..." alone); 1 keeps only answered ones.
    min_answers: int = 0


# ---------------------------------------------------------------------------------------------- the rules
class _Text(html.parser.HTMLParser):
    """The text of an HTML fragment, as BeautifulSoup's get_text gives it, with each <li> opening a new item."""

    def __init__(self, list_item_marker: str):
        super().__init__(convert_charrefs=True)
        self.marker, self.parts = list_item_marker, []

    def handle_starttag(self, tag, attrs):
        if tag == "li":
            self.parts.append(self.marker)

    def handle_data(self, data):
        self.parts.append(data)


def html_to_text(fragment: str, list_item_marker: str = Config.list_item_marker) -> str:
    """`fragment` without its tags, entities decoded, each list item starting with `list_item_marker`."""
    parser = _Text(list_item_marker)
    parser.feed(fragment)
    parser.close()
    return "".join(parser.parts)


def sort_answers(answers: Iterable[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """(score, post id, body) answers by descending integer score, then ascending post id."""
    return sorted(answers, key=lambda a: (-a[0], a[1]))


def qa_layout(title: str, question: str, answers: list[str]) -> str:
    """RedPajama's layout: "Q: <title> <question>" then one "A: <answer>" line per answer, in the given order.

    The title is plain text and the bodies HTML: the title is escaped so that `strip_html` restores it."""
    question = " ".join(part for part in (html.escape(title.strip(), quote=False), question.strip()) if part)
    return "\nA: ".join([f"Q: {question}", *(a.strip() for a in answers)])


def parse_row(line: bytes) -> dict | str | None:
    """One line of Posts.xml -> the row's attributes, a drop reason (`not_utf8`, `broken_entity`,
    `malformed_row`), or None for a line that is no row (the XML declaration, `<posts>`, blank)."""
    stripped = line.strip()
    if not stripped.startswith(b"<row"):
        return None if not stripped or stripped.startswith((b"<?xml", b"<posts", b"</posts")) else "malformed_row"
    try:
        stripped.decode("utf-8")
    except UnicodeDecodeError:
        return "not_utf8"
    try:
        return dict(ET.fromstring(stripped).attrib)
    except ET.ParseError as error:
        return "broken_entity" if "undefined entity" in str(error) else "malformed_row"


def post_of(row: dict, site: str) -> Doc | str:
    """A row's post as a document keyed for pairing (text = its HTML body; meta: site, question id, post id,
    type, score, title), or a drop reason: `other_post_type` (tag wikis, moderator nominations, ...), `no_id`,
    `answer_without_parent`, `bad_score`."""
    kind = row.get("PostTypeId")
    if kind not in (QUESTION, ANSWER):
        return "other_post_type"
    post_id = row.get("Id", "")
    if not post_id.isdigit():
        return "no_id"
    question_id = post_id if kind == QUESTION else row.get("ParentId", "")
    if not question_id.isdigit():
        return "answer_without_parent"
    try:
        score = int(row.get("Score", "0"))  # RedPajama: a question without a Score counts 0
    except ValueError:
        return "bad_score"
    meta = {"site": site, "question_id": int(question_id), "post_id": int(post_id), "score": score,
            "type": "question" if kind == QUESTION else "answer"}
    if kind == QUESTION:
        meta["title"] = row.get("Title", "")
    return {"id": f"{site}/{post_id}", "text": row.get("Body", ""), "meta": meta}


def pair(question_key: str, posts: Iterable[Doc], config: Config = Config()) -> Doc | Drop:
    """A question and its answers (all posts sharing `question_key`) -> one "Q:/A:" document (HTML kept), or a
    Drop: `answers_without_question` (the question is not in the dump), `too_few_answers`."""
    posts = list(posts)
    questions = sorted((p for p in posts if p["meta"]["type"] == "question"), key=lambda p: p["meta"]["post_id"])
    if not questions:
        return Drop("answers_without_question")
    answers = sort_answers((p["meta"]["score"], p["meta"]["post_id"], p["text"])
                           for p in posts if p["meta"]["type"] == "answer")
    if len(answers) < config.min_answers:
        return Drop("too_few_answers")
    question = questions[0]
    site, question_id = question["meta"]["site"], question["meta"]["question_id"]
    doc = {"id": question_key, "text": qa_layout(question["meta"]["title"], question["text"], [a[2] for a in answers]),
           "meta": {"site": site, "question_id": question_id, "question_score": question["meta"]["score"],
                    "answer_scores": [a[0] for a in answers]}}
    if "." in site:  # a dump site name is its host (RedPajama: https://<site>/questions/<id>)
        doc["url"] = f"https://{site}/questions/{question_id}"
    return doc


class PairAnswers(beam.PTransform):
    """Posts -> question documents: a group-by on the question id, the answers sorted by score."""

    def __init__(self, config: Config, name: str = "pair"):
        super().__init__()
        self.config, self.stage_name = config, name

    def expand(self, posts: beam.PCollection) -> beam.PCollection:
        return (posts
                | "ByQuestion" >> beam.Map(lambda p: (f"{p['meta']['site']}/{p['meta']['question_id']}", p))
                | "Group" >> beam.GroupByKey()
                | "Pair" >> beam.FlatMap(self._pair))

    def _pair(self, keyed: tuple[str, Iterable[Doc]]) -> Iterator[Doc]:
        result = pair(*keyed, self.config)
        if isinstance(result, Drop):
            count(NAME, f"{self.stage_name}/dropped/{result.reason}")
        else:
            yield result


def strip_html(doc: Doc, config: Config = Config()) -> Doc:
    """The rule: the document's text without HTML (list items as `config.list_item_marker` lines)."""
    return {**doc, "text": html_to_text(doc["text"], config.list_item_marker).strip()}


def curate(docs: beam.PCollection, config: Config = Config()) -> beam.PCollection:
    """RedPajama's Stack Exchange cleaning: the HTML of the paired questions and answers removed."""
    return docs | Stage(NAME, "strip_html", lambda doc: strip_html(doc, config))


# ---------------------------------------------------------------------------------------------- reading
def site_of(path: str) -> str:
    """`math.stackexchange.com/Posts.xml` -> `math.stackexchange.com`; `math.stackexchange.com.xml` -> the same."""
    base = re.sub(r"\.gz$", "", os.path.basename(path))
    if base.lower() == "posts.xml":
        return os.path.basename(os.path.dirname(path)) or "posts"
    return base.removesuffix(".xml")


class _ReadPosts(beam.DoFn):
    """A Posts.xml path -> its questions and answers as post documents, counting every row it skips."""

    def process(self, path: str) -> Iterator[Doc]:
        count(NAME, "read/files")
        site = site_of(path)
        for line in io.read_lines(path, NAME):
            row = parse_row(line)
            post = post_of(row, site) if isinstance(row, dict) else row
            if isinstance(post, str):
                count(NAME, f"read/dropped/{post}")
            elif post is not None:  # None: a line that is no row
                yield post


def read(pipeline: beam.Pipeline, input_glob: str, config: Config = Config()) -> beam.PCollection:
    """Question documents (HTML kept) from Posts.xml dumps, or documents from JSON lines (`*.jsonl*`)."""
    if re.search(r"\.jsonl(\.gz)?$", input_glob):
        return io.read_jsonl(pipeline, input_glob, NAME)
    posts = pipeline | "ReadPosts" >> io.ReadFiles(NAME, input_glob, _ReadPosts())
    return posts | Counted(NAME, "pair", PairAnswers(config))


# ---------------------------------------------------------------------------------------------- raw material
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
