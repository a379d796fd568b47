"""Stack Exchange cleaning (RedPajama v1, without its string-sorted scores) on Posts.xml rows that `write_raw` built
from the Perl and Python FAQs (perl-doc, python3.11-doc): HTML removed with list items as "*" lines, answers by
integer score, the "Q:/A:" layout, unanswered questions kept; the reader skips broken rows and files by named
reasons. One TestPipeline run (module-scoped) serves the end-to-end checks."""

import gzip

import curation_runs
import pytest

from data_pipeline.curation import io, stackexchange

HEADER = '<?xml version="1.0" encoding="utf-8"?>\n<posts>\n'
FOOTER = "</posts>\n"
# perlfaq4 "Why doesn't "my($foo) = <$fh>;" work right?" and perlfaq5 on STDIN after EOF, as write_raw writes them
# (the POD through Pod::Simple::XHTML): a title with "<", entities, code, an ordered list.
PERL_ROWS = [
    '  <row Id="445" PostTypeId="1" AcceptedAnswerId="446" CreationDate="2025-08-29T12:09:36.000" Score="0" '
    'Body="" Title="Why doesn\'t &quot;my($foo) = &lt;$fh&gt;;&quot; work right?" Tags="&lt;perl&gt;" AnswerCount="1" />',
    '  <row Id="446" PostTypeId="2" ParentId="445" CreationDate="2025-08-29T12:09:36.000" Score="44" Body="&lt;p&gt;'
    "&lt;code&gt;my()&lt;/code&gt; and &lt;code&gt;local()&lt;/code&gt; give list context to the right hand side of "
    "&lt;code&gt;=&lt;/code&gt;. The &amp;lt;$fh&amp;gt; read operation, like so many of Perl&amp;#39;s functions "
    "and operators, can tell which context it was called in and behaves appropriately.&lt;/p&gt;&#xA;&#xA;&lt;p&gt;"
    "To enforce scalar context in this particular case, however, you need merely omit the parentheses:&lt;/p&gt;"
    "&#xA;&#xA;&lt;pre&gt;&lt;code&gt;    local($foo) = &amp;lt;$fh&amp;gt;;        # WRONG&#xA;    local($foo) = "
    "scalar(&amp;lt;$fh&amp;gt;);   # ok&lt;/code&gt;&lt;/pre&gt;\" />",
    '  <row Id="525" PostTypeId="1" AcceptedAnswerId="526" CreationDate="2025-08-29T12:09:36.000" Score="0" '
    'Body="" Title="Why can\'t my script read from STDIN after I gave it EOF (^D on Unix, ^Z on MS-DOS)?" '
    'Tags="&lt;perl&gt;" AnswerCount="1" />',
    '  <row Id="526" PostTypeId="2" ParentId="525" CreationDate="2025-08-29T12:09:36.000" Score="79" Body="&lt;p&gt;'
    "Here are some less reliable workarounds:&lt;/p&gt;&#xA;&#xA;&lt;ol&gt;&#xA;&#xA;&lt;li&gt;&lt;p&gt;Try keeping "
    "around the seekpointer and go there, like this:&lt;/p&gt;&#xA;&#xA;&lt;pre&gt;&lt;code&gt;    my $where = "
    "tell($log_fh);&#xA;    seek($log_fh, $where, 0);&lt;/code&gt;&lt;/pre&gt;&#xA;&#xA;&lt;/li&gt;&#xA;&lt;li&gt;"
    "&lt;p&gt;If that doesn&amp;#39;t work, give up on your stdio package and use sysread.&lt;/p&gt;&#xA;&#xA;"
    "&lt;/li&gt;&#xA;&lt;/ol&gt;\" />",
]
# Python FAQ: "Do I have to like ...?" with its answer (Id 34) and, to order, the real answer bodies of two other
# questions (Ids 98 and 70) given hand-set scores 10 and -1: as strings "9" > "10" > "-1" (RedPajama's order).
PYTHON_ROWS = [
    '  <row Id="33" PostTypeId="1" AcceptedAnswerId="34" CreationDate="2026-05-12T05:17:27.000" Score="0" Body="" '
    'Title="Do I have to like “Monty Python’s Flying Circus”?" Tags="&lt;python&gt;" AnswerCount="3" />',
    '  <row Id="34" PostTypeId="2" ParentId="33" CreationDate="2026-05-12T05:17:27.000" Score="9" '
    'Body="&lt;p&gt;No, but it helps.  :)&lt;/p&gt;" />',
    '  <row Id="98" PostTypeId="2" ParentId="33" CreationDate="2026-05-12T05:17:27.000" Score="10" Body="&lt;p&gt;'
    "You can find a collection of useful links on the &lt;a class=&quot;reference external&quot; href=&quot;"
    "https://wiki.python.org/moin/WebProgramming&quot;&gt;Web Programming wiki page&lt;/a&gt;.&lt;/p&gt;\" />",
    '  <row Id="70" PostTypeId="2" ParentId="33" CreationDate="2026-05-12T05:17:27.000" Score="-1" Body="&lt;p&gt;'
    "For Unix variants there are several solutions.  It’s straightforward to do this&#xA;using curses, but curses is "
    'a fairly large module to learn.&lt;/p&gt;" />',
    # An unanswered question whose title holds "<module ‘x’>".
    '  <row Id="239" PostTypeId="1" CreationDate="2026-05-12T05:17:27.000" Score="2" Body="" '
    'Title="__import__(‘x.y.z’) returns &lt;module ‘x’&gt;; how do I get z?" Tags="&lt;python&gt;" AnswerCount="0" />',
    # Damage: an HTML entity left unescaped (undefined in XML), a row cut short, an answer whose question is not in
    # the dump, a tag wiki (PostTypeId 5), a score that is no number.
    '  <row Id="35" PostTypeId="2" ParentId="33" Score="3" Body="&lt;p&gt;No, but it helps.&nbsp;:)&lt;/p&gt;" />',
    '  <row Id="36" PostTypeId="2" ParentId="',
    '  <row Id="37" PostTypeId="2" ParentId="1000" Score="1" Body="&lt;p&gt;No, but it helps.&lt;/p&gt;" />',
    '  <row Id="38" PostTypeId="5" Score="0" Body="&lt;p&gt;Python is a programming language.&lt;/p&gt;" />',
    '  <row Id="39" PostTypeId="2" ParentId="33" Score="many" Body="&lt;p&gt;No, but it helps.&lt;/p&gt;" />',
]
PERL_445 = ("Q: Why doesn't \"my($foo) = <$fh>;\" work right?\nA: my() and local() give list context to the right "
            "hand side of =. The <$fh> read operation, like so many of Perl's functions and operators, can tell which "
            "context it was called in and behaves appropriately.\n\nTo enforce scalar context in this particular case, "
            "however, you need merely omit the parentheses:\n\n    local($foo) = <$fh>;        # WRONG\n"
            "    local($foo) = scalar(<$fh>);   # ok")
