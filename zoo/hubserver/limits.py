"""The limits on one client's connections (at most ``max_per_client`` per address, a request within
``header_timeout`` of connecting), the descriptor limit, and the HTTP parser's refusals as counts (not a
traceback each): what keeps one client from hurting the others (see :mod:`.server`)."""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import Counter
from typing import Any

log = logging.getLogger("zoo.daemon")


class ParserErrors(logging.Filter):
    """aiohttp logs each request its parser refuses (a 100 KB header, a bad Content-Length) with a whole
    traceback: a hostile client could fill the log. They are counted in the status instead, and logged as
    one line at debug level."""

    def __init__(self, counts: Counter[str]) -> None:
        super().__init__()
        self.counts = counts

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        if record.exc_info and isinstance(record.exc_info[1], HttpProcessingError):
            self.counts["refused by the HTTP parser"] += 1
            log.debug("refused by the HTTP parser: %s", str(record.exc_info[1]).splitlines()[0][:200])
            return False
        return True


class Guard(asyncio.Protocol):
    """In front of aiohttp's handler for one connection: at most ``max_per_client`` connections per client
    address, and a request within ``header_timeout`` seconds of connecting (or the connection is closed)."""

    def __init__(self, inner: Any, server: Any) -> None:
        self.inner, self.server = inner, server
        self.peer: str | None = None
        self.served = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        server = self.server
        peer = (transport.get_extra_info("peername") or ("?",))[0]
        if server._per_client[peer] >= server.settings.max_per_client:
            server.counts["refused: too many connections"] += 1
            transport.abort()
            return
        server._per_client[peer] += 1
        self.peer = peer
        self.timer = asyncio.get_running_loop().call_later(server.settings.header_timeout, self._late, transport)
        self.inner.connection_made(transport)

    def _late(self, transport: Any) -> None:
        if not self.served and not transport.is_closing():
            self.server.counts["closed: no request in time"] += 1
            transport.abort()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.peer is None:
            return
        counts = self.server._per_client
        counts[self.peer] -= 1
        if counts[self.peer] <= 0:
            del counts[self.peer]
        if self.timer is not None:
            self.timer.cancel()
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


def raise_fd_limit() -> None:
    """Each connection and each file being sent holds a descriptor: take what the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1 << 16), hard))
        except (ValueError, OSError):
            pass
