"""Quota and LRU eviction: what the cache daemon may delete to stay under ``--max-size``. Policy only: the
records it reads (pins, leases, last uses) are the store's (:mod:`zoo.store.records`), and versions are
removed through the store's own removal plan.

Rules of :func:`plan_eviction` / :func:`make_room`: whole versions go, least recently used first
(the ``lru`` record, else the version's creation time), and never

- a pinned version,
- a leased version (a live process loaded it),
- the newest version of a name (so every name stays loadable),

until the store's physical usage (the bytes of its objects, once each: :func:`zoo.store.maintenance.usage`)
plus the incoming download fits the quota. What removing a set of versions frees is counted as the
objects that no remaining version uses (content shared with a version that stays frees nothing);
each version is removed under its name's lock with :func:`zoo.store.maintenance.removal_plan`, the plan
``Store.remove`` carries out, while the evictor holds its lease file exclusively. When the quota cannot be
met, nothing is removed and :class:`QuotaError` says how much is needed, what is pinned or leased, and how
to raise the quota.

Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..store import records
from ..store.disk import check_free_space
from ..store.manifests import Version
from ..store.progress import human
from ..store.writer import Store
from ..errors import IntegrityError, QuotaError
from ..names import display_name

log = logging.getLogger("zoo.daemon")


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


def _label(version: Version) -> str:
    return f"{display_name(version.repo)}@{version.name}"


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
    from ..store.maintenance import usage

    max_size = parse_max_size(max_size)
    if incoming < 0:
        raise ValueError(f"incoming bytes cannot be negative: {incoming}")
    plan = EvictionPlan(max_size=max_size, incoming=incoming, usage=usage(store).physical)
    if plan.needed == 0:
        return plan
    versions = list(store.iter_versions())
    pinned = records.pins(store)
    newest = {}
    for v in versions:
        if v.number > newest.get(v.repo, 0):
            newest[v.repo] = v.number
    candidates = []
    aliased: dict[str, set[str] | None] = {}  # repo -> its aliased versions (None: its aliases file unreadable)
    for v in versions:
        if v.number == newest[v.repo]:
            plan.blocked.append((v, "newest"))
        elif (v.repo, v.name) in pinned:
            plan.blocked.append((v, "pinned"))
        elif _aliased(store, v, aliased):
            plan.blocked.append((v, "aliased"))
        elif records.leased(store, v):
            plan.blocked.append((v, "leased"))
        else:
            candidates.append(v)
    candidates.sort(key=lambda v: (records.last_use(store, v), v.repo, v.number))
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


def _aliased(store: Store, version: Version, seen: dict[str, set[str] | None] | None = None) -> bool:
    """Whether an alias points at ``version``; a name whose aliases file cannot be read keeps every version.
    ``seen``: each name's aliased versions as read once, for a plan over many versions."""
    from ..store.marks import read

    seen = {} if seen is None else seen
    if version.repo not in seen:
        try:
            seen[version.repo] = {a.version for a in read(store.layout, version.repo, strict=True).aliases.values()}
        except IntegrityError:
            seen[version.repo] = None
    names = seen[version.repo]
    return names is None or version.name in names


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
    aliased = [_label(v) for v in plan.kept("aliased")]
    if aliased:
        kept.append(f"aliased: {', '.join(aliased)} (zoo untag NAME ALIAS)")
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
    from ..store.maintenance import removal_plan

    # ``busy``: names whose lock the caller already holds (the pull or import asking for room)
    with contextlib.nullcontext() if version.repo in busy else store.disk.name_lock(version.repo):
        current = store.versions(version.repo)
        if not current or current[-1].number == version.number:
            return None
        if not any(v.number == version.number and v.id == version.id for v in current):
            return None
        if (version.repo, version.name) in records.pins(store) or _aliased(store, version):
            return None
        try:
            with records.exclusive_lease(store, version):
                freed = removal_plan(store, version.repo, [version]).execute()
        except records.Leased:
            return None
        store.tagging.removed(version.repo, [version], "evicted")
        with contextlib.suppress(OSError, ValueError):
            records._record_path(store, records.LRU, version.repo, version.name).unlink()
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
                         time.strftime("%Y-%m-%d %H:%M", time.localtime(records.last_use(store, v))), human(freed),
                         what or human(incoming))
            if not skipped:
                break
    check_free_space(store.home, incoming, what=what)
    return done


__all__ = ["EvictionPlan", "QuotaError", "make_room", "parse_max_size", "plan_eviction"]
