"""Pull-through: a file a client asks for that the store lacks is fetched once from the upstream, however
many clients ask at once, and can be read while it arrives.

A :class:`Transfer` is one file's download: it runs in a daemon job (so ``zoo daemon status`` shows it and a
client that goes away does not cancel it), writes the store's partial file (``tmp/…<etag>.part``, resumed by
the next daemon if this one dies), and is checked against its digest before it is stored. Streams read the
partial file as it grows; they hold back the last byte until the digest is checked, so a client never
receives a whole file that failed its digest: its connection is cut instead, and it retries.

Once stored, the file joins the version of its commit (:meth:`zoo.store.writer.Store.adopt`): a version
appears as soon as every file a load needs is stored, so ``zoo.load`` on the server sees it too. Files of an
upstream zoo daemon's ``local/`` names are stored as content only: they never become versions of this
store's own name of that spelling (:mod:`.catalog`).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..names import is_local
from ..store import hub
from ..store.manifests import FileEntry
from ..store.writer import Store
from .catalog import Catalog, Snapshot, served_remote_file
from .listeners import Listened
from .protocol import ServedFile

log = logging.getLogger("zoo.daemon")
TAINT_DAYS = 1


class Transfer(Listened):
    """One file's download, as the streams that read it see it."""

    def __init__(self, snap: Snapshot, f: ServedFile) -> None:
        self.snap, self.file = snap, f
        self.asked: list[tuple[Snapshot, str]] = [(snap, f.path)]  # every snapshot that wants this content
        self.part: Path | None = None
        self.attempt = 0  # a new try (after a failed digest) starts the partial file again
        self.streamed = False  # bytes of an unverified try went out to some client
        self.entry: FileEntry | None = None
        self.error: BaseException | None = None
        self.done = False
        Listened.__init__(self)

    def also(self, snap: Snapshot, f: ServedFile) -> None:
        """Another snapshot (or repository) asks for the same content: it adopts the file too."""
        if (snap.repo, snap.commit, f.path) not in {(s.repo, s.commit, p) for s, p in self.asked}:
            self.asked.append((snap, f.path))

    def on_part(self, path: Path) -> None:
        self.part, self.attempt = path, self.attempt + 1
        self._notify()

    def on_bytes(self, n: int) -> None:
        self._notify()

    def finish(self, entry: FileEntry | None = None, error: BaseException | None = None) -> None:
        self.entry, self.error, self.done = entry, error, True
        self._notify()


