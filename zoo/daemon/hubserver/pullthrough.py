"""Pull-through: a file a client asks for that the store lacks is fetched once from the upstream, however
many clients ask at once, and can be read while it arrives.

A :class:`Transfer` is one file's download: it runs in a daemon job (so ``zoo daemon status`` shows it and a
client that goes away does not cancel it), writes the store's partial file (``tmp/…<etag>.part``, resumed by
the next daemon if this one dies), and is checked against its digest before it is stored. Streams read the
partial file as it grows; they hold back the last byte until the digest is checked, so a client never
receives a whole file that failed its digest: its connection is cut instead, and it retries.

Once stored, the file joins the version of its commit (:meth:`zoo.cache.store.Store.adopt`): a version
appears as soon as every file a load needs is stored, so ``zoo.load`` on the server sees it too.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable

from ...cache.manifests import FileEntry
from ...cache.store import Store
from .catalog import Catalog, Snapshot, served_remote_file
from .protocol import ServedFile

log = logging.getLogger("zoo.daemon")


class Transfer:
    """One file's download, as the streams that read it see it."""

    def __init__(self, snap: Snapshot, f: ServedFile) -> None:
        self.snap, self.file = snap, f
        self.part: Path | None = None
        self.attempt = 0  # a new try (after a failed digest) starts the partial file again
        self.entry: FileEntry | None = None
        self.error: BaseException | None = None
        self.done = False
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def listen(self, callback: Callable[[], None]) -> None:
        """``callback()`` is called (from the download's thread) whenever the transfer moves on."""
        with self._lock:
            self._listeners.append(callback)

    def unlisten(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def _notify(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for callback in listeners:
            try:
                callback()
            except RuntimeError:  # the listener's event loop is closed: the daemon is stopping
                pass

    def on_part(self, path: Path) -> None:
        self.part, self.attempt = path, self.attempt + 1
        self._notify()

    def on_bytes(self, n: int) -> None:
        self._notify()

    def finish(self, entry: FileEntry | None = None, error: BaseException | None = None) -> None:
        self.entry, self.error, self.done = entry, error, True
        self._notify()


class PullThrough:
    def __init__(self, store: Store, catalog: Catalog, run_job: Callable[[tuple, Callable[[], Any]], Any]) -> None:
        self.store, self.catalog, self.run_job = store, catalog, run_job
        self._lock = threading.Lock()
        self._transfers: dict[tuple[str, str], Transfer] = {}

    def transfer(self, snap: Snapshot, f: ServedFile) -> Transfer:
        """The download of ``f``: the one in flight, or a new one."""
        key = (snap.repo, f.etag)
        with self._lock:
            found = self._transfers.get(key)
            if found is not None:
                return found
            transfer = self._transfers[key] = Transfer(snap, f)
        self.run_job(("http-pull", snap.repo, f.path), lambda: self._run(transfer))
        return transfer

    def _run(self, transfer: Transfer) -> None:
        snap, f = transfer.snap, transfer.file
        try:
            entry = self.store.fetch_file(snap.repo, snap.commit, served_remote_file(f),
                                          on_bytes=transfer.on_bytes, on_part=transfer.on_part)
        except BaseException as exc:
            log.warning("%s/%s@%s: the pull-through failed: %s", snap.repo, f.path, snap.commit[:12], exc)
            transfer.finish(error=exc)
            raise
        finally:
            with self._lock:
                self._transfers.pop((snap.repo, f.etag), None)
        transfer.finish(entry)
        log.info("%s/%s@%s: stored (%d bytes)", snap.repo, f.path, snap.commit[:12], f.size)
        if snap.remote is None:
            return
        try:
            version = self.store.adopt(snap.remote, [entry], refs=self.catalog.refs_to(snap.repo, snap.commit))
        except Exception:  # the file is stored and was served; the version waits for the next file
            log.exception("%s@%s: could not record the version", snap.repo, snap.commit[:12])
            return
        if version is not None:
            self.catalog.forget(snap.repo)
            log.info("%s %s (%s): %d files", snap.repo, version.name, snap.commit[:12], len(version.files))

    def in_flight(self) -> int:
        with self._lock:
            return len(self._transfers)
