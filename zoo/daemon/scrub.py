"""The scrubber: a daemon thread that re-hashes the store's objects at a bounded rate, so that bit rot a
``stat`` cannot see (the bytes change, the size and mtime do not) is found while the daemon runs, not
only when someone runs ``zoo verify``.

It walks every object a version lists, one after another, reading at most ``rate`` bytes a second
(``ZOO_SCRUB_RATE`` in MB/s, default :data:`DEFAULT_RATE`; 0 turns it off), and starts over when it is
through. So damage is found within one pass: the store's size divided by the rate (100 GB at 20 MB/s:
about 85 minutes). A damaged object is handled as ``zoo verify`` handles it, through the store's own
method: the repositories whose versions list it are verified, which quarantines it, unlinks the blobs that
are the damaged inode and restores it from an intact copy when there is one (else the next load or HTTP
request fetches it again). ``on_damage`` is then told its etags (the hub server taints them: a client that
got those bytes and resumes with ``Range`` is sent the whole file).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable

from ..store.manifests import FileEntry
from ..store.content import hash_file
from ..store.writer import Store
from ..errors import InvalidArgumentError

log = logging.getLogger("zoo.daemon")
DEFAULT_RATE = 20.0  # MB/s: about 2% of a core for sha256, and a small share of a disk's bandwidth
MB = 1_000_000


def scrub_rate(value: str | float | None = None) -> float:
    """The scrubber's rate in MB/s: ``value`` (``zoo daemon --scrub-rate``), else ``ZOO_SCRUB_RATE``, else the
    default; 0 turns the scrubber off."""
    where = "--scrub-rate" if value is not None else "ZOO_SCRUB_RATE"
    text = str(value if value is not None else os.environ.get("ZOO_SCRUB_RATE", "")).strip()
    if not text:
        return DEFAULT_RATE
    try:
        rate = float(text)
    except ValueError:
        rate = -1.0
    if not rate >= 0 or rate == float("inf"):
        raise InvalidArgumentError(f"{where} {text!r}: expected megabytes a second, e.g. 20 (0 turns the "
                                   "scrubber off)")
    return rate


class _Stopped(Exception):
    pass


class Scrubber:
    def __init__(self, store: Store, rate: float, *, on_damage: Callable[[list[str]], None] | None = None) -> None:
        self.store, self.rate = store, rate * MB
        self.on_damage = on_damage
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.passes = 0
        self.checked = 0  # bytes hashed since the start
        self.damaged: list[dict[str, Any]] = []  # what was found (the last 20)
        self.pass_started: float | None = None

    def start(self) -> None:
        if self.rate <= 0:
            log.info("scrubber off (ZOO_SCRUB_RATE=0): bit rot is found by zoo verify only")
            return
        self._thread = threading.Thread(target=self._main, name="zoo-scrub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def status(self) -> dict[str, Any]:
        return {"scrub": {"rate_mb_s": self.rate / MB, "passes": self.passes, "checked_bytes": self.checked,
                          "damaged": list(self.damaged)}}

    # -- the walk ------------------------------------------------------------------------------------

    def _main(self) -> None:
        while not self._stop.is_set():
            self.pass_started = time.monotonic()
            try:
                found = self.scrub_pass()
            except _Stopped:
                return
            except Exception:  # a store being changed under the walk: the next pass sees it as it is then
                log.exception("scrubber: the pass stopped; the next one starts in a minute")
                found = -1
            if found >= 0:
                self.passes += 1
            # a pass of a small store is quick: at least a second between passes, a minute after a failure
            self._stop.wait(60 if found < 0 else 1)

    def _entries(self) -> dict[str, tuple[FileEntry, set[str]]]:
        """Every object a version lists: sha256 -> (an entry, the repositories listing it)."""
        out: dict[str, tuple[FileEntry, set[str]]] = {}
        for version in self.store.iter_versions():
            for entry in version.files:
                out.setdefault(entry.sha256, (entry, set()))[1].add(version.repo)
        return out

    def scrub_pass(self) -> int:
        """One pass over the store; returns how many damaged objects it found."""
        found = 0
        for sha256, (entry, repos) in self._entries().items():
            if self._stop.is_set():
                raise _Stopped
            path = self.store.object_path(sha256)
            try:
                digest, _, size = hash_file(path, self._throttle())
            except FileNotFoundError:
                continue  # removed (gc, rm) or quarantined meanwhile
            except OSError as exc:  # an I/O error reading it is damage too
                log.warning("scrubber: cannot read %s (%s)", path, exc)
                digest, size = "", -1
            if digest == sha256 and size == entry.size:
                continue
            found += 1
            self._damaged(entry, repos, size, digest)
        return found

    def _throttle(self) -> Callable[[int], None]:
        started = time.monotonic()
        done = 0

        def on_bytes(n: int) -> None:
            nonlocal done
            done += n
            self.checked += n
            ahead = done / self.rate - (time.monotonic() - started)
            if ahead > 0 and self._stop.wait(ahead):
                raise _Stopped
            if self._stop.is_set():
                raise _Stopped

        return on_bytes

    def _damaged(self, entry: FileEntry, repos: set[str], size: int, digest: str) -> None:
        log.warning("scrubber: %s (%s, %d bytes) failed its digest (now %d bytes, sha256 %s…); verifying %s",
                    self.store.object_path(entry.sha256), entry.path, entry.size, size, digest[:12],
                    ", ".join(sorted(repos)))
        etags = {entry.etag}
        for repo in sorted(repos):
            try:
                for version, bad, problem in self.store.verify(repo):
                    etags.add(bad.etag)
                    log.warning("scrubber: %s %s/%s: %s", repo, version.name, bad.path, problem)
            except Exception:
                log.exception("scrubber: zoo verify %s failed", repo)
        self.damaged = [*self.damaged, {"object": entry.sha256, "path": entry.path, "repos": sorted(repos),
                                        "when": time.time()}][-20:]
        if self.on_damage is not None:
            try:
                self.on_damage(sorted(etags))
            except Exception:
                log.exception("scrubber: on_damage failed")
