"""GitHub's cleaning (RedPajama v1): licences read from real licence files, the header rule and every quality filter
on real source files with hand-checked results, and `curate` end to end under Beam's TestPipeline on source trees
copied from this Python installation (plus planted duplicates and bad files) and on JSON lines, in one run."""

import importlib.metadata
import json
import os
import shutil
import sysconfig

import curation_runs
import pytest

from data_pipeline.curation import github, io
from data_pipeline.curation.raw import github as raw_github
from data_pipeline.curation.stages import Drop

DEFAULT = github.Config()


def installed(distribution: str, path: str) -> str:
    """The text of one file of an installed distribution."""
    with open(importlib.metadata.distribution(distribution).locate_file(path), encoding="utf-8") as f:
        return f.read()


def licence_text(distribution: str) -> str:
    """A distribution's licence files as `distribution_files` puts them at its repository's root, in name order."""
    texts = []
    for source, target in raw_github.distribution_files(distribution):
        if github.is_licence_file(target.split("/", 1)[1]):
            with open(source, encoding="utf-8") as f:
                texts.append(f.read())
    return "\n".join(texts)


# ---------------------------------------------------------------------------------------------- licences
def test_licences_are_read_from_real_licence_files():
    assert github.licence_family(licence_text("six")) == "mit"
    # numpy's wheel appends the licences of bundled code, the GCC runtime's GPL among them: its own BSD comes first.
    numpy = licence_text("numpy")
    assert "GNU GENERAL PUBLIC LICENSE" in numpy and github.licence_family(numpy) == "bsd"
    # packaging's LICENSE only points to LICENSE.APACHE and LICENSE.BSD; the three together read as Apache.
    assert github.licence_family(installed("packaging", "packaging-26.4.dist-info/licenses/LICENSE")) is None
    assert github.licence_family(licence_text("packaging")) == "apache"
    # warcio's copy of the Apache licence lacks its title line.
    assert not licence_text("warcio").lstrip().startswith("Apache")
    assert github.licence_family(licence_text("warcio")) == "apache"
    assert github.licence_family(licence_text("certifi")) == "mpl"
    # tqdm: MIT for some files, MPL-2.0 stated first for the whole project.
    assert github.licence_family(licence_text("tqdm")) == "mpl"
    # CPython's LICENSE: the PSF licence first, then a zero-clause BSD for the documentation's code.
    with open(f"{sysconfig.get_paths()['stdlib']}/LICENSE.txt", encoding="utf-8") as f:
        assert github.licence_family(f.read()) == "psf"
    assert github.licence_family(licence_text("tokenizers")) is None  # its wheel carries no licence file


def test_a_licence_is_permissive_by_prefix_as_bigquery_keys_are():
    assert github.licence_drop("apache-2.0", DEFAULT.licences) is None  # BigQuery's keys in JSON lines
    assert github.licence_drop("bsd-3-clause", DEFAULT.licences) is None
    assert github.licence_drop("mit-cmu", DEFAULT.licences) is None
    assert github.licence_drop("psf", DEFAULT.licences) == Drop("licence_not_permissive")
    assert github.licence_drop("psf", ("mit", "psf")) is None
    assert github.licence_drop("unrecognised", DEFAULT.licences) == Drop("licence_unrecognised")
    assert github.licence_drop(None, DEFAULT.licences) == Drop("licence_missing")
    assert [github.is_licence_file(p) for p in ("LICENSE", "LICENCE.md", "COPYING", "LICENSE-APACHE", "src/LICENSE",
                                                  "licensed.py")] == [True, True, True, True, False, False]


# ---------------------------------------------------------------------------------------------- header
def test_leading_comment_lines_go_including_a_c_files_preprocessor_lines():
    # The opening of numpy's bundled libdivide.h: RedPajama's rule takes `#` for a comment in every language, so the
    # include guard after the // licence lines goes too.
    text = ("// libdivide.h - Optimized integer division\n// https://libdivide.com\n//\n"
            "// Copyright (C) 2010 - 2019 ridiculous_fish, <libdivide@ridiculousfish.com>\n\n"
            "#ifndef NUMPY_CORE_INCLUDE_NUMPY_LIBDIVIDE_LIBDIVIDE_H_\n"
            "#define NUMPY_CORE_INCLUDE_NUMPY_LIBDIVIDE_LIBDIVIDE_H_\n\n"
            "#if LIBDIVIDE_VERSION_MAJOR\nnamespace libdivide {\n")
    assert github.strip_licence_header(text) == "namespace libdivide {\n"
    # absl's licence header as # comments; the module docstring stays.
    absl = installed("absl-py", "absl/flags/_helpers.py")
    assert absl.startswith("# Copyright 2017 The Abseil Authors.")
    assert github.strip_licence_header(absl).startswith('"""Internal helper functions for Abseil Python flags')


