"""Every path by which a load reaches a content, made and repaired in one place.

A content is stored once, as ``objects/sha256/ab/ab12…`` (read-only). A load never opens the object by
that name: it opens ``hub/models--…/snapshots/<id>/<path>``, a relative symlink to the repository's
``blobs/<etag>``, which is a hard link to the object (one inode; a copy only where the kernel refuses the
link). So three paths lead to the same bytes, and this module is the only code that makes them:

- :meth:`Contents.add_object` moves verified bytes in as the object;
- :meth:`Contents.link_blob` makes a repository's blob *the object's inode*, replacing whatever else is
  there (never trusting a blob for its size);
- :meth:`Contents.build_snapshot` makes the snapshot's links (a new snapshot renamed into place whole);
- :meth:`Contents.check_object` re-hashes an object and, when it is damaged, quarantines it and unlinks
  every blob that is that same damaged inode, so that no path leads to it any more; a missing object is
  restored from an intact copy.

After a repair through these, every path a load can open leads to verified bytes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Iterable

from .. import atomic
from .disk import Disk
from .layout import Layout
from .manifests import FileEntry

CHUNK = 1 << 22


def hash_file(path: Path, on_bytes: Callable[[int], None] | None = None, *,
              git_sha1: bool = False) -> tuple[str, str | None, int]:
    """sha256 (and, when asked, the git blob sha1 the hub uses as ETag of regular files) in one pass."""
    size = path.stat().st_size
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(f"blob {size}\0".encode()) if git_sha1 else None
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            sha256.update(view[:n])
            if sha1 is not None:
                sha1.update(view[:n])
            if on_bytes:
                on_bytes(n)
    return sha256.hexdigest(), sha1.hexdigest() if sha1 else None, size


def copy_hashing(src: Path, dest: Path, on_bytes: Callable[[int], None] | None = None) -> tuple[str, int]:
    """Copy ``src`` to the new file ``dest`` in the kernel (``copy_file_range``: no trip through Python,
    about 3x faster than reading and writing here), then hash the copy, which is ours and cannot change
    meanwhile, so the digest is always of the stored bytes. Returns (sha256, size)."""
    with open(src, "rb") as fin, open(dest, "xb") as fout:
        size = os.fstat(fin.fileno()).st_size
        done = 0
        try:
            while done < size:
                n = os.copy_file_range(fin.fileno(), fout.fileno(), size - done)
                if n == 0:
                    break  # the source shrank meanwhile: the hash below is of what was copied
                done += n
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP) or done:
                raise
            shutil.copyfileobj(fin, fout, CHUNK)
    sha256, _, size = hash_file(dest, on_bytes)
    return sha256, size


def link_text(entry: FileEntry) -> str:
    """The relative target of a snapshot's link to the blob of ``entry``."""
    return "../" * (entry.path.count("/") + 2) + f"blobs/{entry.etag}"


