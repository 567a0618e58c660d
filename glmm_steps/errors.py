"""The one exception type for problems a user can fix (config, data, formula)."""

from __future__ import annotations

import reprlib

# A message is read on a terminal: one line, at most this long. Values quoted from a
# config or a data file are abbreviated where they are quoted (:func:`abbreviate`);
# this bound is the last guard, so a config of a million nested aliases cannot make
# an 80 MB "one line".
MAX_MESSAGE = 400

_REPR = reprlib.Repr()
_REPR.maxstring = 60
_REPR.maxother = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxdict = 4
_REPR.maxlevel = 2


def abbreviate(value: object) -> str:
    """``repr(value)`` cut to a few dozen characters (long strings and big or deep
    containers end in ``...``), for quoting a user's value in a message."""
    return _REPR.repr(value)


def one_line(message: str, limit: int = MAX_MESSAGE) -> str:
    """``message`` with line breaks shown as ``\\n`` and cut to ``limit`` characters."""
    text = message.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


class GlmmError(Exception):
    """A user-facing error: its message is one line that names the offending key,
    column or term and what was expected. Caught at the edge (Snakefile, CLI) and
    printed without a traceback. Whatever the message quotes, it stays one line of at
    most MAX_MESSAGE characters."""

    def __init__(self, *args: object):
        if len(args) == 1 and isinstance(args[0], str):
            args = (one_line(args[0]),)
        super().__init__(*args)


class ConfigError(GlmmError):
    """The config file is invalid; the message starts with the key path."""

    def __init__(self, path: str, problem: str):
        self.path = path
        self.problem = problem
        super().__init__(f"config error: {path}: {problem}" if path else f"config error: {problem}")


class DataError(GlmmError):
    """A data file cannot be fitted as declared (missing column, wrong type, ...)."""
