"""The upstreams a daemon asks, in turn: which one first, which ones failed lately, and what counts as
"could not be asked". No HTTP here: :mod:`zoo.store.hub` makes each request through :func:`each`.

``zoo daemon --upstream URL --upstream URL`` (or ``--upstream URL,URL``) names several, tried in the order
given; without it, the one upstream is ``HF_ENDPOINT`` (read at call time), or huggingface.co. The one that
answered last is asked first (sticky). One that could not be asked (refused, reset, timed out, 5xx) goes to
the back for :data:`DOWN_FOR` seconds, then takes its turn again; while every one is down, each is still
asked (the one whose time is up soonest first), so a request never fails without asking them all.

Could not be asked: refused, reset, timed out, stalled, or a 5xx answer (:func:`transient`). Any other
answer (a 404, a 401) is the answer, and is not asked of the next one. Every upstream is taken to serve
the same content (central daemons of one team, or mirrors of one hub).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextvars import ContextVar
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit

from ..errors import InvalidArgumentError, RemoteError

DEFAULT_ENDPOINT = "https://huggingface.co"
DOWN_FOR = 30.0  # seconds an upstream that could not be asked waits at the back before it is tried again in turn

log = logging.getLogger("zoo.daemon")
_lock = threading.Lock()
_configured: list[str] = []  # set by configure() (zoo daemon --upstream); empty: HF_ENDPOINT alone
_last: list[str] = []  # the upstream that answered last (at most one)
_down: dict[str, float] = {}  # upstream -> when (time.monotonic) it may be asked again in its turn
asking: ContextVar[str | None] = ContextVar("zoo_upstream_asked", default=None)  # the one asked now (messages)
_T = TypeVar("_T")


def configure(values: str | list[str] | None) -> list[str]:
    """Several upstreams, each value a URL or ``URL,URL``; ``None`` or empty: ``HF_ENDPOINT`` again. Returns the
    list; what was known of the earlier ones is forgotten."""
    if isinstance(values, str):
        values = [values]
    urls: list[str] = []
    for part in (p.strip() for v in values or [] for p in v.split(",")):
        parts = urlsplit(part)
        if not part or parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidArgumentError(
                f"--upstream {part!r}: not an http(s) URL. Expected one such as http://central:8090 or "
                "https://huggingface.co; several: repeat --upstream, or give URL,URL")
        if part.rstrip("/") not in urls:
            urls.append(part.rstrip("/"))
    with _lock:
        _configured[:] = urls
        _last.clear()
        _down.clear()
    return listed()


def listed() -> list[str]:
    """The upstreams in the order they were given."""
    with _lock:
        if _configured:
            return list(_configured)
    return [os.environ.get("HF_ENDPOINT", "").rstrip("/") or DEFAULT_ENDPOINT]


def order() -> list[str]:
    """The upstreams in the order to ask them now: the one that answered last, the others as given, then those
    that failed within :data:`DOWN_FOR` seconds."""
    urls = listed()
    if len(urls) == 1:
        return urls
    now = time.monotonic()
    with _lock:
        up = [u for u in urls if _down.get(u, 0.0) <= now]
        if _last and _last[0] in up:
            up.remove(_last[0])
            up.insert(0, _last[0])
        return up + sorted((u for u in urls if u not in up), key=lambda u: _down[u])


def answered(url: str) -> None:
    with _lock:
        if _down.pop(url, None) is not None and len(_configured) > 1:
            log.info("the upstream %s answers again", url)
        _last[:] = [url]


def failed(url: str, why: object) -> None:
    """``url`` could not be asked (refused, reset, timed out, 5xx): to the back for :data:`DOWN_FOR` seconds."""
    with _lock:
        several = len(_configured) > 1
        if several and _down.get(url, 0.0) <= time.monotonic():
            log.warning("the upstream %s failed (%s); the others are asked first for %.0f s",
                        url, str(why).split(". ")[0], DOWN_FOR)
        _down[url] = time.monotonic() + DOWN_FOR
        if _last == [url]:
            _last.clear()


def status() -> list[dict[str, Any]]:
    """Each upstream (for ``zoo daemon status``): whether it answered last, and whether it failed lately."""
    urls, now = listed(), time.monotonic()
    with _lock:
        return [{"url": u, "answered_last": _last == [u], "down": _down.get(u, 0.0) > now,
                 **({"retry_in": round(_down[u] - now, 1)} if _down.get(u, 0.0) > now else {})} for u in urls]


def transient(exc: BaseException) -> bool:
    """Whether the upstream could not be asked (refused, reset, timed out, stalled, a 5xx answer), rather than
    answered: from the HTTP library's exception a zoo error keeps as its context, or, for an error that names
    every upstream tried, from the last one's (its cause)."""
    if exc.__cause__ is not None:
        return transient(exc.__cause__)
    context = exc.__context__
    status = getattr(getattr(context, "response", None), "status_code", 0)
    if isinstance(status, int) and status:
        return status >= 500
    return context is not None and any(c.__name__ in ("TransportError", "_Stalled") for c in type(context).__mro__)


def each(what: str, ask: Callable[[str], _T]) -> _T:
    """``ask(upstream)`` of each upstream in turn (:func:`order`) until one answers: an error that says
    it could not be asked (:func:`transient`) goes on to the next; any other (a 404, a 401) is the answer."""
    failures: list[tuple[str, str]] = []
    last: RemoteError | None = None
    for base in order():
        token = asking.set(base)
        try:
            result = ask(base)
        except RemoteError as exc:
            if not transient(exc):
                answered(base)
                raise
            failed(base, str(exc).removeprefix(f"{what}: "))
            failures.append((base, str(exc)))
            last = exc
            continue
        finally:
            asking.reset(token)
        answered(base)
        return result
    assert last is not None
    raise none_answered(what, failures, last)


def none_answered(what: str, failures: list[tuple[str, str]], last: RemoteError) -> RemoteError:
    """The error of a request no upstream answered: the one upstream's own, or one that names each."""
    if len({base for base, _ in failures}) == 1:
        return last
    said = "; ".join(f"{base}: {why.removeprefix(f'{what}: ').split('. ')[0]}" for base, why in failures)
    error = RemoteError(f"{what}: none of the upstreams could be asked ({said}). Check that one of them runs and "
                        "that the network reaches it (each is asked again on the next request), or set "
                        "ZOO_OFFLINE=1 to use only what is cached")
    error.__cause__ = last  # transient() reads it; not printed
    return error
