"""A person's view of every command: a user error is one line `error: ...` on stderr and a non-zero exit, with no
traceback and no library noise around it; `--debug` shows the traceback.

The commands run as a person runs them (`python -m ...`, in this session's 8-device environment without the
settings conftest.py adds), all at once, each in its own process group that is killed if the test fails.
"""

import os
import re
import sys
import zipfile

import pytest
from helpers import NOISE, person_env, started

from llama_jax import cli

META_PARAMS = '{"dim": 64, "n_layers": 2, "n_heads": 4, "multiple_of": 32, "norm_eps": 1e-06, "vocab_size": 128}'


def meta_checkpoint(path, params_json: str, shard: bytes) -> str:
    os.makedirs(path)
    with open(os.path.join(path, "params.json"), "w") as f:
        f.write(params_json)
    with open(os.path.join(path, "consolidated.00.pth"), "wb") as f:
        f.write(shard)
    return str(path)


def pth_cut_short(tmp_path) -> bytes:
    """A PyTorch zip archive cut in half, as an interrupted copy leaves it."""
    with zipfile.ZipFile(tmp_path / "whole.pth", "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00." * 100)
        archive.writestr("archive/data/0", os.urandom(4096))
    whole = (tmp_path / "whole.pth").read_bytes()
    return whole[: len(whole) // 2]


def python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


@pytest.fixture(scope="module")
def commands(tmp_path_factory, small_corpus) -> dict[str, tuple[int, str]]:
    """name -> (exit status, stderr) of each refused command, and of a data command that succeeds."""
    tmp = tmp_path_factory.mktemp("refusals")
    cut_short = meta_checkpoint(tmp / "cut_short", META_PARAMS, pth_cut_short(tmp))
    not_json = meta_checkpoint(tmp / "not_json", '{"dim": 64, "n_layers": 2,', b"")
    train = ("llama_jax.train", "--config=experiments/configs/debug.py", f"--workdir={tmp / 'workdir'}")
    small = ("--config=experiments/configs/debug.py", f"--config.data.corpus_dir={small_corpus}",
             "--config.model.vocab_size=1024", "--config.data.threads=1", "--config.data.shuffle_buffer=16")
    argv = {
        "corrupted .pth": python("llama_jax.convert", "--from=meta", "--to=hf", cut_short, str(tmp / "out1")),
        "params.json not JSON": python("llama_jax.convert", "--from=meta", "--to=hf", not_json, str(tmp / "out2")),
        "misspelled override": python(*train, "--config.train.stpes=10"),
        "impossible mesh": python(*train, "--config.mesh.data=3"),
        "weights not summing to 1": python("data_pipeline.mixture_report", "--config=experiments/configs/debug.py",
                                           "--config.data.weights.github=0.1", "--batches=1"),
        "--debug": python("llama_jax.convert", "--from=meta", "--to=hf", not_json, str(tmp / "out3"), "--debug"),
        "inspect": python("data_pipeline.mixture_report", *small, "--batches=2"),
    }
    logs = {name: str(tmp / f"{i}.log") for i, name in enumerate(argv)}
    with started(*((argv[name], logs[name]) for name in argv), env=person_env()) as processes:
        return {name: (process.wait(), process.stderr()) for name, process in zip(argv, processes, strict=True)}


@pytest.mark.parametrize("name,status,line", [
    ("corrupted .pth", 1, r"error: .*cut_short/consolidated.00.pth is not a readable PyTorch checkpoint \(.*\); it may "
                          r"be truncated or corrupted"),
    ("params.json not JSON", 1, r"error: .*not_json/params.json is not valid JSON \(.*\)"),
    ("misspelled override", 2, r"error: bad command-line override in --config.train.stpes=10: .*stpes"),
    ("impossible mesh", 1, r"error: mesh axes \{'data': 3, 'fsdp': -1, 'sequence': 1, 'tensor': 1\} cannot fill 8 "
                           r"devices per slice"),
    ("weights not summing to 1", 1, r"error: data.weights sum to 1.055000, expected 1 .*normalize_weights"),
])
def test_a_refusal_is_one_error_line_and_a_non_zero_exit(commands, name, status, line):
    code, stderr = commands[name]
    assert code == status, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr  # no traceback, no banners, nothing else
    assert lines[0].endswith("(rerun with --debug for the traceback)")
    assert re.match(line, lines[0]), lines[0]


def test_debug_shows_the_traceback(commands):
    code, stderr = commands["--debug"]
    assert code == 1
    assert "Traceback (most recent call last)" in stderr and "params.json is not valid JSON" in stderr
    assert not [line for line in stderr.splitlines() if any(noise in line for noise in NOISE)]


def test_a_data_command_prints_no_library_noise(commands):
    code, stderr = commands["inspect"]
    assert code == 0, stderr
    assert not [line for line in stderr.splitlines() if any(noise in line for noise in NOISE)], stderr


# In-process: what `cli.run` makes of each kind of failure.
def run(main, capsys) -> tuple[int, str]:
    """(exit status, stderr) of `cli.run(main)`."""
    with pytest.raises(SystemExit) as exit_:
        cli.run(main)
    return exit_.value.code, capsys.readouterr().err


def test_errors_become_one_line_with_the_right_status(capsys, monkeypatch):
    monkeypatch.setenv(cli.DEBUG_ENV, "0")
    monkeypatch.setattr(sys, "argv", ["command"])

    def fails(error):
        def main():
            raise error
        return main

    assert run(fails(ValueError("x.json: bad\n  field")), capsys) == (1, "error: x.json: bad field (rerun with "
                                                                          "--debug for the traceback)\n")
    assert run(fails(KeyError("no such key")), capsys)[1].startswith("error: no such key (")
    assert run(fails(ZeroDivisionError("division by zero")), capsys)[1].startswith(
        "error: ZeroDivisionError: division by zero")  # not a user error: its type stays in the line
    assert run(fails(cli.UsageError("give --config")), capsys)[0] == 2
    assert run(fails(KeyboardInterrupt()), capsys) == (130, "error: interrupted\n")
    assert run(lambda: 3, capsys) == (3, "")


def test_debug_flag_and_environment_show_the_traceback(capsys, monkeypatch):
    def main():
        raise ValueError("bad input")

    monkeypatch.setenv(cli.DEBUG_ENV, "0")  # restored when the test ends
    monkeypatch.setattr(sys, "argv", ["command", "--debug"])
    with pytest.raises(ValueError, match="bad input"):
        cli.run(main)
    assert sys.argv == ["command"] and os.environ[cli.DEBUG_ENV] == "1"  # reaches subprocesses
    monkeypatch.setattr(sys, "argv", ["command"])
    with pytest.raises(ValueError, match="bad input"):
        cli.run(main)