PERL_525 = ("Q: Why can't my script read from STDIN after I gave it EOF (^D on Unix, ^Z on MS-DOS)?\nA: Here are some "
            "less reliable workarounds:\n\n\n\n\n*Try keeping around the seekpointer and go there, like this:\n\n"
            "    my $where = tell($log_fh);\n    seek($log_fh, $where, 0);\n\n\n\n*If that doesn't work, give up on "
            "your stdio package and use sysread.")
PYTHON_33 = ("Q: Do I have to like “Monty Python’s Flying Circus”?\nA: You can find a collection of useful links on "
             "the Web Programming wiki page.\nA: No, but it helps.  :)\nA: For Unix variants there are several "
             "solutions.  It’s straightforward to do this\nusing curses, but curses is a fairly large module to learn.")


def test_html_to_text_keeps_list_items_and_decodes_entities():
    html = ('<p>There are (at least) three kinds of modules in Python:</p>\n<ol class="arabic">\n<li><p>modules '
            "written in Python (.py);</p></li>\n<li><p>modules written in C and dynamically loaded (.dll, .pyd, .so, "
            ".sl, etc);</p></li>\n</ol>")  # Python FAQ, "Where is the math.py ... source file?"
    assert stackexchange.html_to_text(html) == (
        "There are (at least) three kinds of modules in Python:\n\n\n*modules written in Python (.py);\n\n"
        "*modules written in C and dynamically loaded (.dll, .pyd, .so, .sl, etc);\n")
    assert stackexchange.html_to_text("Perl&#39;s &lt;$fh&gt; &amp; <code>x</code>") == "Perl's <$fh> & x"


