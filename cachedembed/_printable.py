"""Strings from outside (model names, file contents) made safe to print on one terminal line."""

from __future__ import annotations


def printable(text: object) -> str:
    """``text`` with every non-printable character escaped as Python would (``\\x1b``, ``\\n``,
    ``\\u2028``, a lone surrogate as ``\\ud800``): a name from a file can neither move the
    cursor, recolour the terminal nor forge an extra output line."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in s)
