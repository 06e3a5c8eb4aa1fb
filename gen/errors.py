"""gen's error types, and how the command line reports them.

Errors a caller can fix (a wrong argument, a missing or unreadable file) are `ArgumentError` (a
ValueError), `ArgumentTypeError` (also a TypeError) or `MissingFileError` (a FileNotFoundError); their
messages start with the argument's name. The `gen` command and the trainers print one line for any error:
exit status 2 when the caller can fix it, 1 otherwise; --debug adds the traceback.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys


class GenError(Exception):
    """Base of gen's own errors."""


class ArgumentError(GenError, ValueError):
    """An argument's value is not allowed; the message names the argument, the value and what is allowed."""


class ArgumentTypeError(ArgumentError, TypeError):
    """An argument has the wrong type."""


class UsageError(ArgumentError):
    """A mistake in how a command was called (exit status 2)."""


class MissingFileError(GenError, FileNotFoundError):
    """A file or folder an argument names does not exist (or is not what it should be)."""


class WriteError(GenError, OSError):
    """A file could not be written (a full disk, a quota); the message names the file. Nothing was replaced."""


class TrainingDiverged(GenError, ValueError):
    """Training produced a non-finite loss or weights (the message names the hyperparameters to lower)."""


USER_ERRORS = (ValueError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError, WriteError)


def report(err: BaseException, debug: bool = False, stream=None) -> int:
    """Print one line for err (and its traceback with debug); the exit status: 2 for the caller's mistake, 1 else."""
    stream = stream or sys.stderr
    if debug:
        import traceback

        traceback.print_exception(err, file=stream)
    user = isinstance(err, USER_ERRORS)
    kind = "error" if user else f"internal error ({type(err).__name__})"
    hint = "" if debug or user else " (run again with --debug for the traceback)"
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    print(f"{kind}: {message}{hint}", file=stream)
    return 2 if user else 1


def exit_status(stop: SystemExit) -> int:
    """The status a SystemExit carries, as `sys.exit` would turn it into one."""
    return stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1


def require_int(value, name: str, minimum: int | None = None, maximum: int | None = None, optional: bool = False) -> int | None:
    """value as an int (bools refused), within [minimum, maximum]; None allowed when optional."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{name}: expected an integer{' or None' if optional else ''}, got {value!r}.")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]" if minimum is not None else f"<= {maximum}"
        raise ArgumentError(f"{name}: must be {bounds}, got {value}.")
    return value


def require_number(value, name: str, minimum: float | None = None, maximum: float | None = None, optional: bool = False) -> float | None:
    """value as a finite float (bools and NaN/infinity refused), within [minimum, maximum]; None allowed when optional."""
    import math

    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(f"{name}: expected a number{' or None' if optional else ''}, got {value!r}.")
    if not math.isfinite(value):
        raise ArgumentError(f"{name}: must be finite, got {value}.")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]" if minimum is not None else f"<= {maximum}"
        raise ArgumentError(f"{name}: must be {bounds}, got {value}.")
    return float(value)


def require_choice(value, name: str, choices) -> object:
    """value, one of choices (compared safely whatever its type)."""
    if not isinstance(value, (str, int, float, type(None))) or isinstance(value, bool) or value not in choices:
        raise ArgumentError(f"{name}: one of {tuple(choices)}, got {value!r}.")
    return value


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """--help keeps the description's own line breaks and shows each option's default (where its help does
    not already say it and there is one)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: {action.default})".strip()


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a mistake on the command line is one line naming the option (and, for a misspelt flag,
    the closest valid one) with exit status 2, instead of the whole usage text before the line that matters."""

    def _flags(self) -> list[str]:
        """Every long flag of this parser and of its subcommands' parsers."""
        found = set()
        for action in self._actions:
            found.update(f for f in action.option_strings if f.startswith("--"))
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    found.update(f for a in sub._actions for f in a.option_strings if f.startswith("--"))
        return sorted(found)

    def error(self, message: str):
        flags = self._flags()
        unknown = re.match(r"unrecognized arguments: (.*)", message)
        bad = re.match(r"argument ([^:]+): (.*)", message)
        required = re.match(r"the following arguments are required: (.*)", message)
        if unknown:
            words = unknown.group(1).split()
            first = next((w for w in words if w.startswith("-")), words[0])
            close = difflib.get_close_matches(first.split("=")[0], flags, n=1)
            hint = f"did you mean {close[0]}?" if close else f"{self.prog} --help lists the options."
            line = f"{first.lstrip('-') or first}: no such option ({' '.join(words)}); {hint}"
        elif bad:
            names = bad.group(1).split("/")
            name = next((n for n in names if n.startswith("--")), names[0])
            name = "command" if name.startswith("{") else name.lstrip("-").replace("-", "_")
            line = f"{name}: {bad.group(2)}"
        elif required:
            spellings = [item.split("/")[0] for item in re.split(r",\s*", required.group(1))]
            names = [n.lstrip("-").replace("-", "_") for n in spellings]
            line = f"{', '.join(names)}: required; pass {' and '.join(spellings)} (or set them in a --config file)."
        else:
            line = message
        self.exit(2, f"error: {line}\n")
