"""No body contradicts its ETag: the first time this process serves a stored file, it hashes it while the
file goes out, and the last byte of every response waits for the digest.

A file's check is remembered for the life of the process by its inode and stat (size, mtime, ctime): a file
rewritten or replaced since is checked again. Bit rot that keeps every stat field, after the check, is the
scrubber's to find (:mod:`zoo.daemon.scrub`). Every client that asks for a file while it is being checked
shares the one hash; each sends what the hash has passed, never the last byte before the hash is through.
A file that fails is reported to ``on_bad`` (which quarantines it through the store and taints its etag)
before the clients' connections are cut, so that their retries find it fetched again, never the damaged
bytes.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import os
import threading
from typing import Any, Callable

from .listeners import Listened
from .protocol import ServedFile

log = logging.getLogger("zoo.daemon")
CHUNK = 1 << 22


class Check(Listened):
    """One hash of one stored file (an inode), read by the responses that send it meanwhile."""

    def __init__(self, fd: int, f: ServedFile, stamp: tuple[int, int, int]) -> None:
        self.fd, self.file, self.stamp = fd, f, stamp
        self.hashed = 0  # bytes hashed so far, from the start
        self.done = False
        self.ok = False
        Listened.__init__(self)

    def run(self) -> bool:
        """Hash the file (the descriptor's inode: the very bytes sent); True when it matches."""
        f = self.file
        sha256 = hashlib.sha256() if f.sha256 else None
        sha1 = None if f.sha256 else hashlib.sha1(b"blob %d\0" % f.size)
        pos = 0
        try:
            while True:
                data = os.pread(self.fd, CHUNK, pos)
                if not data:
                    break
                (sha256 or sha1).update(data)
                pos += len(data)
                self.hashed = pos
                self._notify()
        except OSError as exc:
            log.warning("%s: unreadable while checked (%s)", f.path, exc)
            return False
        finally:
            os.close(self.fd)
        if pos != f.size:
            return False
        return sha256.hexdigest() == f.sha256 if sha256 is not None else sha1.hexdigest() == f.etag

    def finish(self, ok: bool) -> None:
        self.ok, self.done = ok, True
        self._notify()


class Verifier:
    def __init__(self, pool: concurrent.futures.Executor, on_bad: Callable[[ServedFile], Any]) -> None:
        self.pool, self.on_bad = pool, on_bad
        self._lock = threading.Lock()
        self._ok: dict[tuple[int, int], tuple[int, int, int]] = {}  # (dev, inode) -> stat when it matched
        self._running: dict[tuple[int, int], Check] = {}
        self.checked = 0
        self.failed = 0

    def check(self, fobj: Any, f: ServedFile) -> Check | None:
        """None when the file open as ``fobj`` was checked by this process and has not changed since;
        else its check (running, or started now)."""
        st = os.fstat(fobj.fileno())
        key, stamp = (st.st_dev, st.st_ino), (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with self._lock:
            if self._ok.get(key) == stamp:
                return None
            running = self._running.get(key)
            if running is not None and running.stamp == stamp:
                return running
            check = self._running[key] = Check(os.dup(fobj.fileno()), f, stamp)
        self.pool.submit(self._run, key, check)
        return check

    def _run(self, key: tuple[int, int], check: Check) -> None:
        ok = False
        try:
            ok = check.run()
            if ok:
                with self._lock:
                    self._ok[key] = check.stamp
            else:
                self.failed += 1
                log.warning("%s: the stored file does not match its digest %s; it is not served, and is "
                            "quarantined and fetched again", check.file.path, (check.file.sha256 or check.file.etag)[:12])
                try:
                    self.on_bad(check.file)
                except Exception:
                    log.exception("%s: could not quarantine the damaged file", check.file.path)
        finally:
            self.checked += 1
            with self._lock:
                if self._running.get(key) is check:
                    del self._running[key]
            check.finish(ok)

    def status(self) -> dict[str, int]:
        return {"files_checked": self.checked, "files_damaged": self.failed}
