"""How a failure from a library is said to a user: its first line, never its traceback."""

from __future__ import annotations


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of what ``exc`` says, at most ``limit`` characters, or its type's name when
    it says nothing (an empty message would otherwise leave a sentence with a hole)."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
