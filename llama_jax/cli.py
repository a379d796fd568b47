"""How every command meets a person: an error is one line on stderr and a non-zero exit, never a stack trace.

    if __name__ == "__main__":
        cli.run(main)                    # argparse-style: main() reads sys.argv itself
        cli.run_absl(main)               # absl-style: flags parsed by absl, then main(argv)

A failure prints `error: <message>` (the exception's own message, which names the file or field and what to
do) and exits with status 1; flags that cannot be parsed exit with status 2. `--debug` anywhere on the command
line, or LLAMA_JAX_DEBUG=1 in the environment, shows the whole traceback instead (and reaches subprocesses
through the environment).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

DEBUG_FLAG = "--debug"
DEBUG_ENV = "LLAMA_JAX_DEBUG"
# Exceptions whose message is the whole story (bad input, a missing or existing file, a refused resume); any
# other exception is a bug or a library failure and keeps its type name in the line.
USER_ERRORS = (ValueError, OSError, LookupError, RuntimeError)


class UsageError(ValueError):
    """The command line itself is wrong (unknown flag, missing argument, bad override): exit status 2."""


def parse_args(parser, argv: list[str] | None = None):
    """`parser.parse_args(argv)` (argparse), with a command line it rejects (it has printed why) turned into a
    UsageError naming `--help` (exit status 2); --help itself still exits 0."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exit_:
        if exit_.code:
            raise UsageError(f"bad command line; see {parser.prog} --help") from None
        raise


def debug_enabled() -> bool:
    """Whether the person asked for tracebacks (--debug on the command line or LLAMA_JAX_DEBUG=1)."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0") or DEBUG_FLAG in sys.argv


def error_line(error: BaseException) -> str:
    """The one line a person sees for `error`: its message on one line, with its type unless it is a user error."""
    message = " ".join(str(error).split()) or repr(error)
    if isinstance(error, KeyError) and len(error.args) == 1:
        message = str(error.args[0])  # KeyError's str() quotes its message
    if not isinstance(error, USER_ERRORS):
        message = f"{type(error).__name__}: {message}"
    return f"error: {message}"


def run(main: Callable[[], Any]) -> NoReturn:
    """Call `main()` (which parses sys.argv itself) with `--debug` removed from sys.argv and exit: status 0 (or
    what main returns), 1 with one error line on stderr, 2 for a usage error, 130 on Ctrl-C."""
    debug = debug_enabled()
    if debug:
        os.environ[DEBUG_ENV] = "1"
    sys.argv = [arg for arg in sys.argv if arg != DEBUG_FLAG]
    try:
        status = main()
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except BaseException as error:  # noqa: BLE001 - every failure of a command reaches a person as one line
        if debug:
            raise
        print(error_line(error) + _debug_hint(), file=sys.stderr)
        sys.exit(2 if isinstance(error, UsageError) else 1)
    sys.exit(status or 0)


def _debug_hint() -> str:
    return f" (rerun with {DEBUG_FLAG} for the traceback)"


def absl_flags_parser(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a parse error raised as a UsageError (one line) instead of absl's FATAL banner."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        raise UsageError(f"{error}; see --helpshort") from error
    except (AttributeError, KeyError, TypeError, ValueError) as error:  # ml_collections rejecting an override
        message = " ".join(_unquote(str(error)).split())
        culprits = [arg for arg in argv[1:] if arg.startswith("--") and _unquote(str(error)).split("\n")[0].strip("'\"") in arg]
        where = f" in {culprits[0]}" if culprits else ""
        raise UsageError(f"bad command-line override{where}: {message}") from error


def _unquote(message: str) -> str:
    """ml_collections wraps a KeyError's repr in an AttributeError: show the text, not its Python quoting."""
    import ast

    if len(message) > 1 and message[0] == message[-1] and message[0] in "'\"":
        try:
            return str(ast.literal_eval(message))
        except (ValueError, SyntaxError):
            pass
    return message


def run_absl(main: Callable[[list[str]], Any], argv: list[str] | None = None) -> NoReturn:
    """`absl.app.run(main)` under `run`: absl parses the flags (a bad one is a UsageError), then main(argv).

    `argv` replaces sys.argv (e.g. with presets expanded); `--debug` is removed from it either way. main raises
    `cli.UsageError` (not absl's `app.UsageError`, which prints the whole help) for a missing or bad flag."""
    from absl import app

    args = None if argv is None else [arg for arg in argv if arg != DEBUG_FLAG]
    run(lambda: app.run(main, argv=args, flags_parser=absl_flags_parser))
