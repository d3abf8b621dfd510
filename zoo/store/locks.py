"""Inter-process locks over filelock: best-effort, with progress while waiting and a timeout.

Correctness never depends on them: every write goes to a unique temporary file and is renamed into
place, so a lock that silently succeeds for everyone (flock on Lustre, GPFS and some NFS) costs
duplicate work, never a corrupt store. ``ZOO_LOCKS=off`` uses such a lock on purpose.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Iterator

from ..errors import LockTimeoutError

log = logging.getLogger("zoo.store")


@contextlib.contextmanager
def locked(path: Path, *, what: str, timeout: float | None = None, poll: float | None = None,
           mode: int = 0o666) -> Iterator[None]:
    """Hold the lock file ``path``; log every ``poll`` seconds while waiting; raise after ``timeout``.
    ``mode``: of the lock file, whatever the umask (every user who writes a group store takes its locks)."""
    if os.environ.get("ZOO_LOCKS", "").lower() in {"off", "0", "none", "false"}:
        yield
        return
    from filelock import FileLock, Timeout

    timeout = float(os.environ.get("ZOO_LOCK_TIMEOUT", 3600)) if timeout is None else timeout
    poll = min(5.0, timeout / 2) if poll is None else poll
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), mode=mode)
    start = time.monotonic()
    while True:
        waited = time.monotonic() - start
        try:
            lock.acquire(timeout=min(poll, max(timeout - waited, 0.01)))
            with contextlib.suppress(OSError):  # the creator sets it; umask must not narrow it
                if path.stat().st_mode & 0o777 != mode and path.stat().st_uid == os.getuid():
                    os.chmod(path, mode)
            break
        except Timeout:
            waited = time.monotonic() - start
            if waited >= timeout:
                raise LockTimeoutError(
                    f"gave up waiting for {what} after {waited:.0f} s: another process holds {path} "
                    f"(find it with: fuser {path}). A lock of a process that died is released by the "
                    "system, so a live process is working; wait longer with ZOO_LOCK_TIMEOUT=SECONDS"
                ) from None
            log.warning("waiting for %s (another process holds %s, %.0f s so far)", what, path, waited)
    try:
        yield
    finally:
        lock.release()
