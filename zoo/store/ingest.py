"""Bringing a user's saved folder into the store (``zoo import``, ``zoo.save``, drop folders).

What an import promises: the user's files are never changed (copied, hashed in the same pass; a
copy-on-write clone where the file system offers one), unless ``--link`` was asked (then hard-linked, and
read-only as store objects are). What a load would refuse is refused before anything is stored, by the
check loads make (:func:`zoo.model.checkpoint.check_folder`). A source file whose stat is unchanged since an
earlier import is neither read nor written again (``imported/``).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Callable

from ..errors import CorruptCheckpointError
from .. import atomic
from .content import Contents, copy_hashing, hash_file
from .disk import Disk
from .layout import Layout


def import_source(directory: str | os.PathLike[str], *, contained: bool = False
                  ) -> tuple[Path, list[tuple[str, Path, int]]]:
    """The resolved folder an import reads, and its files. What a load would refuse is refused here,
    before anything is stored, by the one check loads use (:func:`zoo.model.checkpoint.check_folder`): a
    missing folder, no or a bad config.json, no weights, a damaged or incomplete weights file."""
    from ..model.checkpoint import check_folder

    directory = Path(directory).expanduser().resolve()
    check_folder(directory)
    return directory, import_files(directory, contained=contained)


def import_files(directory: Path, *, contained: bool = False) -> list[tuple[str, Path, int]]:
    """(path in the repo, real file, size) for every file to import: symlinks read through, hidden
    files and folders skipped, anything that is not a regular file refused by name. ``contained``
    (drop folders, which anyone may write): a symlink that leads outside ``directory`` is refused."""
    out = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if any(part.startswith(".") for part in rel.parts) or (path.is_dir() and not path.is_symlink()):
            continue
        try:
            real = path.resolve(strict=True)
            st = real.stat()
        except (OSError, RuntimeError) as exc:
            raise CorruptCheckpointError(
                f"{path} cannot be read ({getattr(exc, 'strerror', None) or exc}): a dangling symlink or a file "
                "removed meanwhile. Fix or remove it, then import again; nothing was stored"
            ) from None
        if contained and not real.is_relative_to(directory):
            raise CorruptCheckpointError(f"{path} is a symlink to {real}, outside {directory}; refused")
        if real.is_dir():
            continue
        if not real.is_file():
            raise CorruptCheckpointError(f"{path} is not a regular file (a FIFO, socket or device); refused")
        out.append((rel.as_posix(), real, st.st_size))
    return out


def _fingerprint(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def _object_stamp(st: os.stat_result) -> str:
    """What a load's stat check compares for a stored object (a new hard link changes its ctime, not this)."""
    return f"{st.st_size}:{st.st_mtime_ns}"


class Importer:
    """Stores one source file's content at a time (the store's writer commits the version)."""

    def __init__(self, layout: Layout, disk: Disk, contents: Contents) -> None:
        self.layout = layout
        self.disk = disk
        self.contents = contents

    def ingest(self, path: Path, *, link: bool, owned: bool, on_bytes: Callable[[int], None]) -> str:
        """Store one file's content; returns its sha256. ``owned``: zoo's own staging file, moved in."""
        st = path.stat()
        known = self._imported_digest(st)
        if known:
            on_bytes(st.st_size)  # unchanged since an earlier import, and so is the object: nothing read again
            return known
        if owned or link:
            sha256, _, _ = hash_file(path, on_bytes)
            if owned:
                self.contents.add_object(path, sha256)
            else:  # a stored copy is checked before it is kept in place of these good bytes (add_object)
                staged = self.disk.tmp_name(sha256, ".link")
                atomic.link_or_copy(path, staged)
                self.contents.add_object(staged, sha256)
        else:
            staged = self.disk.tmp_name("import", ".copy")
            try:
                if atomic.clone(path, staged):  # copy-on-write: the user's file and ours share blocks
                    sha256, _, _ = hash_file(staged, on_bytes)
                else:
                    sha256, _ = copy_hashing(path, staged, on_bytes)
            except BaseException:
                staged.unlink(missing_ok=True)
                raise
            self.contents.add_object(staged, sha256)
        if not owned:
            self._remember(path.stat(), sha256)
        return sha256

    def _imported_digest(self, st: os.stat_result) -> str | None:
        """The content of a source file imported before, if neither it nor the stored object changed since
        (a stored object whose stat changed may have rotted: it is checked again, not reused unseen)."""
        try:
            data = json.loads((self.layout.imported / f"{st.st_dev}-{st.st_ino}.json").read_text())
            sha256 = data.get("sha256")
            obj = self.layout.object_path(sha256).stat() if isinstance(sha256, str) else None
        except (OSError, ValueError, TypeError):
            return None
        if obj is None or data.get("stat") != _fingerprint(st) or data.get("object") != _object_stamp(obj):
            return None
        return sha256

    def _remember(self, st: os.stat_result, sha256: str) -> None:
        path = self.layout.imported / f"{st.st_dev}-{st.st_ino}.json"
        with contextlib.suppress(OSError):
            obj = self.layout.object_path(sha256).stat()
            self.disk.write_text(path, json.dumps({"stat": _fingerprint(st), "sha256": sha256,
                                                   "object": _object_stamp(obj)}))
