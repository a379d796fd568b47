"""The offline task set: 4-way multiple choice built from the corpus's held-out split, so evaluation runs here.

    python -m llama_jax.evaluation.evaluators.offline [--corpus=.cache/corpus] [--out=.cache/tasks]

Two tasks, read only from `<corpus>/<source>/validation-*.jsonl` (never the training split), the same items for
the same corpus and seed:
  next_sentence  a passage and four sentences: the one that follows it, and three of similar length from other
                 held-out documents of the same source (chance 25%; coherence and topic decide).
  cloze          a passage cut before a word, and four words: the true one, and three of the same length and
                 capitalisation from other held-out documents of the same source (a LAMBADA-like cloze).
Items are spread evenly over the sources that yield them, which take turns in the file (any first n items
are spread over the sources too). TASK_DIR gets `next_sentence.jsonl`, `cloze.jsonl` and
`offline.json` (what they were built from); a second run with the same corpus and settings does nothing.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import itertools
import json
import os
import random
import re
from collections.abc import Iterator

from llama_jax import cli, corpus_spec
from llama_jax.evaluation.evaluators.tasks import write_jsonl

VERSION = 3  # 2: passages of 240 characters; 3: sources take turns in the item order
TASKS = ("next_sentence", "cloze")
CHOICES = 4
ITEMS = 300  # per task
CONTEXT_CHARS = 240  # the passage before the sentence or word: the last whole sentences within this many characters
DEFAULT_CORPUS = corpus_spec.DEFAULT_CORPUS

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
_WORD = re.compile(r"(?<= )([A-Za-z]{4,12})(?![\w'-])")  # a whole word after a space: the cloze's delimiter


def default_task_dir(corpus_dir: str) -> str:
    """Where the offline tasks of `corpus_dir` live: its sibling `tasks` (.cache/corpus -> .cache/tasks)."""
    return os.path.join(os.path.dirname(os.path.abspath(corpus_dir)), "tasks")


def held_out_documents(corpus_dir: str) -> dict[str, list[str]]:
    """source -> texts of its validation split, in file order (the training split is never opened)."""
    manifest = os.path.join(corpus_dir, "manifest.json")
    if not os.path.isfile(manifest):
        raise FileNotFoundError(f"no corpus in {corpus_dir} ({manifest} is missing); run `make corpus` first")
    documents = {}
    for source in sorted(os.listdir(corpus_dir)):
        for path in sorted(glob.glob(os.path.join(corpus_dir, source, "validation-*.jsonl"))):
            with open(path, encoding="utf-8") as f:
                documents.setdefault(source, []).extend(json.loads(line)["text"] for line in f if line.strip())
    if not documents:
        raise FileNotFoundError(f"{corpus_dir} has no <source>/validation-*.jsonl files; run `make corpus` first")
    return documents


def sentences(text: str) -> list[str]:
    """The sentences of `text` in order: paragraphs split at blank lines, whitespace collapsed, cut after . ! ?"""
    out = []
    for paragraph in re.split(r"\n\s*\n", text):
        flat = " ".join(paragraph.split())
        out.extend(s for s in _SENTENCE_END.split(flat) if s)
    return out


def mostly_letters(text: str) -> bool:
    """At least 70% of the non-space characters are Latin-script letters (prose, not code or markup; and a few
    tokens per character, where other scripts fall back to several byte tokens each)."""
    return sum(ch.isalpha() and ord(ch) < 0x250 for ch in text) >= 0.7 * len(text.replace(" ", ""))


def is_prose(sentence: str) -> bool:
    """A sentence worth choosing: 30-200 characters, at least 5 words, mostly letters, ending like a sentence."""
    return (30 <= len(sentence) <= 200 and len(sentence.split()) >= 5 and sentence[-1] in ".!?"
            and mostly_letters(sentence))


def passage(previous: list[str], chars: int = CONTEXT_CHARS) -> str:
    """The last whole sentences of `previous` that fit in `chars` characters ('' when even the last one does not)."""
    kept: list[str] = []
    for sentence in reversed(previous):
        if sum(len(s) + 1 for s in kept) + len(sentence) > chars:
            break
        kept.insert(0, sentence)
    return " ".join(kept)


def _next_sentence_candidates(docs: list[list[str]]) -> Iterator[dict]:
    for d, doc in enumerate(docs):
        for i in range(1, len(doc)):
            context = passage(doc[:i])
            if is_prose(doc[i]) and len(context) >= 60 and mostly_letters(context):
                yield {"doc": d, "context": context, "answer": doc[i]}


def _cloze_candidates(docs: list[list[str]]) -> Iterator[dict]:
    for d, doc in enumerate(docs):
        for i, sentence in enumerate(doc):
            if not is_prose(sentence):
                continue
            words = [m for m in _WORD.finditer(sentence) if m.start() >= 20]  # a few words of the sentence precede
            if words:
                word = words[len(words) // 2]  # one per sentence, from its middle
                prefix = sentence[:word.start()]
                context = (passage(doc[:i], CONTEXT_CHARS - len(prefix)) + " " + prefix).strip()
                if len(context) >= 60 and mostly_letters(context):
                    yield {"doc": d, "context": context, "answer": word.group(1)}


def _shape(word: str) -> tuple[int, bool]:
    return len(word), word[:1].isupper()


def _distractors(task: str, answer: str, doc: int, pools: dict, rng: random.Random) -> list[str] | None:
    """CHOICES - 1 distinct texts like `answer` from documents other than `doc`, or None if there are too few."""
    if task == "next_sentence":
        pool = [s for d, s in pools["sentences"] if d != doc and 0.5 * len(answer) <= len(s) <= 2 * len(answer)]
    else:
        pool = [w for d, w in pools["words"].get(_shape(answer), ()) if d != doc]
    seen, picked = {answer.lower()}, []
    for text in rng.sample(pool, min(len(pool), 50)):
        if text.lower() not in seen:
            seen.add(text.lower())
            picked.append(text)
            if len(picked) == CHOICES - 1:
                return picked
    return None


def build_items(documents: dict[str, list[str]], task: str, items: int, seed: int) -> list[dict]:
    """`items` records of `task` (JSON-lines layout of llama_jax.evaluation.evaluators.tasks), spread evenly over sources."""
    rng = random.Random(f"{seed}/{task}")
    per_source = {}
    for source, texts in documents.items():
        docs = [sentences(t) for t in texts]
        if len(docs) < 2:
            continue  # distractors come from other documents
        candidates = list((_next_sentence_candidates if task == "next_sentence" else _cloze_candidates)(docs))
        pools = {"sentences": [(d, s) for d, doc in enumerate(docs) for s in doc if is_prose(s)], "words": {}}
        for d, doc in enumerate(docs):
            for s in doc:
                for w in _WORD.findall(s):
                    pools["words"].setdefault(_shape(w), []).append((d, w))
        rng.shuffle(candidates)
        per_source[source] = (candidates, pools)
    by_source: list[list[dict]] = []
    sources = sorted(per_source)
    for k, source in enumerate(sources):
        quota = (items - sum(map(len, by_source))) // (len(sources) - k)  # an even share of what is left
        candidates, pools = per_source[source]
        records: list[dict] = []
        for candidate in candidates:
            if len(records) == quota:
                break
            wrong = _distractors(task, candidate["answer"], candidate["doc"], pools, rng)
            if wrong is None:
                continue
            label = rng.randrange(CHOICES)
            choices = wrong[:label] + [candidate["answer"]] + wrong[label:]
            records.append({"context": candidate["context"], "choices": choices, "label": label, "source": source})
        by_source.append(records)
    # Sources take turns, so that the first n items (evals.max_items) are spread over the sources too.
    return [r for turn in itertools.zip_longest(*by_source) for r in turn if r is not None]


def corpus_fingerprint(corpus_dir: str) -> str:
    """sha256 of the held-out files' recorded checksums in the corpus manifest (the tasks' only input)."""
    with open(os.path.join(corpus_dir, "manifest.json")) as f:
        manifest = json.load(f)
    held_out = {name: source["splits"].get("validation", {}) for name, source in manifest.get("sources", {}).items()}
    return hashlib.sha256(json.dumps(held_out, sort_keys=True).encode()).hexdigest()


def build(corpus_dir: str = DEFAULT_CORPUS, out_dir: str | None = None, *, items: int = ITEMS, seed: int = 0) -> dict:
    """Build the offline tasks of `corpus_dir` into `out_dir` (default: its sibling `tasks`) unless they are there
    for the same corpus and settings; returns what offline.json records."""
    out_dir = out_dir or default_task_dir(corpus_dir)
    record_path = os.path.join(out_dir, "offline.json")
    wanted = {"version": VERSION, "corpus": corpus_fingerprint(corpus_dir) if os.path.isfile(
        os.path.join(corpus_dir, "manifest.json")) else None, "items": items, "seed": seed}
    if os.path.isfile(record_path) and all(os.path.isfile(os.path.join(out_dir, f"{t}.jsonl")) for t in TASKS):
        with open(record_path) as f:
            built = json.load(f)
        if {k: built.get(k) for k in wanted} == wanted:
            return built
    documents = held_out_documents(corpus_dir)
    counts = {}
    for task in TASKS:
        records = build_items(documents, task, items, seed)
        if len(records) < CHOICES:
            raise ValueError(f"the held-out split of {corpus_dir} yields only {len(records)} {task} items; it needs "
                             "several documents of prose per source")
        write_jsonl(records, os.path.join(out_dir, f"{task}.jsonl"))
        counts[task] = len(records)
    built = {**wanted, "counts": counts}
    with open(record_path, "w") as f:
        json.dump(built, f, indent=1)
    return built


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m llama_jax.evaluation.evaluators.offline", description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=DEFAULT_CORPUS, help="corpus directory (its validation split is read)")
    parser.add_argument("--out", default=None, help="task directory (default: the corpus's sibling `tasks`)")
    parser.add_argument("--items", type=int, default=ITEMS, help="items per task")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    built = build(args.corpus, args.out, items=args.items, seed=args.seed)
    out = args.out or default_task_dir(args.corpus)
    print(f"offline tasks in {out}: " + ", ".join(f"{task} {n} items" for task, n in built["counts"].items()))


if __name__ == "__main__":
    cli.run(main)
