"""The store's records of use: pins, leases and last uses, in the tree drawn in :mod:`zoo.store.layout`::

    $ZOO_HOME/
    ├── pins/models--org--name/v3            a pinned version (JSON: repo, version, id, when, by whom):
    │                                        never evicted. ``zoo pin NAME[@vN]`` / ``zoo unpin``
    ├── leases/models--org--name/v3.lease    a process that loaded v3 holds a shared ``flock`` on this file
    │                                        for as long as it lives: v3 is not evicted meanwhile
    └── lru/models--org--name/v3             when v3 was last loaded (a Unix time, as text), as recorded
                                             from loads (never atime)

They are the store's, whoever reads them: a load takes a lease and records its use; the daemon's quota
(:mod:`zoo.daemon.evict`, policy only) reads them to choose what it may evict.

Leases are ``flock`` locks: the kernel releases them when the process exits, however it exits (even
``kill -9``), so a lease never outlives its process. An evictor takes the lease file exclusively while it
removes the version (:func:`exclusive_lease`), so a loader cannot take a lease on a version that is being
removed (it waits a moment, then finds the version gone). On NFS, Lustre and GPFS ``flock`` may be emulated,
local to one client, or a no-op that always succeeds: there a lease held on another machine may go unseen,
and eviction is protected by pins and recency (LRU order) only. Pin what must stay.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from .. import atomic
from ..errors import CheckpointNotFoundError
from ..names import LOCAL_NAMESPACE, display_name, validate_repo_id, version_number
from .layout import repo_folder
from .manifests import Version

if TYPE_CHECKING:
    from .writer import Store

PINS, LEASES, LRU = "pins", "leases", "lru"
LEASE_WAIT = 2.0  # seconds a loader waits for an evictor's exclusive hold before going without a lease


def _record_path(store: Store, kind: str, repo: str, version_name: str, suffix: str = "") -> Path:
    if version_number(version_name) is None:
        raise ValueError(f"expected a version such as v3, not {version_name!r}")
    return store.layout.record_path(kind, repo, version_name, suffix)


def _repo_of_folder(folder_name: str) -> str | None:
    """``models--org--name`` -> ``org/name`` (names have no ``--``, so the folder name is reversible)."""
    if not folder_name.startswith("models--"):
        return None
    repo = folder_name[len("models--"):].replace("--", "/")
    try:
        return validate_repo_id(repo)
    except ValueError:
        return None


def _repo(store: Store, name: str) -> str:
    """A repository id as stored; a bare name with no versions of its own is taken as ``local/NAME``
    (what ``zoo.save(model, NAME)`` made)."""
    validate_repo_id(name)
    if "/" in name or store.versions(name):
        return name
    local = f"{LOCAL_NAMESPACE}/{name}"
    if store.versions(local) or (store.layout.records_root(PINS) / repo_folder(local)).is_dir():
        return local
    return name


def _file_mode(store: Store) -> int:
    return store.disk.modes()[0]


def _shared_mode(store: Store) -> int:
    """Writable by whoever may write the store, as its lock files are."""
    return store.disk.modes()[1] & 0o666


# -- pins ------------------------------------------------------------------------------------------


def pin(store: Store, repo: str, version_name: str | None = None) -> Version:
    """Pin a version so that eviction never removes it; returns the version pinned.

    ``zoo pin NAME`` pins the newest version of NAME *as it is now* (a later version is not pinned by
    it); ``zoo pin NAME@vN`` pins version N (any spec :meth:`Store.find` takes works: ``vN``, an id, a
    ref). ``repo`` is a repository id (``org/name``, ``local/my-bert``) or a saved name (``my-bert``).
    Pinning twice is harmless. A pin keeps a version from eviction only: ``zoo rm`` still removes it
    (and its pin then applies to nothing). Needs write access to the store (the daemon's user does it
    for its clients)."""
    repo = _repo(store, repo)
    version = store.find(repo, version_name)
    if version is None:
        have = ", ".join(v.name for v in store.versions(repo)) or "none"
        raise CheckpointNotFoundError(
            f"cannot pin {display_name(repo)}{'@' + version_name if version_name else ''}: no such version in "
            f"{store.home} (versions: {have}); see zoo versions {display_name(repo)}"
        )
    store.disk.prepare()
    path = _record_path(store, PINS, repo, version.name)
    store.disk.mkdir(path.parent)
    record = {"repo": repo, "version": version.name, "id": version.id, "pinned": time.time(),
              "by": _whoami()}
    atomic.write_text(path, json.dumps(record) + "\n", tmp_dir=store.tmp, mode=_file_mode(store))
    return version


def unpin(store: Store, repo: str, version_name: str | None = None) -> list[str]:
    """Remove pins: ``zoo unpin NAME@vN`` that version's, ``zoo unpin NAME`` every pin of NAME.
    Returns the version names unpinned (empty: nothing was pinned). Works for removed versions too."""
    repo = _repo(store, repo)
    folder = store.layout.records_root(PINS) / repo_folder(repo)
    if version_name is not None and version_number(version_name) is None:
        version = store.find(repo, version_name)  # an id or a ref: the version it names now
        if version is None:
            return []
        version_name = version.name
    names = [version_name] if version_name is not None else (
        sorted((p.name for p in folder.iterdir() if version_number(p.name) is not None),
               key=lambda n: version_number(n) or 0) if folder.is_dir() else [])
    removed = []
    for name in names:
        path = _record_path(store, PINS, repo, name)
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(name)
    with contextlib.suppress(OSError):
        folder.rmdir()  # only when empty
    return removed


def pins(store: Store) -> set[tuple[str, str]]:
    """Every pin: ``{(repo, "vN")}``. A pin whose version was removed and whose number now names other
    content (``zoo rm`` of the newest, then a new save) is stale and left out."""
    root = store.layout.records_root(PINS)
    out: set[tuple[str, str]] = set()
    for folder in root.iterdir() if root.is_dir() else []:
        repo = _repo_of_folder(folder.name)
        if repo is None or not folder.is_dir():
            continue
        current = None
        for path in folder.iterdir():
            number = version_number(path.name)
            if number is None:
                continue
            with contextlib.suppress(OSError, ValueError, AttributeError):
                pinned_id = json.loads(path.read_text(encoding="utf-8")).get("id")
                if pinned_id:
                    current = {v.number: v.id for v in store.versions(repo)} if current is None else current
                    if number in current and current[number] != pinned_id:
                        continue
            out.add((repo, path.name))
    return out


def _whoami() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no name for this uid (containers)
        return str(os.getuid())


# -- leases ----------------------------------------------------------------------------------------


@dataclass(eq=False)
class Lease:
    """A shared lock on a version's lease file, held while this process lives (or until :meth:`release`).
    ``held`` is False where no lease could be taken (a read-only store without the lease file, a file
    system without locks): the load goes on, unprotected."""

    path: Path
    fd: int | None = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = None
        if _HELD.get(self.path) is self:
            del _HELD[self.path]


_HELD: dict[Path, Lease] = {}  # this process's leases: their descriptors stay open until exit


def lease_path(store: Store, version: Version) -> Path:
    return _record_path(store, LEASES, version.repo, version.name, ".lease")


def _create(store: Store, path: Path) -> int:
    """Create ``path`` (mode from the store, whatever the umask) and return it open read-write;
    FileExistsError if it is there."""
    store.disk.mkdir(path.parent)
    mode = _shared_mode(store)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    with contextlib.suppress(OSError):
        os.fchmod(fd, mode)
    return fd


def ensure_lease_file(store: Store, version: Version) -> Path:
    """Create the lease file of ``version`` if it is missing, so that clients that cannot write the
    store can still take leases. The daemon calls it for every version it makes."""
    path = lease_path(store, version)
    try:
        os.close(_create(store, path))
    except FileExistsError:
        pass
    return path


def _open_lease(store: Store, path: Path) -> int | None:
    """The lease file open: created where we may write the store, else opened read-only if it exists,
    else None (no lease, silently)."""
    with contextlib.suppress(FileExistsError, OSError):
        return _create(store, path)
    return _open_existing(path)


def hold_lease(store: Store, version: Version) -> Lease:
    """Take a lease on ``version`` for as long as this process lives: a shared ``flock`` on
    ``leases/<repo folder>/<vN>.lease``. Eviction skips a version while any live process leases it.

    Take it before opening the version's files and check afterwards that the version still exists
    (its manifest): a version being evicted at that moment is then seen as gone. Never raises for
    the store's sake: a reader that cannot write the store opens an existing lease file read-only
    (the daemon creates them: :func:`ensure_lease_file`), and without one it gets no lease
    (``Lease.held`` is False). Taking the same lease again in one process returns the held one."""
    try:
        path = lease_path(store, version)
    except ValueError:
        return Lease(Path(os.devnull))
    held = _HELD.get(path)
    if held is not None and held.held:
        return held
    try:
        fd = _open_lease(store, path)
    except OSError:
        fd = None
    if fd is None:
        return Lease(path)
    deadline = time.monotonic() + LEASE_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            break
        except BlockingIOError:  # an evictor holds it exclusively, for the moment of a removal
            if time.monotonic() >= deadline:
                os.close(fd)
                return Lease(path)
            time.sleep(0.05)
        except OSError:  # no locks on this file system (ENOLCK, EBADF of an emulation)
            os.close(fd)
            return Lease(path)
    lease = Lease(path, fd)
    _HELD[path] = lease
    return lease


def leased(store: Store, version: Version) -> bool:
    """Whether a live process (this one included) holds a lease on ``version``: an exclusive
    ``flock`` attempt on a descriptor of our own, released at once. False where the file system
    cannot tell (see the module's note on NFS and Lustre)."""
    path = lease_path(store, version)
    fd = _open_existing(path)
    if fd is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _open_existing(path: Path) -> int | None:
    for flags in (os.O_RDWR, os.O_RDONLY):  # read-write where allowed: NFS emulates flock with fcntl
        try:
            return os.open(path, flags | os.O_CLOEXEC)
        except PermissionError:
            continue
        except OSError:
            return None
    return None


class Leased(Exception):
    """A live process holds a lease on the version an evictor asked for."""

    pass


@contextlib.contextmanager
def exclusive_lease(store: Store, version: Version) -> Iterator[None]:
    """Hold the lease file of ``version`` exclusively while it is removed (raise :class:`Leased` if a
    process holds a lease); the file is deleted with the version."""
    path = lease_path(store, version)
    fd = _open_existing(path)
    if fd is None:
        with contextlib.suppress(OSError):
            fd = _create(store, path)
    if fd is None:
        yield  # no lease file and none can be made: nobody can hold a lease
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Leased(str(path)) from None
        except OSError:
            pass  # no locks here: pins and recency protect
        yield
        with contextlib.suppress(OSError):
            path.unlink()
    finally:
        os.close(fd)


# -- last use --------------------------------------------------------------------------------------


def record_use(store: Store, repo: str, version_name: str, *, when: float | None = None) -> None:
    """Record that ``repo@version_name`` was loaded now (or at ``when``): ``lru/<repo folder>/<vN>``.
    Best-effort: a store this process cannot write still loads."""
    try:
        path = _record_path(store, LRU, repo, version_name)
        store.disk.mkdir(path.parent)
        store.disk.mkdir(store.tmp)
        atomic.write_text(path, repr(time.time() if when is None else float(when)) + "\n", tmp_dir=store.tmp,
                          mode=_file_mode(store))
    except (OSError, ValueError):
        pass


def last_use(store: Store, version: Version) -> float:
    """When ``version`` was last loaded, as :func:`record_use` recorded it; else when it was made."""
    path = _record_path(store, LRU, version.repo, version.name)
    with contextlib.suppress(OSError, ValueError):
        return float(path.read_text(encoding="utf-8").strip())
    with contextlib.suppress(ValueError, TypeError):
        return datetime.fromisoformat(version.created).timestamp()
    with contextlib.suppress(OSError):
        return version.manifest.stat().st_mtime
    return 0.0