def test_answers_sort_by_integer_score():
    answers = [(9, 34, "a"), (10, 98, "b"), (-1, 70, "c"), (10, 12, "d")]
    assert [a[2] for a in stackexchange.sort_answers(answers)] == ["d", "b", "a", "c"]
    # RedPajama's key, the score string, puts 9 above 10.
    assert [a[2] for a in sorted(answers, key=lambda a: str(a[0]), reverse=True)] == ["a", "b", "d", "c"]


def test_layout():
    assert stackexchange.qa_layout("Why <div>?", "<p>Body</p>\n", ["<p>One</p>\n", "<p>Two</p>"]) == (
        "Q: Why &lt;div&gt;? <p>Body</p>\nA: <p>One</p>\nA: <p>Two</p>")
    assert stackexchange.qa_layout("Title only", "", []) == "Q: Title only"


def test_rows():
    assert stackexchange.parse_row(PYTHON_ROWS[5].encode()) == "broken_entity"
    assert stackexchange.parse_row(PYTHON_ROWS[6].encode()) == "malformed_row"
    assert stackexchange.parse_row(PYTHON_ROWS[0].encode("cp1252", "replace")) == "not_utf8"
    assert stackexchange.parse_row(b"<posts>") is None
    row = stackexchange.parse_row(PERL_ROWS[0].encode())
    assert row["Title"] == "Why doesn't \"my($foo) = <$fh>;\" work right?" and row["Body"] == ""
    assert stackexchange.post_of(row, "perlfaq")["meta"] == {
        "site": "perlfaq", "question_id": 445, "post_id": 445, "score": 0, "type": "question", "title": row["Title"]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Two sites' Posts.xml, a damaged gzip one and an empty one -> read -> curate -> written; returns
    (documents by id, counters)."""
    d = tmp_path_factory.mktemp("stackexchange")
    for site, rows in (("perlfaq", PERL_ROWS), ("python-faq", PYTHON_ROWS)):
        (d / site).mkdir()
        (d / site / "Posts.xml").write_text(HEADER + "\n".join(rows) + "\n" + FOOTER)
    (d / "perlfaq.cut").mkdir()
    whole = gzip.compress((HEADER + "\n".join(PERL_ROWS) + "\n" + FOOTER).encode())
    (d / "perlfaq.cut" / "Posts.xml.gz").write_bytes(whole[: len(whole) * 3 // 4])
    (d / "empty").mkdir()
    (d / "empty" / "Posts.xml").write_bytes(b"")
    (d / "latin").mkdir()
    (d / "latin" / "Posts.xml").write_bytes((HEADER + PYTHON_ROWS[0] + "\n" + FOOTER).encode("cp1252"))
    out = str(d / "out")
    counters = curation_runs.counters(
        lambda p: stackexchange.curate(stackexchange.read(p, f"{d}/*/Posts.xml*"))
        | io.WriteJsonl(stackexchange.NAME, out), stackexchange.NAME)
    return curation_runs.written_docs(out), counters


def test_pipeline_pairs_sorts_and_cleans(run):
    docs, _ = run
    assert {k for k in docs if not k.startswith("perlfaq.cut/")} == {
        "perlfaq/445", "perlfaq/525", "python-faq/33", "python-faq/239"}
    assert docs["perlfaq/445"]["text"] == PERL_445
    assert docs["perlfaq/525"]["text"] == PERL_525
    assert docs["python-faq/33"]["text"] == PYTHON_33
    assert docs["python-faq/33"]["meta"]["answer_scores"] == [10, 9, -1]
    assert docs["python-faq/239"]["text"] == "Q: __import__(‘x.y.z’) returns <module ‘x’>; how do I get z?"
    # What the truncated file held before the damage is kept: some of perlfaq/'s questions, maybe without answers.
    assert {k.split("/")[1] for k in docs if k.startswith("perlfaq.cut/")} <= {"445", "525"}


def test_pipeline_counts_every_skipped_row_and_file(run):
    _, counters = run
    for reason in ("broken_entity", "malformed_row", "other_post_type", "bad_score", "truncated_gzip",
                   "empty_file", "not_utf8"):
        assert counters[f"read/dropped/{reason}"] == 1, reason
    assert counters["pair/dropped/answers_without_question"] == 1
    assert counters["read/files"] == 5
    assert counters["strip_html/docs_in"] == counters["strip_html/docs_out"] == counters["pair/docs_out"]
    assert counters["strip_html/bytes_out"] < counters["strip_html/bytes_in"]
