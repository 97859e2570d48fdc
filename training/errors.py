"""Errors of the training core, and the one line of an exception that a message quotes."""

from __future__ import annotations


class CheckpointError(ValueError):
    """The file is missing, unreadable, or not a valid checkpoint; the message says which."""


def first_line(exc: BaseException, *, with_type: bool = False, limit: int = 300) -> str:
    """The first line of `exc`'s message, at most `limit` characters; `with_type` prefixes the
    exception's type name (`OSError: ...`). A blank message gives the type name alone."""
    lines = str(exc).strip().splitlines()
    line = lines[0].strip()[:limit] if lines else ""
    name = type(exc).__name__
    if not line:
        return name
    return f"{name}: {line}" if with_type else line