class PullThrough:
    """Transfers by content (etag): two repositories holding the same file share one download, and each
    snapshot that asked for it adopts it. At most ``max_downloads`` run at once; the others wait for a slot.

    A transfer whose bytes were streamed and then failed (a damaged download, or one that started again)
    taints its etag: a client that got those bytes may come back for the rest with ``Range``, and gluing a
    good tail to a bad head would make a whole wrong file. So a tainted etag is always sent whole (200,
    which clients take as "start again"). Taints are kept in ``$ZOO_HOME/remote/tainted/``, across restarts,
    for :data:`TAINT_DAYS` days (a client that holds bad bytes longer than that starts again anyway), and in
    memory for the life of the process: a taint that cannot be written (the disk that just filled and cut the
    download) still holds, and is written as soon as the disk takes it. A taint whose record cannot be read
    (an I/O or permission error, not its absence) counts as tainted: such an etag is sent whole.
    """

    def __init__(self, store: Store, catalog: Catalog, run_job: Callable[[tuple, Callable[[], Any]], Any],
                 *, max_downloads: int = 16) -> None:
        self.store, self.catalog, self.run_job = store, catalog, run_job
        self._lock = threading.Lock()
        self._transfers: dict[str, Transfer] = {}
        self._slots = threading.BoundedSemaphore(max_downloads)
        self._unwritten: dict[str, float] = {}  # etag -> when: taints the disk refused so far (held here)

    def transfer(self, snap: Snapshot, f: ServedFile) -> Transfer:
        """The download of ``f``: the one in flight (for this content, whichever repository asked), or a new one."""
        with self._lock:
            found = self._transfers.get(f.etag)
            if found is not None:
                found.also(snap, f)
                return found
            transfer = self._transfers[f.etag] = Transfer(snap, f)
        self.run_job(("http-pull", snap.repo, f.etag), lambda: self._run(transfer))
        return transfer

    def _on_part(self, transfer: Transfer) -> Callable[[Path], None]:
        def on_part(path: Path) -> None:
            if transfer.streamed:  # a new try after one whose bytes went out: those clients hold bad bytes
                self.taint(transfer.file.etag)
            transfer.on_part(path)

        return on_part

    def taint(self, etag: str) -> None:
        with self._lock:
            pending = sorted(set(self._unwritten) - {etag})
        for each in [etag, *pending]:  # and those the disk refused before: it may have room now
            self._write_taint(each)

    def _write_taint(self, etag: str) -> None:
        path = self.store.layout.tainted_path(etag)
        try:
            self.store.disk.mkdir(path.parent)
            self.store.disk.write_text(path, "streamed bytes of a download that failed\n")
        except OSError as exc:
            with self._lock:
                first = etag not in self._unwritten
                self._unwritten.setdefault(etag, time.time())
            if first:
                log.warning("could not record the taint of %s on disk (%s): held in memory, and written when "
                            "the disk takes it", etag, exc)
            return
        with self._lock:
            self._unwritten.pop(etag, None)

    def tainted(self, etag: str) -> bool:
        """Whether ``etag`` was tainted in the last :data:`TAINT_DAYS` days (an older taint is removed);
        True too when its record cannot be read (fail closed)."""
        with self._lock:
            when = self._unwritten.get(etag)
        if when is not None:
            if time.time() - when < TAINT_DAYS * 86400:
                self._write_taint(etag)  # the disk may have room by now
                return True
            with self._lock:
                self._unwritten.pop(etag, None)
        path = self.store.layout.tainted_path(etag)
        try:
            if time.time() - path.stat().st_mtime < TAINT_DAYS * 86400:
                return True
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:  # unknown is not clean: the whole file
            log.warning("cannot read the taint record %s (%s): the file is sent whole", path, exc)
            return True
        return False

    def _run(self, transfer: Transfer) -> None:
        snap, f = transfer.snap, transfer.file
        def confirm() -> None:  # the content is stored already: is it this repository's to have?
            if not self.store.layout.blob_path(snap.repo, f.etag).exists():
                hub.check_file(snap.repo, snap.commit, served_remote_file(f))

        def on_bytes(n: int) -> None:
            bar.update(n)
            transfer.on_bytes(n)

        try:
            # the daemon's job progress (zoo daemon status), as for pulls through its socket
            with self._slots, self.store.bar(f.size, f"pull {snap.repo}/{f.path}") as bar:
                entry = self.store.fetch_file(snap.repo, snap.commit, served_remote_file(f), confirm=confirm,
                                              on_bytes=on_bytes, on_part=self._on_part(transfer))
        except BaseException as exc:
            log.warning("%s/%s@%s: the pull-through failed: %s", snap.repo, f.path, snap.commit[:12], exc)
            with self._lock:
                self._transfers.pop(f.etag, None)
            if transfer.streamed:  # some client holds bytes of it
                self.taint(f.etag)
            transfer.finish(error=exc)
            raise
        with self._lock:
            self._transfers.pop(f.etag, None)
            asked = list(transfer.asked)
        transfer.finish(entry)
        log.info("%s/%s@%s: stored (%d bytes)", snap.repo, f.path, snap.commit[:12], f.size)
        for other, path in asked:
            if other.remote is None or is_local(other.repo):  # the upstream zoo's local/ names: content only
                continue
            mine = FileEntry(path, entry.sha256, entry.size, entry.etag)
            try:
                version = self.store.adopt(other.remote, [mine], refs=self.catalog.refs_to(other.repo, other.commit))
            except Exception:  # the file is stored and was served; the version waits for the next file
                log.exception("%s@%s: could not record the version", other.repo, other.commit[:12])
                continue
            if version is not None:
                self.catalog.forget(other.repo)
                log.info("%s %s (%s): %d files", other.repo, version.name, other.commit[:12], len(version.files))

    def joining_from_elsewhere(self, snap: Snapshot, f: ServedFile) -> bool:
        """Whether ``f``'s content is being fetched for another repository right now."""
        with self._lock:
            found = self._transfers.get(f.etag)
            return found is not None and all(s.repo != snap.repo for s, _ in found.asked)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._transfers)