def test_the_first_c_comment_goes_only_if_it_says_copyright():
    # The opening of zlib.h (Debian's zlib1g-dev), shortened inside the comment.
    zlib = ("/* zlib.h -- interface of the 'zlib' general purpose compression library\n"
            "  version 1.2.13, October 13th, 2022\n\n  Copyright (C) 1995-2022 Jean-loup Gailly and Mark Adler\n*/\n\n"
            "#ifndef ZLIB_H\n#define ZLIB_H\n")
    assert github.strip_licence_header(zlib) == "\n\n#ifndef ZLIB_H\n#define ZLIB_H\n"
    # wrapt's _wrappers.c opens with a rule of dashes: no "copyright", nothing goes.
    wrapt = installed("wrapt", "wrapt/_wrappers.c")
    assert github.strip_licence_header(wrapt) == wrapt
    # Only the first 100 lines are searched.
    late = "x = 1\n" * 100 + "/* Copyright 2024 */\n"
    assert github.strip_licence_header(late) == late
    assert github.strip_licence_header("x = 1\n" * 99 + "/* Copyright 2024 */\n") == "x = 1\n" * 99 + "\n"


# ---------------------------------------------------------------------------------------------- filters
def test_each_quality_filter_on_real_files():
    # protobuf's generated struct_pb2.py holds its serialised descriptor on one line of more than 1000 characters.
    struct = installed("protobuf", "google/protobuf/struct_pb2.py")
    assert max(map(len, struct.splitlines())) > 1000
    assert github.quality_drop(struct, "google/protobuf/struct_pb2.py", DEFAULT) == Drop("long_line")
    defaults = installed("protobuf", "google/protobuf/internal/python_edition_defaults.py")
    assert len(defaults) / len(defaults.splitlines()) > 100
    assert github.quality_drop(defaults, "python_edition_defaults.py", DEFAULT) == Drop("long_mean_line")
    # wrapt's comment rule: 79 characters, none alphanumeric.
    rule = "/* ------------------------------------------------------------------------- */"
    assert github.quality_drop(rule, "_wrappers.c", DEFAULT) == Drop("low_alnum")
    # idna's package_data.py: 7 letters in 10 pre-tokens (__ version __ ␣= ␣" 3 . 20 " \n).
    version = installed("idna", "idna/package_data.py")
    assert version == '__version__ = "3.20"\n' and github.token_counter("")(version) == 10
    assert github.quality_drop(version, "idna/package_data.py", DEFAULT) == Drop("low_alpha_per_token")
    six = installed("six", "six.py")
    assert github.quality_drop(six, "six.py", DEFAULT) is None
    assert github.quality_drop(six, "six.pyi", DEFAULT) == Drop("extension")  # stubs are not on the whitelist
    assert github.quality_drop(six, "docker/Dockerfile", DEFAULT) is None
    assert github.quality_drop("", "six.py", DEFAULT) == Drop("empty")


def test_pretokens_are_gpt2_pieces():
    count = github.token_counter("")
    assert count("def parse(self, argument):") == 7  # def ␣parse ( self , ␣argument ):
    assert count("    return x\n") == 4  # "   " ␣return ␣x \n: an indentation is one piece, not four


