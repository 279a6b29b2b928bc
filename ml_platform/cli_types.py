"""Parsers of command-line values shared by the platform's and the examples' commands."""

from __future__ import annotations

import datetime as dt

import click


def day(value: str | None) -> dt.date | None:
    """A YYYY-MM-DD option's value as a date (None when not given); a bad one is a usage error."""
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None
