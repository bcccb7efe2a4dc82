"""Recognising credentials and keeping them out of identities, configs and error text.

Three kinds of credential are recognised, and nothing else is touched:

- config keys that *name* a credential (:func:`is_credential_name`): an exact, known name
  (``api_key``, ``token``, ``password``, ``authorization``, ...) or a provider-prefixed
  key name (``openai_api_key``, ``huggingfacehub_api_token``); ``tokenizer``,
  ``max_input_tokens`` or ``pad_token`` are options that change the vectors and stay;
- values of a secret type (pydantic ``SecretStr`` / ``SecretBytes``, :func:`is_secret_value`);
- credentials inside URLs: userinfo and credential query parameters (:func:`redact_url`).

:func:`redact_text` scrubs known secret values, in any case and as base64 or
percent-encoding, from text a server sent back.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

REDACTED = "***"
"""The one marker left where a secret was: in text, URLs and messages (SQLAlchemy's too)."""

# Names compared with case and separators removed: "API-Key", "api_key", "apiKey" -> "apikey".
CREDENTIAL_NAMES = frozenset(
    {
        "apikey",
        "apitoken",
        "apisecret",
        "token",
        "accesstoken",
        "authtoken",
        "bearertoken",
        "refreshtoken",
        "sessiontoken",
        "idtoken",
        "password",
        "passwd",
        "secret",
        "clientsecret",
        "secretkey",
        "accesskey",
        "privatekey",
        "authorization",
        "auth",
        "credential",
        "credentials",
        "subscriptionkey",
    }
)
"""Config keys that are credentials when they are the whole name."""

CREDENTIAL_SUFFIXES = (
    ("api", "key"),
    ("api", "token"),
    ("api", "secret"),
    ("access", "token"),
    ("auth", "token"),
    ("client", "secret"),
    ("secret", "key"),
    ("private", "key"),
    ("subscription", "key"),
    ("password",),
    ("passwd",),
)
"""Trailing words that make a prefixed name a credential: ``openai_api_key``, ``db_password``."""

URL_CREDENTIAL_PARAMS = CREDENTIAL_NAMES | {"key", "sig", "signature", "code"}
"""Query parameters that carry a credential (``?key=`` for Google, ``?sig=`` for Azure SAS,
``?code=`` for Azure Functions), compared like :data:`CREDENTIAL_NAMES`."""

_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|[^A-Za-z0-9]+")


def _words(name: str) -> list[str]:
    return [w.lower() for w in _WORD_BOUNDARY.split(name) if w]


def is_credential_name(name: str) -> bool:
    """True for a config key that names a credential, by the rules in the module docstring."""
    words = _words(name)
    if "".join(words) in CREDENTIAL_NAMES:
        return True
    return any(tuple(words[-len(s) :]) == s for s in CREDENTIAL_SUFFIXES if len(words) > len(s))


_CREDENTIAL_HEADER = re.compile(r"auth|key|token|secret|password|cookie", re.I)


def is_credential_header(name: str) -> bool:
    """An HTTP header that may carry a credential (``Authorization``, ``api-key``, ``X-Goog-Api-Key``).

    Broader than :func:`is_credential_name`: a header never changes the vectors, so
    dropping one too many from a persisted config costs nothing but passing it again.
    """
    return bool(_CREDENTIAL_HEADER.search(name))


def is_secret_value(value: Any) -> bool:
    """A pydantic ``SecretStr``/``SecretBytes`` or anything shaped like one (no pydantic import)."""
    return type(value).__name__ in ("SecretStr", "SecretBytes", "Secret") or callable(
        getattr(value, "get_secret_value", None)
    )


def is_url(value: Any) -> bool:
    return isinstance(value, str) and "://" in value


def _is_credential_param(name: str) -> bool:
    return "".join(_words(name)) in URL_CREDENTIAL_PARAMS or is_credential_name(name)


def _host_port(netloc: str) -> str:
    return netloc.rpartition("@")[2]


def redact_url(url: str) -> str:
    """``url`` without userinfo and without credential query parameters; the rest as it was.

    What a persisted config or a message may show: it still reaches the same server with the
    same non-secret parameters (an Azure ``api-version``, say), only the credential is gone.
    """
    if not is_url(url):
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc and not parts.query:
        return url
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = urlencode([(k, v) for k, v in pairs if not _is_credential_param(k)])
    return urlunsplit((parts.scheme, _host_port(parts.netloc), parts.path, query, parts.fragment))


def redact_urls(value: Any) -> Any:
    """``value`` (a config: mappings, lists, strings) with :func:`redact_url` applied to every URL."""
    if isinstance(value, dict):
        return {k: redact_urls(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_urls(v) for v in value]
    return redact_url(value) if is_url(value) else value


def url_identity(url: str) -> str:
    """What of a server URL names the vectors: scheme, host, port and path (never a credential).

    Query parameters are left out altogether, so rotating a credential passed as any of them
    (``?key=``, a SAS signature and its expiry) keeps the cache namespace. A URL with neither
    userinfo nor query is returned as it is, so existing namespaces keep their names.
    """
    if not is_url(url):
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc and not parts.query and not parts.fragment:
        return url
    return urlunsplit((parts.scheme, _host_port(parts.netloc), parts.path, "", ""))


def url_secrets(url: str | None) -> list[str]:
    """The credentials inside ``url`` (password, user, credential query values), to scrub from text."""
    if not is_url(url):
        return []
    parts = urlsplit(str(url))
    found = [v for k, v in parse_qsl(parts.query) if _is_credential_param(k)]
    found += [s for s in (parts.password, parts.username) if s]
    return found


def _base64_forms(secret: bytes) -> list[str]:
    # Inside a longer base64 string the secret starts at one of three byte alignments; the
    # whole 3-byte groups after that point encode identically, whatever comes before or after.
    forms = [base64.b64encode(secret).decode().rstrip("=")]
    for skip in (0, 1, 2):
        whole = secret[skip:][: (len(secret) - skip) // 3 * 3]
        if len(whole) >= 6:
            forms.append(base64.b64encode(whole).decode())
    return forms + [f.replace("+", "-").replace("/", "_") for f in forms]


def redact_text(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret replaced by :data:`REDACTED`: verbatim in any case, percent-encoded,
    and base64 (standard or URL-safe, at any alignment). Secrets under 4 characters are ignored."""
    patterns: list[str] = []
    for secret in secrets:
        if not secret or len(secret) < 4:
            continue
        patterns += [secret, quote(secret, safe="")]
        patterns += _base64_forms(secret.encode())
    if not patterns:
        return text
    for form in sorted(set(patterns), key=len, reverse=True):
        text = re.sub(re.escape(form), REDACTED, text, flags=re.IGNORECASE)
    return text
