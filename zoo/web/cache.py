"""What the pages read, kept while the store has not changed, so a page of a store of 10,000 versions does not
read 10,000 manifests per request.

Manifests and marks files are replaced atomically (a rename into their folder) and a name's last use is a
file's mtime, so a change to any of them changes an mtime that a ``stat`` sees: a name's versions folder, its
marks file, its entry in ``used/``. :class:`Cached` keeps

- each name's versions, keyed by the mtime of its versions folder (one ``stat`` per name read);
- each search's row of each name (:func:`zoo.store.search.search`), keyed by the mtimes of that name's versions
  folder, marks file and use record (three ``scandir`` and a ``stat`` per name): after a change, only the
  names that changed are read again.

A change within the last two seconds is never cached (a file system's clock may be coarse: two changes in one
tick would share an mtime), so what a page shows is at most one request behind a write, never stale after it.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from ..store.layout import repo_folder
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
        self._rows: dict[Query, dict[str, tuple[tuple, Row | None]]] = {}  # query -> folder -> (stamp, row)

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
        """:func:`zoo.store.search.search`, reading again only the names whose versions folder, marks file or
        use record changed since this query was last answered."""
        stamps = self._stamps()
        if stamps is None:
            return search(self, q)
        known = self._rows.get(q) or {}
        changed = [f for f, st in stamps.items() if f not in known or known[f][0] != st]
        fresh = {repo_folder(r.repo): r for r in search(self, q, folders=changed)} if changed else {}
        recent = (time.time() - RACY) * 1e9
        kept: dict[str, tuple[tuple, Row | None]] = {}
        rows = []
        for folder, st in sorted(stamps.items()):
            row = fresh.get(folder) if folder in fresh or folder not in known or known[folder][0] != st \
                else known[folder][1]
            if max(st) <= recent:  # a change within RACY seconds: read again next time
                kept[folder] = (st, row)
            if row is not None:
                rows.append(row)
        with self._lock:
            if q not in self._rows and len(self._rows) >= MAX_QUERIES:
                self._rows.pop(next(iter(self._rows)))
            self._rows[q] = kept
        return rows

    def _stamps(self) -> dict[str, tuple[int, int, int]] | None:
        """Each name's versions folder -> the mtimes of that folder, its marks file and its use record (0: none)."""
        layout = self.layout

        def mtimes(root: Any, suffix: str = "") -> dict[str, int]:
            try:
                with os.scandir(root) as entries:
                    return {e.name[:len(e.name) - len(suffix)]: e.stat(follow_symlinks=False).st_mtime_ns
                            for e in entries if e.name.startswith("models--") and e.name.endswith(suffix)}
            except FileNotFoundError:
                return {}

        try:
            folders, marks, used = mtimes(layout.versions_root), mtimes(layout.marks_root, ".json"), \
                mtimes(layout.used_root)
        except OSError:
            return None
        return {f: (m, marks.get(f, 0), used.get(f, 0)) for f, m in folders.items()}


def _repo_of(folder_name: str) -> str | None:
    parts = folder_name.split("--")
    return "/".join(parts[1:]) if len(parts) in (2, 3) and parts[0] == "models" else None
