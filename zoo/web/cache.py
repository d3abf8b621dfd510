"""What the pages read, kept while the store has not changed, so a page of a store of 10,000 versions does not
read 10,000 manifests per request.

Manifests and marks files are replaced atomically (a rename into their folder) and a name's last use is a
file's mtime, so a change to any of them changes an mtime that a ``stat`` sees: a name's versions folder, its
marks file, its entry in ``used/``. :class:`Cached` keeps

- each name's versions, keyed by the mtime of its versions folder (one ``stat`` per name read);
- each search's rows (:func:`zoo.store.search.search`), keyed by the mtimes of every versions folder, marks
  file and use record (one ``scandir`` and a ``stat`` per name).

A change within the last two seconds is never cached (a file system's clock may be coarse: two changes in one
tick would share an mtime), so what a page shows is at most one request behind a write, never stale after it.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from ..store.manifests import Version
from ..store.reader import StoreReader
from ..store.search import Query, Row, search

RACY = 2.0  # seconds: an mtime this recent is not trusted as a key
MAX_QUERIES = 64


class Cached(StoreReader):
    def __init__(self, home: Any) -> None:
        super().__init__(home)
        self._lock = threading.Lock()
        self._folders: dict[str, tuple[int, list[Version]]] = {}
        self._rows: dict[Query, tuple[tuple, list[Row]]] = {}

    def versions(self, repo: str) -> list[Version]:
        folder = self.layout.versions_folder(repo)
        try:
            mtime = os.stat(folder).st_mtime_ns
        except OSError:
            return super().versions(repo)
        hit = self._folders.get(str(folder))
        if hit is not None and hit[0] == mtime:
            return list(hit[1])
        found = super().versions(repo)
        if time.time() - mtime / 1e9 > RACY:
            with self._lock:
                self._folders[str(folder)] = (mtime, found)
        return list(found)

    def repos(self) -> list[str]:
        self.disk.check_readable()
        try:
            names = sorted(e.name for e in os.scandir(self.layout.versions_root) if e.name.startswith("models--"))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            hit = self._folders.get(str(self.layout.versions_root / name))
            versions = hit[1] if hit is not None else None
            repo = versions[-1].repo if versions else _repo_of(name)
            if repo is not None and self.versions(repo):
                out.append(repo)
        return out

    def search(self, q: Query) -> list[Row]:
        """:func:`zoo.store.search.search`, answered again from memory while no name changed."""
        key = self._fingerprint()
        hit = self._rows.get(q)
        if key is not None and hit is not None and hit[0] == key:
            return hit[1]
        rows = search(self, q)
        if key is not None:
            with self._lock:
                if len(self._rows) >= MAX_QUERIES:
                    self._rows.pop(next(iter(self._rows)))
                self._rows[q] = (key, rows)
        return rows

    def _fingerprint(self) -> tuple | None:
        """The mtimes of every versions folder, marks file and use record; None when one is too recent to trust."""
        layout = self.layout
        limit = (time.time() - RACY) * 1e9
        parts = []
        for root in (layout.versions_root, layout.marks_root, layout.used_root):
            try:
                with os.scandir(root) as entries:
                    stamps = tuple(sorted((e.name, e.stat(follow_symlinks=False).st_mtime_ns) for e in entries))
            except FileNotFoundError:
                stamps = ()
            except OSError:
                return None
            if any(m > limit for _, m in stamps):
                return None
            parts.append(stamps)
        return tuple(parts)


def _repo_of(folder_name: str) -> str | None:
    parts = folder_name.split("--")
    return "/".join(parts[1:]) if len(parts) in (2, 3) and parts[0] == "models" else None
