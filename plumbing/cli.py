"""The front of every command: one `error:` line instead of a traceback, unknown flags refused with the nearest known
one, and `--version`.

Two kinds of error reach a person, and each ends the command with one line on stderr:
- `UsageError`, exit 2: the command, its flags or what they point at cannot work (a misspelled flag, a model that is
  not in the repository, a topic that does not exist). The person changes the command.
- an environment error, exit 1: the command is right, the machine is not ready (no such file, no cluster, no
  credentials, a server that does not answer). The person changes the machine. `EnvironmentProblem` says so
  explicitly; the standard library's OSError family (FileNotFoundError, ConnectionError, TimeoutError, ...) and the
  few client libraries' own "not configured" errors listed in ENVIRONMENT_ERRORS mean the same.
Anything else is a bug, and keeps its traceback: that is what a bug report needs.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import importlib.metadata
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import NoReturn

DISTRIBUTION = "marketplace-inference"

# Errors of client libraries that mean "this machine is not set up for that", named by their qualified class name so
# that no command imports a library only to recognise its errors.
ENVIRONMENT_ERRORS = frozenset(
    {
        "kubernetes.config.config_exception.ConfigException",  # no kubeconfig, no in-cluster service account
        "google.auth.exceptions.DefaultCredentialsError",  # no Application Default Credentials
        "google.api_core.exceptions.ServiceUnavailable",
        "google.api_core.exceptions.DeadlineExceeded",
        "urllib3.exceptions.MaxRetryError",  # an API server that does not answer
        "subprocess.CalledProcessError",  # a tool the command runs (java, mvn, kubectl) failed; its log says why
        "subprocess.TimeoutExpired",
    }
)

USAGE_EXIT = 2
ENVIRONMENT_EXIT = 1


class UsageError(Exception):
    """Something the user must change in the command before it can work; the message says what."""


class EnvironmentProblem(Exception):
    """The command is right but the machine is not ready for it (a missing tool, file, cluster or credential)."""


def version() -> str:
    """The installed project's version (setup.py's), or "unknown" when run from a tree that was never installed."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def version_line() -> str:
    return f"{DISTRIBUTION} {version()}"


def default_prog() -> str:
    """`python -m package.module` for a command run that way (argparse would say `module.py` or `__main__.py`)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        return f"python -m {spec.name.removesuffix('.__main__')}"
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "command"


def nearest(flag: str, known: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(flag, sorted(set(known)), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_flag_message(arg: str, known: Iterable[str]) -> str:
    """`unknown flag --max_batch_sise (did you mean --max_batch_size?)`; a bare word is an unexpected argument."""
    name = arg.split("=", 1)[0]
    if not name.startswith("-"):
        return f"unexpected argument {arg!r}: every setting is a --flag"
    match = nearest(name, known)
    return f"unknown flag {name}" + (f" (did you mean {match}?)" if match else "")


class ArgumentParser(argparse.ArgumentParser):
    """argparse as every command here uses it: `--version`; no abbreviations (a prefix of a flag is a typo, not that
    flag); an unknown flag refused with the nearest known one; and a mistake reported as one `error:` line, exit 2,
    not the usage text."""

    def __init__(self, *args, version: bool = True, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        if not args and "prog" not in kwargs:
            kwargs["prog"] = default_prog()
        super().__init__(*args, **kwargs)
        self._argv: list[str] = []
        if version:
            self.add_argument("--version", action="version", version=version_line())

    def add_subparsers(self, **kwargs):
        # A subcommand's parser is one of these too, without a --version of its own: `deploy rollout-model` has a
        # --version, the model's.
        kwargs.setdefault("parser_class", functools.partial(type(self), version=False))
        return super().add_subparsers(**kwargs)

    def option_strings(self) -> list[str]:
        """Every flag this parser and its subcommands know."""
        strings = []
        for action in self._actions:
            strings += action.option_strings
            if isinstance(action, argparse._SubParsersAction):  # pylint: disable=protected-access
                strings += [s for sub in action.choices.values() for s in sub.option_strings()]
        return strings

    def parse_args(self, args=None, namespace=None):
        self._argv = list(sys.argv[1:] if args is None else args)
        parsed, extras = self.parse_known_args(self._argv, namespace)
        if extras:
            self.error(unknown_flag_message(extras[0], self.option_strings()))
        return parsed

    def error(self, message: str) -> NoReturn:
        # A misspelled flag first: it is often why a required one "is missing".
        known = set(self.option_strings())
        unknown = [a for a in self._argv if a.startswith("--") and a.split("=", 1)[0] not in known and a != "--"]
        if unknown:
            message = unknown_flag_message(unknown[0], known)
        self.exit(USAGE_EXIT, f"error: {message} (see {self.prog} --help)\n")


def describe(error: BaseException) -> str:
    """One line for an environment error: OSError's own words with the file it names, else the message."""
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror}{where}"
    text = " ".join(str(error).split())
    return text or type(error).__name__


def is_environment_error(error: BaseException) -> bool:
    if isinstance(error, EnvironmentProblem | OSError):
        return True
    return any(f"{cls.__module__}.{cls.__qualname__}" in ENVIRONMENT_ERRORS for cls in type(error).__mro__)


def run(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> NoReturn:
    """Runs a command's `main(argv)` and exits with its status; a usage or an environment error ends it with one
    `error:` line (exit 2 and 1), an interrupt with exit 130."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code = main(argv)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(USAGE_EXIT)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as error:  # pylint: disable=broad-except
        if not is_environment_error(error):
            raise
        print(f"error: {describe(error)}", file=sys.stderr)
        sys.exit(ENVIRONMENT_EXIT)
    sys.exit(code or 0)