# ---------------------------------------------------------------------------------------------- pipeline
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One pipeline over source trees (six and toml: MIT; warcio: Apache; typing-extensions: PSF; `orphan`: no
    licence file) with planted bad files, and JSON lines beside them; returns the counters and the ids that came
    out."""
    d = tmp_path_factory.mktemp("github")
    trees = d / "trees"
    files = [pair for name in ("six", "toml", "warcio", "typing_extensions") for pair in raw_github.distribution_files(name)]
    warcio_utils = dict((t, s) for s, t in files)["warcio/warcio/utils.py"]
    raw_github.write_tree(files + [(warcio_utils, "orphan/utils.py")], str(trees))
    shutil.copyfile(trees / "six" / "six.py", trees / "toml" / "six_copy.py")  # an exact duplicate
    shutil.copyfile(importlib.metadata.distribution("certifi").locate_file("certifi/cacert.pem"),
                    trees / "toml" / "ca.crt")
    (trees / "toml" / "data.bin").write_bytes(b"\x00\x01binary")
    (trees / "toml" / "latin1.py").write_bytes(b"name = 'caf\xe9'\n")
    (trees / "toml" / "empty.py").write_bytes(b"")
    (trees / "toml" / "big.py").write_bytes(b"x = 1\n" * (1 << 18))  # 1.5 MiB: over BigQuery's 1 MiB
    (trees / "README.md").write_text("Files of no repository.\n")
    tz = installed("toml", "toml/tz.py")
    records = [{"id": "jsonl/apache", "text": tz, "meta": {"path": "toml/tz.py", "licence": "apache-2.0"}},
               {"id": "jsonl/gpl", "text": tz, "meta": {"path": "toml/tz.py", "licence": "gpl-3.0"}},
               {"id": "jsonl/unknown", "text": tz, "meta": {"path": "toml/tz.py"}}]
    (trees / "files.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))  # beside the trees
    out = str(d / "out")
    counters = curation_runs.counters(
        lambda p: github.curate(github.read(p, f"{trees}/**", DEFAULT), DEFAULT) | io.WriteJsonl(github.NAME, out),
        github.NAME)
    return counters, sorted(curation_runs.written_docs(out))


def test_the_pipeline_reads_trees_and_json_lines_and_skips_bad_files_by_reason(run):
    counters, _ = run
    assert counters["read/repositories"] == 5
    for reason in ("binary", "not_utf8", "empty_file", "too_large", "not_in_a_repository"):
        assert counters[f"read/dropped/{reason}"] == 1, reason
    # six 2 + toml 6 (+ six_copy.py and ca.crt) + warcio 19 + typing-extensions 2 + orphan 1, and 3 JSON lines
    assert counters["read/docs_out"] == 2 + 8 + 19 + 2 + 1 + 3


def test_the_pipeline_applies_redpajamas_rules_in_order(run):
    counters, ids = run
    assert counters["licence/dropped/licence_not_permissive"] == 2 + 1  # typing-extensions, the GPL line
    assert counters["licence/dropped/licence_missing"] == 1 + 1  # orphan/utils.py, the line without a licence
    assert counters["skip_files/dropped/licence_file"] == 3 and counters["skip_files/dropped/certificate"] == 1
    # six_copy.py goes (six/six.py sorts first); of tz.py's two copies the JSON line's id sorts first.
    assert counters["dedup/dropped/duplicate"] == 2
    assert counters["filter/dropped/low_alpha_per_token"] == 1  # warcio's timeutils.py: 1.49 letters per token
    assert counters["filter/docs_out"] == len(ids)
    warcio = ["archiveiterator", "bufferedreaders", "capture_http", "checker", "cli", "digestverifyingreader",
              "exceptions", "extractor", "indexer", "limitreader", "recompressor", "recordbuilder", "recordloader",
              "statusandheaders", "utils", "warcwriter", "__init__"]
    assert ids == sorted(["jsonl/apache", "six/six.py"] + [f"toml/toml/{m}.py" for m in
                                                             ("__init__", "decoder", "encoder", "ordered")]
                         + [f"warcio/warcio/{m}.py" for m in warcio])


def test_the_raw_trees_are_real_installed_files(tmp_path):
    files = raw_github.write_tree(raw_github.distribution_files("six") + raw_github.stdlib_files()[:3], str(tmp_path / "raw"))
    assert [os.path.relpath(f, tmp_path / "raw") for f in files][:2] == ["six/LICENSE", "six/six.py"]
    assert files[2].endswith("cpython/LICENSE")
    with pytest.raises(FileExistsError, match="not empty"):
        raw_github.write_tree(raw_github.distribution_files("six"), str(tmp_path / "raw"))
