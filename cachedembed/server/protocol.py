"""Connection limits uvicorn does not have: head and body deadlines, and a connection cap that evicts.

uvicorn bounds idle time between requests (``timeout_keep_alive``) but nothing else: a
client that opens a connection and sends its request head one byte every few seconds
(slowloris) holds that connection, and its file descriptor, for ever. Its
``limit_concurrency`` does not help: it counts those connections too, and answers the
*real* clients 503 once the slow ones fill it.

:class:`GuardedProtocol` is uvicorn's httptools protocol with four rules, all enforced
before the application (and so before authentication) sees anything:

- a new connection must start a request within the keep-alive timeout;
- a request head must be complete within ``header_timeout`` of its first byte;
- a request body must be complete within ``body_timeout`` of its head (408 otherwise);
- at most ``max_connections`` connections are open: a new one evicts the oldest connection
  that is idle or still sending its head (a real client sends its head at once, so under
  attack it is always the newest), and is refused only when every connection is busy with
  a request.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 60.0
DEFAULT_KEEP_ALIVE_TIMEOUT = 5.0
DEFAULT_MAX_CONNECTIONS = 512

_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 40\r\n"
    b"connection: close\r\n\r\n"
    b"request body not received within timeout"
)


@dataclass(frozen=True)
class Limits:
    """How long a client may take, and how many connections may be open at once."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    keep_alive_timeout: float = DEFAULT_KEEP_ALIVE_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with head/body deadlines and an evicting connection cap."""

    limits: ClassVar[Limits] = Limits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.opened_at = time.monotonic()
        self._deadline: asyncio.TimerHandle | None = None

    # -- the connection cap ------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections and not self._evict_one():
            self.transport = transport  # so that connection_lost, which follows, can run
            transport.close()  # every connection is busy with a request: refuse this one
            return
        super().connection_made(transport)
        # uvicorn arms its keep-alive timer only after a response; a connection that never
        # sends a byte must not be kept either. Its own code cancels this on the first byte.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def _evict_one(self) -> bool:
        """Close the oldest idle or head-sending connection; False when there is none."""
        waiting = [c for c in self.connections if isinstance(c, GuardedProtocol) and c.evictable]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c.opened_at)
        self.connections.discard(oldest)  # counted free now: closing completes on the loop
        oldest.transport.close()
        return True

    @property
    def evictable(self) -> bool:
        """Idle between requests or still sending a head: no request of its own is running."""
        return self.cycle is None or self.cycle.response_complete

    # -- deadlines -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(self.limits.header_timeout, self._close)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self.limits.body_timeout, self._body_timed_out)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float, expire: Any) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def _body_timed_out(self) -> None:
        # The application is still waiting for the body (it has not answered): tell the
        # client why before closing. Otherwise the answer was sent and only the rest of a
        # body nobody reads is still trickling in.
        if self.cycle is not None and not self.cycle.response_started:
            self.transport.write(_REQUEST_TIMEOUT)
        self._close()


def guarded_protocol(limits: Limits) -> type[GuardedProtocol]:
    """A :class:`GuardedProtocol` class enforcing ``limits`` (uvicorn instantiates it per connection)."""
    return type("GuardedProtocol", (GuardedProtocol,), {"limits": limits})


def uvicorn_config(app: Any, limits: Limits, **options: Any) -> Any:
    """A ``uvicorn.Config`` serving ``app`` over :class:`GuardedProtocol` with ``limits``."""
    import uvicorn

    return uvicorn.Config(
        app,
        http=guarded_protocol(limits),
        timeout_keep_alive=limits.keep_alive_timeout,  # type: ignore[arg-type]
        **options,
    )
