"""``zoo daemon --webhook URL --webhook-secret FILE``: every event of the store posted to a URL, signed.

Each event (:mod:`zoo.store.events`: a version created, an alias moved, labels changed, a version removed or
evicted) is posted as JSON, ``event.as_json()``, with these headers::

    Content-Type: application/json
    X-Zoo-Event: version_created
    X-Zoo-Delivery: 6f1c...          the same for every attempt of one event (a receiver may dedupe on it)
    X-Zoo-Signature: sha256=<hex>    HMAC-SHA256 of the exact body, keyed with the secret (as GitHub signs)

The secret is the content of FILE without surrounding whitespace (at least 16 characters); a file every user
may read is refused, as the ``--tokens`` file is.

Deliveries run on a thread of their own, in the order the events happened, one at a time: a receiver that
is down, slow or answers an error delays no change of the store. An event that fails (no connection, no
answer in :data:`TIMEOUT` seconds, a status other than 2xx; redirects are not followed) is tried again after
1 s, 2 s, 4 s... at most a minute apart, for as long as the daemon runs, and the events after it wait in a
bounded queue (``--webhook-queue``, 10,000 by default). An event that finds the queue full is dropped: each
drop is logged and counted, as are deliveries, failed attempts and the event being retried, in
``zoo daemon status``. At exit the daemon gives the queue :data:`EXIT_WAIT` seconds, then logs how many
events were not delivered.

HTTP is the standard library's (``urllib.request``, with the environment's proxy settings), here only.
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import http.client
import json
import logging
import queue
import stat
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable

from .._version import __version__
from ..errors import InvalidArgumentError
from ..store.events import Dispatcher, Event, plugin_hooks

log = logging.getLogger("zoo.daemon.webhook")

TIMEOUT = 10.0  # seconds one delivery may take to connect, or between two reads of the answer
BACKOFF = (1.0, 60.0)  # the wait after a first failure, doubled after each one, and the longest wait
QUEUE_SIZE = 10_000  # events kept while the receiver is down or slow; more are dropped (logged, counted)
EXIT_WAIT = 5.0  # seconds the daemon gives the queue when it stops
MIN_SECRET = 16


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Zoo-Signature`` of ``body``: ``sha256=`` and the hex HMAC-SHA256 keyed with ``secret``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def read_secret(path: Path) -> bytes:
    """The secret in ``path``; a zoo error for a file that cannot be read, that every user may read, or that
    holds too short a secret."""
    try:
        st = path.stat()
        text = path.read_bytes() if stat.S_ISREG(st.st_mode) else None
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read the webhook secret file {path}: {exc.strerror or exc}") from None
    if text is None:
        raise InvalidArgumentError(f"the webhook secret file {path} is not a regular file")
    if st.st_mode & (stat.S_IROTH | stat.S_IWOTH):
        raise InvalidArgumentError(f"the webhook secret file {path} is readable or writable by every user (mode "
                                   f"{stat.S_IMODE(st.st_mode):04o}); chmod 600 {path}")
    secret = text.strip()
    if len(secret) < MIN_SECRET:
        raise InvalidArgumentError(f"the webhook secret in {path} has {len(secret)} characters, too few to be "
                                   f"secret; use at least {MIN_SECRET} (python -c 'import secrets; "
                                   "print(secrets.token_hex(32))')")
    return secret


def check_url(url: str) -> str:
    """``url`` if it is an http:// or https:// URL with a host, else a zoo error saying so."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError as exc:
        raise InvalidArgumentError(f"--webhook {url!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
        raise InvalidArgumentError(f"--webhook {url!r} is not an http:// or https:// URL with a host "
                                   "(e.g. https://ci.example.com/zoo-events)")
    return url


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx answer is a failed delivery: a signed body is not re-posted elsewhere


class Webhook:
    """Posts events to ``url`` signed with ``secret``, from a thread and a bounded queue of its own."""

    def __init__(self, url: str, secret: bytes, *, queue_size: int = QUEUE_SIZE, timeout: float = TIMEOUT,
                 backoff: tuple[float, float] = BACKOFF) -> None:
        self.url = check_url(url)
        self._secret = secret
        self.timeout, self.backoff = timeout, backoff
        self._queue: queue.Queue[tuple[str, str, bytes, Event]] = queue.Queue(maxsize=queue_size)
        self.queue_size = queue_size
        self._opener = urllib.request.build_opener(_NoRedirects)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.delivered = self.failed = self.dropped = 0
        self.retrying = 0  # failed attempts so far of the event being delivered (0: none failed)
        self.last_error: str | None = None
        atexit.register(self.close, EXIT_WAIT)  # registered before any dispatcher's: runs after they drained

    @classmethod
    def load(cls, url: str | None, secret_file: str | Path | None, *, queue_size: int | None = None) -> "Webhook":
        """From the daemon's flags; zoo errors for a flag without the other, a bad URL, secret or size."""
        if not url or not secret_file:
            raise InvalidArgumentError("--webhook URL and --webhook-secret FILE go together: the receiver checks "
                                       "each event's X-Zoo-Signature with the secret")
        if queue_size is not None and queue_size < 1:
            raise InvalidArgumentError(f"--webhook-queue must be at least 1, not {queue_size}")
        check_url(url)
        return cls(url, read_secret(Path(secret_file).expanduser()), queue_size=queue_size or QUEUE_SIZE)

    # -- where events come from ------------------------------------------------------------------

    def dispatcher(self) -> Dispatcher:
        """The daemon store's event sink: the installed plugins' hooks, and this webhook as one more plugin."""
        return Dispatcher(self.hooks)

    def hooks(self, hook: str) -> list[tuple[str, Callable[..., Any]]]:
        return [*plugin_hooks(hook), ("webhook", self.enqueue)]

    def enqueue(self, event: Event) -> None:
        """Queue ``event`` for delivery (never waits); drop it, logged and counted, when the queue is full."""
        body = json.dumps(event.as_json(), separators=(",", ":")).encode()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="zoo-webhook", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait((uuid.uuid4().hex, event.kind, body, event))
        except queue.Full:
            self.dropped += 1
            log.error("webhook %s: %s of %s@%s dropped: %d events wait for the receiver (%d dropped since the "
                      "daemon started)", self._shown, event.kind, event.name, event.version, self.queue_size,
                      self.dropped)

    # -- delivery --------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            delivery, kind, body, event = self._queue.get()
            try:
                self._deliver(delivery, kind, body, event)
            finally:
                self._queue.task_done()

    def _deliver(self, delivery: str, kind: str, body: bytes, event: Event) -> None:
        """Post until the receiver takes it (2xx) or the daemon stops, waiting longer after each failure."""
        attempt = 0
        while not self._stop.is_set():
            error = self._post(delivery, kind, body)
            if error is None:
                self.delivered += 1
                self.retrying = 0
                if attempt:
                    log.info("webhook %s: %s of %s@%s delivered after %d failed attempt(s)", self._shown, kind,
                             event.name, event.version, attempt)
                return
            attempt += 1
            self.failed += 1
            self.retrying = attempt
            self.last_error = error
            wait = min(self.backoff[0] * 2 ** (attempt - 1), self.backoff[1])
            log.warning("webhook %s: %s of %s@%s not delivered (%s); attempt %d, next in %.0f s; %d event(s) wait "
                        "behind it", self._shown, kind, event.name, event.version, error, attempt + 1, wait,
                        self._queue.qsize())
            self._stop.wait(wait)

    def _post(self, delivery: str, kind: str, body: bytes) -> str | None:
        """One attempt: None if the receiver answered 2xx, else why not."""
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": f"zoo-webhook/{__version__}",
            "X-Zoo-Event": kind, "X-Zoo-Delivery": delivery, "X-Zoo-Signature": sign(self._secret, body)})
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read(65536)
            return None
        except urllib.error.HTTPError as exc:
            exc.close()
            return f"HTTP {exc.code} {exc.reason}"
        except urllib.error.URLError as exc:
            return str(exc.reason)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    # -- what the daemon shows and does at exit ---------------------------------------------------

    @property
    def _shown(self) -> str:
        """The URL without credentials or query (either may hold a secret)."""
        parts = urllib.parse.urlsplit(self.url)
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        return urllib.parse.urlunsplit((parts.scheme, netloc + (f":{parts.port}" if parts.port else ""),
                                        parts.path, "", ""))

    def status(self) -> dict[str, Any]:
        """The ``webhook`` section of ``zoo daemon status``."""
        return {"webhook": {"url": self._shown, "delivered": self.delivered, "failed": self.failed,
                            "retrying": self.retrying, "queued": self._queue.qsize(),
                            "dropped": self.dropped, "last_error": self.last_error}}

    def close(self, timeout: float = EXIT_WAIT) -> bool:
        """Give the queue up to ``timeout`` seconds, then stop; True if every event was delivered."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        left = self._queue.unfinished_tasks
        if left:
            log.error("webhook %s: %d event(s) not delivered: the daemon stops (%s)", self._shown, left,
                      self.last_error or "the receiver is slow")
        return not left
