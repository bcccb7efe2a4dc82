"""Running the server: the exposure check, building upstreams from ``--model`` options, uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import socket

from ..errors import ConfigurationError
from .protocol import Limits
from .routing import Pacing, Upstream

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


FD_RESERVE = 128
"""File descriptors kept beyond the connections: the cache, upstream sockets, the loop itself."""


def check_file_limit(max_connections: int) -> None:
    """Make room for ``max_connections`` sockets under ``RLIMIT_NOFILE``, or refuse to start.

    A server that runs out of descriptors cannot accept anyone, so the cap on connections
    must sit below the process limit: the soft limit is raised towards the hard one if need be.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return
    needed = max_connections + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard == resource.RLIM_INFINITY or hard >= needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        return
    raise ConfigurationError(
        f"--max-connections {max_connections} needs {needed} open files, but this process may "
        f"open only {hard} (ulimit -n): lower --max-connections to {max(1, hard - FD_RESERVE)} "
        "or raise the limit"
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
    max_body_memory: int,
    limits: Limits,
    pacing: Pacing,
) -> None:
    """Check the configuration, build the app and serve until interrupted."""
    check_exposure(host, api_key, allow_public_without_key)
    check_file_limit(limits.max_connections)
    import uvicorn

    from ..stores.deferred import open_or_defer
    from .app import create_app
    from .protocol import uvicorn_config

    store = open_or_defer(cache_url)  # a cache server down at start: serve degraded, as later
    upstreams = [Upstream.from_option(option, store, pacing) for option in model_options]
    for upstream in upstreams:
        upstream.prepare()  # a missing API key or model stops the start, not the first request
    app = create_app(
        upstreams,
        api_key=api_key,
        max_inputs=max_inputs,
        max_body_bytes=max_body_bytes,
        max_body_memory=max_body_memory,
    )
    sock, bound = _bind(host, port)
    names = ", ".join(u.id for u in upstreams)
    # One line with the real port (useful with --port 0), before uvicorn's own logging.
    print(f"cachedembed serving {names} on http://{host}:{bound} (cache {store.url})", flush=True)
    config = uvicorn_config(app, limits, log_level="info", access_log=False)
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
