"""Tiers of zoo daemons: whether this daemon's upstream is another zoo daemon, and the registry answers
(refs, commits) asked of the upstream.

A daemon whose upstream is a zoo daemon (a node under a central) serves the upstream's ``local/`` names
too: the team's names reach every machine. It finds out by asking the upstream ``GET /api/zoo`` once (a zoo
server answers ``{"server": "zoo", ...}``; the Hub and other mirrors answer 404). Until it knows, and
whenever the upstream is the Hub or a mirror, ``local/`` names are never sent upstream: a ``local``
organisation on the Hub is someone else's, and the team's names are not the Hub's business.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .._version import __version__
from ..errors import OfflineError, RemoteError, RemoteNotFoundError
from ..store import hub

log = logging.getLogger("zoo.daemon")
RETRY = 30.0  # seconds before an upstream that could not be reached is asked again what it is


def identity() -> dict[str, Any]:
    """This server's answer to ``GET /api/zoo``."""
    return {"server": "zoo", "version": __version__, "serves": ["local", "aliases"]}


class Tier:
    """Whether the upstream is a zoo daemon: asked once (again after :data:`RETRY` seconds when it could not
    be reached); offline, never."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answer: bool | None = None
        self._retry_at: float | None = None  # the upstream could not be reached: ask again then

    def known(self) -> bool | None:
        """True or False when known without asking; None when :meth:`probe` must be called (it blocks)."""
        if hub.offline():
            return False
        with self._lock:
            if self._answer is None or (self._retry_at is not None and time.monotonic() >= self._retry_at):
                return None
            return self._answer

    def probe(self) -> bool:
        known = self.known()
        if known is not None:
            return known
        retry = None
        try:
            data = get_json("/api/zoo", "what the upstream is")
            answer = isinstance(data, dict) and data.get("server") == "zoo"
        except RemoteNotFoundError:
            answer = False  # the Hub or a mirror: it has no such route
        except (RemoteError, OfflineError) as exc:
            answer = False
            if hub.transient(exc):  # else it answered, and not as a zoo: the Hub or a mirror, for good
                retry = time.monotonic() + RETRY
                log.warning("could not ask the upstream %s whether it is a zoo daemon (%s); its local/ names are "
                            "not served until it answers (asked again in %.0f s)", hub.endpoint(), exc, RETRY)
        with self._lock:
            if answer and not self._answer:
                log.info("the upstream %s is a zoo daemon: its local/ names and aliases are served here too",
                         hub.endpoint())
            self._answer, self._retry_at = answer, retry
        return answer


def get_json(path: str, what: str) -> Any:
    """The upstream's JSON answer to ``GET path`` (with this daemon's ``HF_TOKEN``), bounded and timed as
    every metadata request (:mod:`zoo.store.hub`)."""
    data, _ = get_page(path, what)
    return data


def get_page(path: str, what: str) -> tuple[Any, str | None]:
    """A page of the upstream's answer and the path (with query) of the next page, if any (the upstreams
    asked in turn: :func:`zoo.store.hub.get_page`)."""
    if hub.offline():
        raise OfflineError(f"{what}: offline")
    return hub.get_page(path, what)
