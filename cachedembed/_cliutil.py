"""What the command modules share: the common options and the one-line error and output helpers.

``cli`` and ``batchcli`` both import this module, so neither imports the other's helpers.
"""

from __future__ import annotations

import json
from typing import Any

import click

from . import settings

CACHE_OPTION = click.option(
    "--cache",
    "cache_url",
    envvar=settings.CACHE_URL.name,
    default=None,
    metavar="URL",
    help="Cache URL (sqlite:///path.db, diskcache:///dir, postgresql+psycopg://..., memory://). "
    "Default: $CACHEDEMBED_URL, else a SQLite file in the user cache folder.",
)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def count(n: int, singular: str, plural: str | None = None) -> str:
    """``1 hit``, ``2 hits``, ``1,000 entries``: a number with its noun in the right number."""
    return f"{n:,} {singular if n == 1 else plural or singular + 's'}"


def _fail(message: str) -> click.ClickException:
    """A user's mistake: one ``Error: ...`` line, exit status 1."""
    return click.ClickException(message)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))
