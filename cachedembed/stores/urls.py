"""Cache URLs: the default, the accepted forms, normalisation, and the redaction of their passwords.

The backends import these helpers from here, below the package that opens stores, so no
backend imports its own package.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import ConfigurationError, StoreError
from ..redact import REDACTED


def default_url() -> str:
    """``$CACHEDEMBED_URL`` if set, else a SQLite file in the platform's user cache folder."""
    from ..settings import cache_url

    env = cache_url()
    if env:
        return env
    from platformdirs import user_cache_dir

    return f"sqlite:///{Path(user_cache_dir('cachedembed')) / 'cache.db'}"


_URL_FORMS = {
    "sqlite": "sqlite:///{rest} (relative path) or sqlite:////{rest} (absolute path)",
    "diskcache": "diskcache://{rest} (relative folder) or diskcache:///{rest} (absolute folder)",
    "memory": "memory:// (or memory://NAME)",
    "postgresql": "postgresql+psycopg://USER@HOST/DATABASE",
    "mysql": "mysql+pymysql://USER@HOST/DATABASE",
    "mariadb": "mysql+pymysql://USER@HOST/DATABASE",
    "redis": "redis://HOST:6379/0",
    "rediss": "rediss://HOST:6380/0",
    "valkey": "valkey://HOST:6379/0",
    "valkeys": "valkeys://HOST:6380/0",
}
REDIS_SCHEMES = ("redis://", "rediss://", "valkey://", "valkeys://")
_KNOWN = (
    "sqlite:///path.db, diskcache:///dir, postgresql+psycopg://..., mysql+pymysql://..., "
    "redis://HOST/0 or memory://"
)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):(.*)", re.DOTALL)


def check_url(url: str) -> None:
    """Refuse a cache URL that cannot mean what its author meant, naming the spelling that works.

    Raises :class:`~cachedembed.errors.ConfigurationError` before anything is created: a
    missing ``//`` once made ``sqlite:/x.db`` a folder named ``sqlite:``. A string without a
    scheme is a path to a SQLite file (one-letter schemes are Windows drive letters).
    """
    match = _SCHEME.fullmatch(url)
    if match is None:
        return
    scheme, rest = match[1].lower(), match[2]
    base = scheme.split("+", 1)[0]
    if base == "postgres":
        fixed = "postgresql+psycopg:" + rest
        raise ConfigurationError(
            f"cache URL scheme {match[1]!r} is not supported: write {redact_url(fixed)}"
        )
    form = _URL_FORMS.get(base)
    if form is None:
        raise ConfigurationError(f"unsupported cache URL scheme {match[1]!r}: use {_KNOWN}")
    if not rest.startswith("//"):
        example = form.format(rest=rest.lstrip("/") or "PATH")
        raise ConfigurationError(
            f"cache URL {match[1]}:{'...' if base in ('postgresql', 'mysql', 'mariadb') else rest} "
            f"lacks the '//' after '{match[1]}:': write {example}"
        )


def normalize_url(url: str) -> str:
    """Check ``url`` (:func:`check_url`) and resolve relative paths, so the same cache always
    has the same URL (and shared handle)."""
    check_url(url)
    if url.startswith("diskcache://"):
        return "diskcache://" + str(Path(url[len("diskcache://") :]).expanduser().resolve())
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        rest = url[len("sqlite:///") :]
        if rest and rest != ":memory:" and not rest.startswith("file:"):
            return "sqlite:///" + str(Path(rest).expanduser().resolve())
    if "://" not in url and url.endswith((".db", ".sqlite", ".sqlite3")):
        return "sqlite:///" + str(Path(url).expanduser().resolve())
    return url


PASSWORD_PARAMS = frozenset({"password", "passwd", "pwd", "sslpassword"})
"""Query parameters of a database URL that hold a password (lower case)."""
_MASK = REDACTED


def redact_url(url: str, *, drop: bool = False) -> str:
    """``url`` safe to print or persist: its password masked as ``***`` (removed with ``drop``).

    A password may sit in the userinfo (``user:pw@host``) or in the query (``?password=pw``,
    which SQLAlchemy hands to the driver); both are hidden. This is the one place cache URLs
    are redacted: ``store.url``, errors, ``stats``, exports and Chroma's persisted config use it.
    """
    if url.startswith(("memory://", "diskcache://")):
        return url
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # unparsable: show no more than the scheme
        return url.split(":", 1)[0] + "://" + _MASK
    secret_keys = [k for k in parsed.query if k.lower() in PASSWORD_PARAMS]
    if drop:
        parsed = parsed.difference_update_query(secret_keys)._replace(password=None)
        return parsed.render_as_string(hide_password=False)
    parsed = parsed.update_query_dict(dict.fromkeys(secret_keys, _MASK))
    quoted_mask = "%2A" * len(_MASK)
    return parsed.render_as_string(hide_password=True).replace(quoted_mask, _MASK)


def url_passwords(url: str) -> list[str]:
    """Every password in ``url`` (userinfo and query), to scrub from driver error texts."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return []
    found = [parsed.password] if parsed.password else []
    for key, value in parsed.query.items():
        if key.lower() in PASSWORD_PARAMS:
            found.extend([value] if isinstance(value, str) else value)
    return [str(p) for p in found if p]


def public_url(url: str) -> str:
    """``url`` without its password, for configs persisted in plain text (Chroma's).

    Dropped rather than masked: a wrapper rebuilt from it must not try ``***`` as the password.
    """
    return redact_url(url, drop=True)


def private_url(url: str) -> str:
    """A :func:`public_url` with its password back, from ``$CACHEDEMBED_URL`` when it names the same database."""
    from ..settings import cache_url

    env = cache_url()
    if env and not url.startswith(("memory://", "diskcache://")) and public_url(env) == url:
        return env
    return url


def no_cache_error(where: str) -> StoreError:
    """The error of a read-only command pointed at a cache that does not exist."""
    return StoreError(
        f"no cache at {where}: check --cache or $CACHEDEMBED_URL "
        "(`cachedembed embed` or `import` creates one)"
    )
