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
import html
import html.parser
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator

import apache_beam as beam

from data_pipeline.curation import io
from data_pipeline.curation.stages import DROPPED, Counted, Doc, Drop, Stage, count, drop, kept

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
        return kept(posts
                    | "ByQuestion" >> beam.Map(lambda p: (f"{p['meta']['site']}/{p['meta']['question_id']}", p))
                | "Group" >> beam.GroupByKey()
                | "Pair" >> beam.FlatMap(self._pair).with_outputs(DROPPED, main="docs"), NAME)

    def _pair(self, keyed: tuple[str, Iterable[Doc]]) -> Iterator[Doc]:
        result = pair(*keyed, self.config)
        if isinstance(result, Drop):
            yield drop(NAME, self.stage_name, keyed[0], result.reason)
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


def read_posts(path: str, name: str) -> Iterator[Doc]:
    """The questions and answers of one Posts.xml (`io.ReadFiles`'s format reader) as post documents, counting
    every row it skips."""
    del name  # a post's id is its site's and its own
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
    posts = pipeline | "ReadPosts" >> io.ReadFiles(NAME, input_glob, read_posts)
    return posts | Counted(NAME, "pair", PairAnswers(config))