class Contents:
    """The objects, blobs and snapshot links of one store."""

    def __init__(self, layout: Layout, disk: Disk) -> None:
        self.layout = layout
        self.disk = disk

    def add_object(self, staged: Path, sha256: str) -> Path:
        """Move the temporary ``staged`` (ours, already hashed) in as the stored content ``sha256``,
        read-only. Content already stored is not written again, once it is checked: with good bytes in
        hand, a stored copy that rotted unseen (its stat unchanged) is never kept in their place; it goes
        to quarantine and ours becomes the object."""
        dest = self.layout.object_path(sha256)
        if dest.exists():
            try:
                intact = hash_file(dest)[0] == sha256
            except OSError:
                intact = False
            if intact:
                staged.unlink()
                return dest
            damaged = dest.stat()
            self.disk.mkdir(self.layout.quarantine)
            with contextlib.suppress(FileNotFoundError):
                os.replace(dest, self.layout.quarantine / f"{sha256}.{int(time.time())}")
            self._store(staged, dest)
            for blob in self._blobs_of(damaged):  # every blob that was its inode now leads to ours
                with contextlib.suppress(OSError):
                    relinked = self.disk.tmp_name(sha256, ".blob")
                    atomic.link_or_copy(dest, relinked)
                    os.replace(relinked, blob)
            return dest
        self._store(staged, dest)
        return dest

    def _blobs_of(self, st: os.stat_result) -> list[Path]:
        """Every repository's blob that is the inode ``st``, whatever its name: a content is ``blobs/<sha256>``
        in one repository and ``blobs/<git sha1>`` in another (the hub's etag of a small file). Only after
        damage is found: one ``stat`` per blob of the store."""
        out = []
        for blob in self.layout.hub.glob("models--*/blobs/*"):
            with contextlib.suppress(OSError):
                if os.path.samestat(blob.stat(), st):
                    out.append(blob)
        return out

    def _store(self, staged: Path, dest: Path) -> None:
        self.disk.mkdir(dest.parent)
        self.disk.seal(staged)
        atomic.link_exclusive(staged, dest)  # if another writer got there first, its copy stays
        staged.unlink()

    def link_blob(self, repo: str, entry: FileEntry) -> Path:
        """Make ``repo``'s ``blobs/<etag>`` (the path every snapshot link of the content leads to) the
        stored object itself. A blob that is another inode (the damaged one a repair set aside, a file put
        there by hand) is replaced, never trusted for its size: after this, the path loads open is the
        verified object."""
        blob = self.layout.blob_path(repo, entry.etag)
        obj = self.layout.object_path(entry.sha256)
        with contextlib.suppress(OSError):
            if os.path.samestat(blob.stat(), obj.stat()):
                return blob
        self.disk.mkdir(blob.parent)
        staged = self.disk.tmp_name(entry.etag, ".blob")
        if not atomic.link_or_copy(obj, staged):
            self.disk.seal(staged)
        os.replace(staged, blob)
        return blob

    def build_snapshot(self, repo: str, snap_id: str, entries: Iterable[FileEntry]) -> Path:
        """Make ``snapshots/<snap_id>`` hold a symlink per entry, to a blob that is the object. A new
        snapshot is built in tmp/ and renamed into place whole; an existing one gets each missing or
        wrong link replaced with one atomic rename."""
        entries = list(entries)
        final = self.layout.snapshot_path(repo, snap_id)
        self.disk.mkdir(final.parent)
        self.disk.mkdir(self.layout.repo_path(repo) / "refs")
        for entry in entries:
            self.link_blob(repo, entry)
        if not final.is_dir():
            staged = self.disk.tmp_name(f"snapshot-{snap_id[:12]}", "")
            try:
                for entry in entries:
                    (staged / entry.path).parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(link_text(entry), staged / entry.path)
                for folder in [staged, *(p for p in staged.rglob("*") if p.is_dir() and not p.is_symlink())]:
                    os.chmod(folder, self.disk.modes()[1])
                os.rename(staged, final)
                return final
            except OSError:  # another writer renamed its copy in first (checked below), or a bad entry (raised below)
                shutil.rmtree(staged, ignore_errors=True)
        for entry in entries:
            target = final / entry.path
            if not (target.is_symlink() and os.readlink(target) == link_text(entry)):
                self.disk.mkdir(target.parent)
                atomic.symlink(link_text(entry), target)
        return final

    def copies(self, entry: FileEntry) -> list[Path]:
        """Other names that may hold the content of ``entry``: its blobs in every repo, named by its etag or
        by its sha256 (one content is both, in repositories of different kinds)."""
        names = dict.fromkeys((entry.etag, entry.sha256))
        return [repo_path / "blobs" / name for repo_path in self.layout.hub.glob("models--*") for name in names]

    def check_object(self, entry: FileEntry, on_bytes: Callable[[int], None] = lambda n: None) -> str | None:
        """None if the stored object of ``entry`` is intact (restored from an intact copy if it was missing
        or damaged); else what is wrong. A damaged object is moved to quarantine/, never deleted, and every
        blob that is its inode is unlinked: no path leads to the damaged bytes any more."""
        obj = self.layout.object_path(entry.sha256)
        copies = self.copies(entry)
        if obj.exists():
            sha256, _, size = hash_file(obj, on_bytes)
            if sha256 == entry.sha256 and size == entry.size:
                return None
            damaged = obj.stat()
            self.disk.mkdir(self.layout.quarantine)
            os.replace(obj, self.layout.quarantine / f"{entry.sha256}.{int(time.time())}")
            problem = f"content changed (size {size}, sha256 {sha256[:12]}…)"
            for blob in self._blobs_of(damaged):  # no path may lead to the damaged bytes any more
                with contextlib.suppress(OSError):
                    blob.unlink()
        else:
            on_bytes(entry.size)
            problem = "missing from the store"
        for copy in copies:  # the last good copy of a content is never lost: it becomes the object again
            try:
                if hash_file(copy)[0] != entry.sha256:
                    continue
                self.disk.mkdir(obj.parent)
                staged = self.disk.tmp_name(entry.sha256, ".restore")
                atomic.link_or_copy(copy, staged)
                self.add_object(staged, entry.sha256)
                return None
            except OSError:
                continue
        return problem

    def unlink_blobs(self, entry: FileEntry) -> None:
        """Remove every repository's blob of ``entry`` (they hold bytes that failed their digest)."""
        for blob in self.copies(entry):
            if blob.exists() or blob.is_symlink():
                blob.unlink()
