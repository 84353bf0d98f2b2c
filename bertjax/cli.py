"""What every entry point in scripts/ shares: errors as one line, user paths resolved once.

  cli.run(main)          absl's app.run, but an error a user can fix (bad config value, missing
                         file, refused overwrite, ...) prints `error: <message>` on one line and
                         exits 1; `--traceback` shows the full traceback instead.
  cli.user_path(p)       a path typed by the user -> absolute, against the current directory.
  cli.repo_file(p)       a default that names a file of this repository (tokenizers/...) ->
                         absolute, found from any current directory.
  cli.resolve_data_paths(config.data)
                         the same for the path fields of a pretraining config's data section.
  cli.stdout_to_stderr() everything printed inside goes to stderr, so that a script whose output
                         is JSON prints only JSON.

Resolving paths once, at the entry point, matters because some libraries (Orbax) refuse
relative paths, and a library must never guess which directory a relative path meant.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import re
import sys
from typing import Callable

from absl import app, flags

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

_TRACEBACK = flags.DEFINE_bool(
    "traceback", False, "On an error, print the full Python traceback instead of one line.")

# Errors that mean "the input is wrong", raised by the project's validation (and by the
# standard library for missing/unwritable files). Anything else is a bug: full traceback.
USER_ERRORS = (ValueError, KeyError, OSError, FloatingPointError, NotImplementedError)

# Corpus/tokenizer values that are names, not paths.
_NOT_PATHS = ("", "default")


def user_path(path: str) -> str:
    """A path the user typed -> an absolute path (relative to the current directory).

    '' and 'default' stay as they are, so do 'tfds:NAME' and URLs ('gs://...'). Globs keep
    their wildcards."""
    if path in _NOT_PATHS or ":" in path.split("/")[0]:
        return path
    return os.path.abspath(os.path.expanduser(path))


def repo_file(path: str) -> str:
    """Like user_path, but a relative path that does not exist from the current directory and
    does exist in the repository (a shipped default such as tokenizers/enwiki_30522_unigram.model)
    resolves to the repository's copy."""
    resolved = user_path(path)
    if resolved == path or os.path.exists(resolved) or os.path.isabs(os.path.expanduser(path)):
        return resolved
    in_repo = REPO_ROOT / path
    return str(in_repo) if in_repo.exists() else resolved


def resolve_data_paths(data) -> None:
    """Makes the path fields of a pretraining config's `data` section absolute, in place: the
    corpus, prepared_dir and tfds_data_dir against the current directory, the tokenizer also
    from the repository (its default is the shipped tokenizers/enwiki_30522_unigram.model)."""
    for key in ("corpus", "prepared_dir", "tfds_data_dir"):
        data[key] = user_path(data[key])
    data.tokenizer = repo_file(data.tokenizer)


@contextlib.contextmanager
def stdout_to_stderr():
    """Sends stdout to stderr for the duration, at the file-descriptor level: libraries that
    print progress (TFDS's "Downloading and preparing dataset...", C++ code, worker processes)
    would otherwise mix it into a JSON result that callers pipe into a parser."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def format_error(e: BaseException) -> str:
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return f"error: {msg or type(e).__name__} (run with --traceback for details)"


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with an override of a config key that does not exist
    (`--config.train.batchsize=1`) reported as one line like the other input errors.

    ml_collections raises AttributeError/KeyError there, which absl does not catch (it handles
    its own flags.Error, e.g. a value of the wrong type, in two lines)."""
    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError) as e:
        if "--traceback" in argv:
            raise
        cause: object = e
        while isinstance(cause, BaseException) and cause.args:  # AttributeError(KeyError(msg))
            cause = cause.args[0]
        text = str(cause)
        names = re.findall(r"'(\w+)'", text)
        hint = re.search(r"Did you mean .*\?", text)
        flag = next((a.split("=")[0].lstrip("-") for a in argv[1:] if a.startswith("--") and
                     names and names[0] in a.split("=")[0].split(".")), None)
        what = f"unknown config key {names[0]!r}" if names else text.replace("\n", " ")
        print(f"error: {'--' + flag if flag else 'a --config override'}: {what}"
              f"{' (' + hint.group() + ')' if hint else ''}; the config is locked, so every "
              "override must name an existing field", file=sys.stderr, flush=True)
        sys.exit(1)


def run(main: Callable) -> None:
    """app.run(main), printing the project's input errors as one line with exit code 1."""

    def wrapped(argv):
        try:
            return main(argv)
        except USER_ERRORS as e:
            if _TRACEBACK.value:
                raise
            print(format_error(e), file=sys.stderr, flush=True)
            sys.exit(1)

    app.run(wrapped, flags_parser=_parse_flags)
