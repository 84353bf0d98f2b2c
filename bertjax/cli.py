"""What every entry point in scripts/ shares: errors as one line, user paths resolved once.

  cli.run(main)          absl's app.run, but an error a user can fix (bad config value, missing
                         file, refused overwrite, misspelt config variant, ...) prints
                         `error: <message>` on one line and exits 1; `--traceback` shows the
                         full traceback instead. Ctrl-C exits 130 with one line.
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
import logging
import os
import pathlib
import re
import sys
from typing import Callable

from absl import app, flags
from absl import logging as absl_logging

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

_TRACEBACK = flags.DEFINE_bool(
    "traceback", False, "On an error, print the full Python traceback instead of one line.")

# Errors that mean "the input is wrong", raised by the project's validation (and by the
# standard library for missing/unwritable files). Anything else is a bug: full traceback.
USER_ERRORS = (ValueError, KeyError, OSError, FloatingPointError, NotImplementedError)

# Corpus/tokenizer values that are names, not paths.
_NOT_PATHS = ("", "default")

EXIT_INTERRUPTED = 130  # 128 + SIGINT: what shells report for a command ended by Ctrl-C


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


# Path flags of the entry points that must name a directory when given: an empty value (an
# unset shell variable) would otherwise mean the current directory.
_PATH_FLAGS = ("workdir", "data_dir", "glue_dir", "output")


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def _innermost(e: BaseException) -> BaseException:
    """The exception at the bottom of a chain (absl and ml_collections re-raise a config file's
    own error twice, each time adding text and a traceback)."""
    seen = {id(e)}
    while (nxt := e.__cause__ or e.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        e = nxt
    return e


def _config_arg(argv: list[str], name: str) -> str:
    for i, a in enumerate(argv):
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
        if a == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
    return "?"


def _unknown_key(e: BaseException, argv: list[str]) -> str:
    """An override of a config key that does not exist (`--config.train.batchsize=1`)."""
    cause: object = e
    while isinstance(cause, BaseException) and cause.args:  # AttributeError(KeyError(msg))
        cause = cause.args[0]
    text = str(cause)
    names = re.findall(r"'(\w+)'", text)
    hint = re.search(r"Did you mean .*\?", text)
    flag = next((a.split("=")[0].lstrip("-") for a in argv[1:] if a.startswith("--") and
                 names and names[0] in a.split("=")[0].split(".")), None)
    what = f"unknown config key {names[0]!r}" if names else text.replace("\n", " ")
    return (f"{'--' + flag if flag else 'a --config override'}: {what}"
            f"{' (' + hint.group() + ')' if hint else ''}; the config is locked, so every "
            "override must name an existing field")


def _config_file_error(name: str, value: str, error: BaseException) -> str:
    """A config file that cannot be loaded (ml_collections defers this error to first use)."""
    missing = re.search(r"\[Errno 2\] No such file or directory: '([^']*)'", str(error))
    if missing:
        return (f"--{name}={value}: config file {missing.group(1)} not found; expected a Python "
                "file with get_config(), e.g. configs/pretrain.py:tiny")
    return f"--{name}={value}: cannot load the config file ({' '.join(str(error).split())})"


def _all_flags():
    return [flags.FLAGS[name] for name in flags.FLAGS]


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with the mistakes a user makes in flags reported as one line
    `error: ...` (exit 1) like the other input errors: a misspelt variant or task in a config
    file's argument (`configs/pretrain.py:tinyy`), a config file that does not exist, an
    override of a config key that does not exist or of the wrong type, a missing required flag,
    an empty path flag. absl's own report is several lines, with a traceback for errors raised
    in a config file; ml_collections raises AttributeError/KeyError for an unknown key, which
    absl does not catch at all. `--traceback` shows the original error instead."""
    try:
        rest = flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, OSError) as e:
        if "--traceback" in argv:
            raise
        if isinstance(e, (AttributeError, KeyError)):
            _fail(_unknown_key(e, argv))
        if isinstance(e, OSError):  # an override applied to a config file that did not load
            name = next((f.name for f in _all_flags()
                         if type(f.value).__name__ == "_ErrorConfig"), "config")
            _fail(_config_file_error(name, _config_arg(argv, name), e))
        inner = _innermost(e)
        if inner is not e and "Error whilst parsing config file" in str(e):
            flag = re.match(r"flag --(\w+)=", str(e))
            name = flag.group(1) if flag else "config"
            _fail(f"--{name}={_config_arg(argv, name)}: {inner}")
        required = re.search(r"Flag --(\w+) must have a value other than None", str(e))
        _fail(f"--{required.group(1)} is required (--helpshort lists the flags)" if required
              else " ".join(str(e).split()))
    for f in _all_flags():
        if type(f.value).__name__ == "_ErrorConfig":
            _fail(_config_file_error(f.name, _config_arg(argv, f.name), f.value._error))
    for name in _PATH_FLAGS:
        if name in flags.FLAGS and flags.FLAGS[name].present and \
                not (flags.FLAGS[name].value or "").strip():
            _fail(f"--{name} is empty; expected a directory (an unset shell variable?)")
    return rest


class _OrbaxNotes(logging.Filter):
    """Orbax's INFO and WARNING records describe its own options ("Given directory is read
    only", "setting save_interval_steps=0" when a checkpoint is loaded): not the user's."""

    def filter(self, record):
        return record.levelno >= logging.ERROR or "/orbax/" not in record.pathname


def _quiet_libraries() -> None:
    """The project's progress at INFO; the libraries' chatter (Orbax, TFDS INFO) hidden, so an
    early failure is its one line. An explicit --verbosity (or -v) shows everything."""
    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)
        logging.getLogger("absl").addFilter(_OrbaxNotes())
    logging.getLogger("bertjax").setLevel(logging.INFO)


def run(main: Callable) -> None:
    """app.run(main), printing the project's input errors as one line with exit code 1, and a
    Ctrl-C as one line with exit code 130 (bertjax.preemption: a training loop's first Ctrl-C
    saves a checkpoint and stops at the next step boundary; this catches it everywhere else)."""

    def wrapped(argv):
        _quiet_libraries()
        try:
            out = main(argv)
            stop = sys.modules.get("bertjax.preemption")
            if stop is not None and stop.stopped_by() == "SIGINT":
                sys.exit(EXIT_INTERRUPTED)  # a first Ctrl-C: the loop saved and returned
            return out
        except USER_ERRORS as e:
            if _TRACEBACK.value:
                raise
            print(format_error(e), file=sys.stderr, flush=True)
            sys.exit(1)
        except KeyboardInterrupt:
            if _TRACEBACK.value:
                raise
            print("interrupted (Ctrl-C): stopped without saving; what was already written "
                  "(finished checkpoints, prepared work units) is complete, and the same "
                  "command resumes from it", file=sys.stderr, flush=True)
            # At once: the unwinding above released the workdir lock and closed the files;
            # interpreter shutdown would wait for (or crash in) JAX's and Orbax's threads. A
            # checkpoint write cut short stays under its temporary name, ignored on resume.
            sys.stdout.flush()
            os._exit(EXIT_INTERRUPTED)

    app.run(wrapped, flags_parser=_parse_flags)
