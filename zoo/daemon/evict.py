"""Quota, LRU eviction, pins and leases: what the cache daemon may delete to stay under ``--max-size``.

The daemon's records, beside the tree drawn in :mod:`zoo.cache.layout`::

    $ZOO_HOME/
    ├── pins/models--org--name/v3            a pinned version (JSON: repo, version, id, when, by whom):
    │                                        never evicted. ``zoo pin NAME[@vN]`` / ``zoo unpin``
    ├── leases/models--org--name/v3.lease    a process that loaded v3 holds a shared ``flock`` on this file
    │                                        for as long as it lives: v3 is not evicted meanwhile
    └── lru/models--org--name/v3             when v3 was last loaded (a Unix time, as text), as the daemon
                                             records it from client loads (never atime)

Rules of :func:`plan_eviction` / :func:`make_room`: whole versions go, least recently used first
(the ``lru`` record, else the version's creation time), and never

- a pinned version,
- a leased version (a live process loaded it),
- the newest version of a name (so every name stays loadable),

until the store's physical usage (the bytes of its objects, once each: :func:`zoo.cache.maintenance.usage`)
plus the incoming download fits the quota. What removing a set of versions frees is counted as the
objects that no remaining version uses (content shared with a version that stays frees nothing);
each version is removed under its name's lock with :func:`zoo.cache.maintenance.removal_plan`, the plan
``Store.remove`` carries out. When the quota cannot be met, nothing is removed and :class:`QuotaError`
says how much is needed, what is pinned or leased, and how to raise the quota.

Leases are ``flock`` locks: the kernel releases them when the process exits, however it exits (even
``kill -9``), so a lease never outlives its process. An evictor takes the lease file exclusively while it
removes the version, so a loader cannot take a lease on a version that is being removed (it waits a
moment, then finds the version gone). On NFS, Lustre and GPFS ``flock`` may be emulated, local to one
client, or a no-op that always succeeds: there a lease held on another machine may go unseen, and
eviction is protected by pins and recency (LRU order) only. Pin what must stay.

Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterator

from ..cache import atomic
from ..cache.progress import human
from ..cache.layout import repo_folder
from ..cache.manifests import Version
from ..cache.disk import FREE_MARGIN, check_free_space  # noqa: F401  (re-exported)
from ..cache.store import Store
from ..errors import CacheError, CheckpointNotFoundError, QuotaError, StoreFullError  # noqa: F401
from ..names import LOCAL_NAMESPACE, display_name, validate_repo_id, version_number

log = logging.getLogger("zoo.daemon")

PINS, LEASES, LRU = "pins", "leases", "lru"
LEASE_WAIT = 2.0  # seconds a loader waits for an evictor's exclusive hold before going without a lease


# -- small helpers ---------------------------------------------------------------------------------


def _size_flag(n: int) -> str:
    """A ``--max-size`` value at least ``n`` bytes: ``613GB``."""
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= scale:
            return f"{math.ceil(n / scale)}{unit}"
    return str(max(n, 0))


def parse_max_size(size: int | str) -> int:
    """``500GB``, ``1.5TiB`` or a number of bytes (:func:`zoo.model.weights.parse_size`)."""
    if isinstance(size, int) and not isinstance(size, bool):
        if size < 0:
            raise ValueError(f"a size cannot be negative: {size}")
        return size
    from ..model.weights import parse_size  # zoo.model.weights imports no torch at module level

    return parse_size(size)


def _record_path(store: Store, kind: str, repo: str, version_name: str, suffix: str = "") -> Path:
    if version_number(version_name) is None:
        raise ValueError(f"expected a version such as v3, not {version_name!r}")
    return store.home / kind / repo_folder(repo) / f"{version_name}{suffix}"


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
    if store.versions(local) or (store.home / PINS / repo_folder(local)).is_dir():
        return local
    return name


def _label(version: Version) -> str:
    return f"{display_name(version.repo)}@{version.name}"


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
    folder = store.home / PINS / repo_folder(repo)
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
    root = store.home / PINS
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


class _Leased(Exception):
    pass


@contextlib.contextmanager
def _exclusive(store: Store, version: Version) -> Iterator[None]:
    """Hold the lease file of ``version`` exclusively while it is removed (raise :class:`_Leased` if a
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
            raise _Leased(str(path)) from None
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


# -- eviction --------------------------------------------------------------------------------------


@dataclass
class EvictionPlan:
    """What :func:`plan_eviction` would remove to fit ``incoming`` bytes under ``max_size``.

    ``evict``: versions in eviction order (least recently used first); ``freed``: the bytes that frees
    (estimated; after :func:`make_room`, what was freed); ``blocked``: every version kept and why
    (``pinned``, ``leased``, ``newest``)."""

    max_size: int
    incoming: int
    usage: int  # physical bytes of the store's objects, when planned
    evict: list[Version] = field(default_factory=list)
    freed: int = 0
    blocked: list[tuple[Version, str]] = field(default_factory=list)

    @property
    def needed(self) -> int:
        """Bytes that must go for ``incoming`` to fit."""
        return max(0, self.usage + self.incoming - self.max_size)

    @property
    def ok(self) -> bool:
        return self.freed >= self.needed

    def kept(self, reason: str) -> list[Version]:
        return [v for v, why in self.blocked if why == reason]

    def describe(self) -> str:
        lines = [f"usage {human(self.usage)} + incoming {human(self.incoming)} against a quota of "
                 f"{human(self.max_size)}: {human(self.needed)} to free"]
        lines += [f"  evict {_label(v)}" for v in self.evict]
        lines.append(f"  frees {human(self.freed)}" + ("" if self.ok else " (not enough)"))
        return "\n".join(lines)


class _Freeing:
    """What removing a growing set of versions frees: an object goes when no remaining version uses it,
    and frees its bytes when nothing but its blob links (which go with it) still links its inode."""

    def __init__(self, store: Store, versions: list[Version]) -> None:
        self.store = store
        self.refs: dict[str, int] = {}
        self.blobs: dict[str, set[Path]] = {}
        self.shas: dict[Path, set[str]] = {}
        for v in versions:
            shas = {e.sha256 for e in v.files}
            self.shas[v.manifest] = shas
            for sha in shas:
                self.refs[sha] = self.refs.get(sha, 0) + 1
            for e in v.files:
                self.blobs.setdefault(e.sha256, set()).add(store.layout.blob_path(v.repo, e.etag))
        self._sizes: dict[str, int] = {}
        self.freed = 0

    def size(self, sha: str) -> int:
        if sha not in self._sizes:
            try:
                st = self.store.object_path(sha).stat()
            except OSError:
                self._sizes[sha] = 0
            else:
                links = 0
                for blob in self.blobs.get(sha, ()):
                    with contextlib.suppress(OSError):
                        b = blob.stat()
                        links += (b.st_dev, b.st_ino) == (st.st_dev, st.st_ino)
                self._sizes[sha] = st.st_size if st.st_nlink <= 1 + links else 0
        return self._sizes[sha]

    def add(self, version: Version) -> None:
        for sha in self.shas[version.manifest]:
            self.refs[sha] -= 1
            if self.refs[sha] == 0:
                self.freed += self.size(sha)

    def only_by(self, version: Version) -> int:
        """Bytes freed only because ``version`` (already added) goes."""
        return sum(self.size(sha) for sha in self.shas[version.manifest] if self.refs[sha] == 0)

    def drop(self, version: Version) -> None:
        self.freed -= self.only_by(version)
        for sha in self.shas[version.manifest]:
            self.refs[sha] += 1


def plan_eviction(store: Store, *, max_size: int | str, incoming: int = 0) -> EvictionPlan:
    """The versions to evict so that ``incoming`` more bytes fit under ``max_size`` (see the module's
    rules). Removes nothing; ``plan.ok`` is False when even every evictable version is not enough
    (``plan.evict`` then lists them all)."""
    from ..cache.maintenance import usage

    max_size = parse_max_size(max_size)
    if incoming < 0:
        raise ValueError(f"incoming bytes cannot be negative: {incoming}")
    plan = EvictionPlan(max_size=max_size, incoming=incoming, usage=usage(store).physical)
    if plan.needed == 0:
        return plan
    versions = list(store.iter_versions())
    pinned = pins(store)
    newest = {}
    for v in versions:
        if v.number > newest.get(v.repo, 0):
            newest[v.repo] = v.number
    candidates = []
    for v in versions:
        if v.number == newest[v.repo]:
            plan.blocked.append((v, "newest"))
        elif (v.repo, v.name) in pinned:
            plan.blocked.append((v, "pinned"))
        elif leased(store, v):
            plan.blocked.append((v, "leased"))
        else:
            candidates.append(v)
    candidates.sort(key=lambda v: (last_use(store, v), v.repo, v.number))
    freeing = _Freeing(store, versions)
    for v in candidates:
        freeing.add(v)
        plan.evict.append(v)
        if freeing.freed >= plan.needed:
            break
    if freeing.freed >= plan.needed:
        # Keep what freed nothing by itself (content shared with another victim that was enough alone),
        # the most recently used first.
        for v in reversed(plan.evict[:-1]):
            if freeing.freed - freeing.only_by(v) >= plan.needed:
                freeing.drop(v)
                plan.evict.remove(v)
    plan.freed = freeing.freed
    return plan


def _quota_error(plan: EvictionPlan, what: str) -> QuotaError:
    pinned = [_label(v) for v in plan.kept("pinned")]
    leased_ = [_label(v) for v in plan.kept("leased")]
    newest = len(plan.kept("newest"))
    short = plan.needed - plan.freed
    request = f"{what} ({human(plan.incoming)})" if what else f"{human(plan.incoming)} more"
    if plan.incoming > plan.max_size:
        head = (f"cannot make room for {request}: it alone is larger than the store's quota of "
                f"{human(plan.max_size)}")
    else:
        head = (f"cannot make room for {request}: the store uses {human(plan.usage)} of its quota of "
                f"{human(plan.max_size)}, so {human(plan.needed)} must be freed, and evicting every version "
                f"that may go frees only {human(plan.freed)} ({human(short)} short)")
    kept = []
    if pinned:
        kept.append(f"pinned: {', '.join(pinned)} (zoo unpin NAME@vN)")
    if leased_:
        kept.append(f"leased by running processes that loaded them: {', '.join(leased_)} (they go once "
                    "those processes exit)")
    if newest:
        kept.append(f"the newest version of each of {newest} name{'s' if newest != 1 else ''} (never evicted; "
                    "zoo rm NAME removes a name)")
    kept_text = "; kept: " + "; ".join(kept) if kept else ""
    fix = (f". Nothing was downloaded or removed. Raise the quota to at least "
           f"{_size_flag(plan.usage + plan.incoming - plan.freed)} (zoo daemon --max-size "
           f"{_size_flag(plan.usage + plan.incoming - plan.freed)}), or free space by hand (zoo rm NAME@vN)")
    return QuotaError(head + kept_text + fix, needed=short, pinned=pinned, leased=leased_)


def _evict_one(store: Store, version: Version, busy: frozenset[str] = frozenset()) -> int | None:
    """Remove ``version`` under its name's lock, holding its lease file exclusively; re-checks that it
    is still there, not the newest, not pinned, not leased. Returns the bytes freed, None if skipped."""
    from ..cache.maintenance import removal_plan

    # ``busy``: names whose lock the caller already holds (the pull or import asking for room)
    with contextlib.nullcontext() if version.repo in busy else store.disk.name_lock(version.repo):
        current = store.versions(version.repo)
        if not current or current[-1].number == version.number:
            return None
        if not any(v.number == version.number and v.id == version.id for v in current):
            return None
        if (version.repo, version.name) in pins(store):
            return None
        try:
            with _exclusive(store, version):
                freed = removal_plan(store, version.repo, [version]).execute()
        except _Leased:
            return None
        with contextlib.suppress(OSError, ValueError):
            _record_path(store, LRU, version.repo, version.name).unlink()
    return freed


def make_room(store: Store, *, max_size: int | str | None, incoming: int = 0, what: str = "",
              busy: frozenset[str] = frozenset()) -> EvictionPlan:
    """Before a pull or import of ``incoming`` bytes (``what`` names it in messages and logs): evict
    versions until it fits under ``max_size`` (None: no quota), then check the disk's free space.
    Raises :class:`QuotaError` before removing anything when the quota cannot be met, and when the
    disk has too little free space. Returns what was evicted (``freed``: the bytes freed)."""
    done = EvictionPlan(max_size=2**63, incoming=incoming, usage=0)
    if max_size is not None:
        limit = parse_max_size(max_size)
        for attempt in range(4):  # a version leased, pinned or removed since the plan: plan again
            plan = plan_eviction(store, max_size=limit, incoming=incoming)
            if attempt == 0:
                done.max_size, done.usage, done.blocked = plan.max_size, plan.usage, plan.blocked
            if not plan.ok:
                raise _quota_error(plan, what)
            if not plan.evict:
                break
            store.disk.prepare()
            skipped = False
            for v in plan.evict:
                freed = _evict_one(store, v, busy)
                if freed is None:
                    skipped = True
                    continue
                done.evict.append(v)
                done.freed += freed
                log.info("evicted %s (last used %s, %s freed) to make room for %s", _label(v),
                         time.strftime("%Y-%m-%d %H:%M", time.localtime(last_use(store, v))), human(freed),
                         what or human(incoming))
            if not skipped:
                break
    check_free_space(store.home, incoming, what=what)
    return done


__all__ = [
    "EvictionPlan", "Lease", "QuotaError", "check_free_space", "ensure_lease_file", "hold_lease", "last_use",
    "lease_path", "leased", "make_room", "parse_max_size", "pin", "pins", "plan_eviction", "record_use",
    "unpin",
]
