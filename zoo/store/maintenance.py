"""Removing versions, collecting garbage, measuring the store. Each is a plan you can print (a dry run)
and then execute."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .. import atomic
from .manifests import Version, read_folder

if TYPE_CHECKING:
    from .writer import Store

GRACE = 3600  # seconds: gc leaves younger unreferenced files alone (a pull may be about to use them)


def gc_grace() -> float:
    """``ZOO_GC_GRACE`` seconds if set (a number >= 0), else :data:`GRACE`."""
    try:
        value = float(os.environ.get("ZOO_GC_GRACE", GRACE))
    except ValueError:
        return GRACE
    return value if value >= 0 else GRACE


@dataclass
class Plan:
    """Paths to delete and the bytes that frees."""

    description: str
    files: list[Path] = field(default_factory=list)  # files and symlinks
    dirs: list[Path] = field(default_factory=list)
    freed: int = 0
    refs: dict[Path, str | None] = field(default_factory=dict)  # ref file -> new target (None: delete)

    def execute(self) -> int:
        for path in self.files:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        for path in self.dirs:
            shutil.rmtree(path, ignore_errors=True)
        for ref, target in self.refs.items():
            if target is None:
                ref.unlink(missing_ok=True)
            else:
                atomic.write_text(ref, target)
        return self.freed


def _referenced(store: Store, exclude: set[Path]) -> set[str]:
    return {e.sha256 for v in store.iter_versions() if v.manifest not in exclude for e in v.files}


def _object_freed(store: Store, sha256: str, links_removed: int) -> int:
    """Bytes freed by deleting an object and ``links_removed`` blob links to it: only when nothing else
    (an imported source file, another repo's blob) still links the inode."""
    try:
        st = store.object_path(sha256).stat()
    except FileNotFoundError:
        return 0
    return st.st_size if st.st_nlink <= 1 + links_removed else 0


def removal_plan(store: Store, repo: str, versions: list[Version]) -> Plan:
    """Delete ``versions`` of ``repo``: manifests, snapshots and blobs no other version of it uses,
    objects no version anywhere uses; refs move to the newest remaining version."""
    doomed = {v.manifest for v in versions}
    remaining = [v for v in store.versions(repo) if v.manifest not in doomed]
    plan = Plan(f"remove {', '.join(v.name for v in versions)} of {repo}")
    plan.files += [v.manifest for v in versions]
    keep_ids = {v.id for v in remaining}
    keep_etags = {e.etag for v in remaining for e in v.files}
    repo_path = store.repo_path(repo)
    plan.dirs += [store.snapshot(v) for v in versions if v.id not in keep_ids and store.snapshot(v).exists()]
    blob_links: dict[str, int] = {}
    for v in versions:
        for e in v.files:
            blob = repo_path / "blobs" / e.etag
            if e.etag not in keep_etags and blob.exists() and blob not in plan.files:
                plan.files.append(blob)
                blob_links[e.sha256] = blob_links.get(e.sha256, 0) + 1
    still_used = _referenced(store, doomed)
    for v in versions:
        for e in v.files:
            obj = store.object_path(e.sha256)
            if e.sha256 not in still_used and obj not in plan.files and obj.exists():
                plan.freed += _object_freed(store, e.sha256, blob_links.get(e.sha256, 0))
                plan.files.append(obj)
    refs_dir = repo_path / "refs"
    removed_ids = {v.id for v in versions} - keep_ids
    for ref in refs_dir.rglob("*") if refs_dir.is_dir() else []:
        if ref.is_file() and _read(ref) in removed_ids:
            newest = remaining[-1].id if remaining and ref.name == "main" else None
            plan.refs[ref] = newest
    if not remaining:
        plan.dirs.append(repo_path)
        used = store.layout.used_path(repo)
        if used.exists():
            plan.files.append(used)
    return plan


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:  # removed meanwhile
        return None


def _stat(path: Path, follow: bool = True) -> os.stat_result | None:
    try:
        return path.stat() if follow else path.lstat()
    except OSError:  # removed meanwhile by another process
        return None


def gc_plan(store: Store, *, grace: float = GRACE) -> Plan:
    """Objects no version uses, blobs and snapshots no version of their repo uses (older than
    ``grace`` seconds, so that a pull in progress keeps what it has stored but not yet committed),
    and temporaries left by processes that are gone."""
    plan = Plan("garbage collection")
    used = _referenced(store, set()) | store.pulling()  # and what a pull of this process is storing
    now = time.time()
    links: dict[tuple[int, int], list] = {}  # inode -> [size, its links, how many of them the plan removes]

    def remove(path: Path, st: os.stat_result) -> None:
        plan.files.append(path)
        seen = links.setdefault((st.st_dev, st.st_ino), [st.st_size, st.st_nlink, 0])
        seen[2] += 1

    if store.objects.is_dir():
        for obj in store.objects.glob("*/*"):
            st = _stat(obj)
            if obj.name not in used and st and now - st.st_ctime > grace:
                remove(obj, st)
    for repo_path in sorted(store.hub.glob("models--*")) if store.hub.is_dir() else []:
        versions = read_folder(store.layout.versions_root / repo_path.name)
        ids = {v.id for v in versions}
        etags = {e.etag for v in versions for e in v.files}
        for snap in (repo_path / "snapshots").glob("*"):
            st = _stat(snap, follow=False)
            if snap.name not in ids and st and now - st.st_mtime > grace:
                plan.dirs.append(snap)
        for blob in (repo_path / "blobs").glob("*"):
            st = _stat(blob)
            if blob.name not in etags and st and now - st.st_ctime > grace:
                remove(blob, st)
    # an object and its blob are links of one inode: its bytes are freed when the plan removes every link
    plan.freed += sum(size for size, nlink, removed in links.values() if removed >= nlink)
    # the hub server's listings of commits that no version holds (asked again if a client wants one)
    for folder in store.layout.remote.glob("models--*") if store.layout.remote.is_dir() else []:
        ids = {v.id for v in read_folder(store.layout.versions_root / folder.name)}
        for listing in folder.glob("*.json"):
            st = _stat(listing)
            if listing.stem not in ids and st and now - st.st_mtime > grace:
                plan.files.append(listing)
                plan.freed += st.st_size
    # records of the tensors of safetensors objects (zoo.store.lineage) whose object is gone or goes now
    doomed = {p.name for p in plan.files if p.parent.parent == store.objects}
    for record in store.layout.tensors_path("x").parent.glob("*.json"):
        st = _stat(record)
        if st and (record.stem in doomed or not store.object_path(record.stem).exists()):
            plan.files.append(record)
            plan.freed += st.st_size
    for entry, freed in atomic.dead_temporaries(store.tmp):  # what dead processes left, folders counted whole
        (plan.dirs if entry.is_dir() and not entry.is_symlink() else plan.files).append(entry)
        plan.freed += freed
    return plan


@dataclass(frozen=True)
class Usage:
    logical: int  # what the versions add up to, as if each were a separate copy
    physical: int  # what the store's objects take on disk, once each

    @property
    def saved(self) -> int:
        return self.logical - self.physical


def usage(store: Store) -> Usage:
    versions = store.iter_versions()
    if getattr(store, "central", None) is not None:  # a version in the bucket only takes nothing here
        versions = (v for v in versions if any(store.object_path(f.sha256).exists() for f in v.files))
    logical = sum(v.total_size for v in versions)
    inodes = {}
    if store.objects.is_dir():
        for obj in store.objects.glob("*/*"):
            st = _stat(obj)
            if st:
                inodes[(st.st_dev, st.st_ino)] = st.st_size
    return Usage(logical, sum(inodes.values()))
