"""Running the server: the exposure check, building upstreams from ``--model`` options, uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import socket

from ..errors import ConfigurationError

log = logging.getLogger("cachedembed.server")


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname may resolve to anything: treat it as public


def check_exposure(host: str, api_key: str | None, allow_public_without_key: bool) -> None:
    """Refuse to serve a non-loopback address without a key, unless explicitly allowed."""
    if api_key or is_loopback(host) or allow_public_without_key:
        return
    raise ConfigurationError(
        f"refusing to listen on {host} without an API key: anyone who reaches it could spend "
        "your provider budget. Pass --api-key (or set $CACHEDEMBED_SERVER_API_KEY), bind "
        "127.0.0.1, or pass --allow-public-without-key"
    )


def run(
    model_options: list[str],
    cache_url: str | None,
    *,
    host: str,
    port: int,
    api_key: str | None,
    allow_public_without_key: bool,
    max_inputs: int,
    max_body_bytes: int,
) -> None:
    """Check the configuration, build the app and serve until interrupted."""
    check_exposure(host, api_key, allow_public_without_key)
    import uvicorn

    from ..stores import open_store
    from .app import create_app
    from .routing import Upstream

    store = open_store(cache_url)
    upstreams = [Upstream.from_option(option, store) for option in model_options]
    app = create_app(
        upstreams, api_key=api_key, max_inputs=max_inputs, max_body_bytes=max_body_bytes
    )
    sock, bound = _bind(host, port)
    names = ", ".join(u.id for u in upstreams)
    # One line with the real port (useful with --port 0), before uvicorn's own logging.
    print(f"cachedembed serving {names} on http://{host}:{bound} (cache {store.url})", flush=True)
    config = uvicorn.Config(app, log_level="info", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])  # the app flushes the cache's counters on shutdown


def _bind(host: str, port: int) -> tuple[socket.socket, int]:
    """A listening socket on ``host``:``port`` and the port it got (``port`` 0: any free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    return sock, sock.getsockname()[1]


def run_dashboard(cache_url: str | None, *, host: str, port: int, api_key: str | None) -> None:
    """Serve the read-only dashboard over the cache at ``cache_url`` until interrupted."""
    import uvicorn

    from ..stores import open_store
    from .dashboard import PREFIX, create_dashboard_app, redacted_url

    store = open_store(cache_url)
    sock, bound = _bind(host, port)
    print(
        f"cachedembed dashboard on http://{host}:{bound}{PREFIX} (cache {redacted_url(store.url)})",
        flush=True,
    )
    config = uvicorn.Config(
        create_dashboard_app(store, api_key), log_level="info", access_log=False
    )
    uvicorn.Server(config).run(sockets=[sock])
