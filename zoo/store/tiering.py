"""The store's side of the central tier (``zoo daemon --object-store``): writes the bucket must take before a
change is visible, the bucket's records brought in, its objects fetched and checked, its removals taken.

:class:`Tiering` is a part of :class:`zoo.store.writer.Store` (its methods use the store's disk, contents,
records and ``central``, a :class:`zoo.store.central.Central` or None), kept in its own file so that each
stays one job. What is kept in the bucket, and how, is :mod:`zoo.store.central`'s.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from ..errors import IntegrityError, ObjectStoreError, ZooError
from . import records
from .manifests import FileEntry, Version

log = logging.getLogger("zoo.store")


class Tiering:
    def _to_central(self, write: Callable[[], Any], what: str,
                    outcome: str = "so no version was made (what was stored here stays until zoo gc)") -> Any:
        """A write to the bucket that a change needs: its failure is the change's (nothing made visible)."""
        try:
            return write()
        except ObjectStoreError as exc:
            raise ObjectStoreError(f"{what} could not be written to the object store, {outcome}: {exc}",
                                   code=exc.code) from None

    def _sync_central(self, repo: str | None = None, *, required: bool = False) -> int:
        """Bring the bucket's version records (of ``repo``) into the store; a bucket that cannot be reached is
        an error only when ``required`` (numbering a new version, under the name's lock: what others removed
        is dropped later, by a sync without it), else logged (what is here is served)."""
        try:
            written = self.central.sync(repo)
            if not required:
                self._drop_removed()
            return written
        except ObjectStoreError as exc:
            self.central.last_error = str(exc)
            if required:
                raise ObjectStoreError(f"the object store could not be read, so no version was made: {exc}",
                                       code=exc.code) from None
            log.warning("%s", exc)
            return 0

    def _drop_removed(self) -> None:
        """Versions another daemon removed from the bucket (``removed/`` records, matched by number and id)
        go from this store too, as ``zoo rm`` does here; one that is aliased here or loaded by a live process
        stays (logged once)."""
        from . import marks
        from .maintenance import removal_plan

        while self.central.gone:
            folder, number, rid = self.central.gone.pop()
            try:
                version = Version.read(self.layout.versions_root / folder / f"v{number:04d}.json")
                if version.id != rid:
                    continue
                with self.disk.name_lock(version.repo):
                    aliased = marks.read(self.layout, version.repo).aliases_of(version.name)
                    if aliased or records.leased(self, version):
                        self.central.kept.add((folder, number, rid))
                        log.warning("%s %s was removed from %s; it stays here, %s (zoo rm it here once it is not)",
                                    version.repo, version.name, self.central.url,
                                    f"aliased as {', '.join(aliased)}" if aliased else "loaded by a live process")
                        continue
                    removal_plan(self, version.repo, [version]).execute()
                    self.tagging.removed(version.repo, [version], "removed")
            except (OSError, ValueError, KeyError, TypeError, ZooError) as exc:
                log.warning("%s v%d: removed from the bucket, but not here: %s", folder, number, exc)

    def _from_central(self, entry: FileEntry, on_bytes: Callable[[int], None] | None = None) -> str | None:
        """Fetch ``entry``'s object from the bucket (checked against its sha256) into the store. None when it
        is stored now; else what is wrong."""
        staged = self.disk.tmp_name(entry.sha256, ".bucket")
        try:
            if not self.central.fetch(entry.sha256, entry.size, staged, on_bytes):
                return "missing from the store and from the object store"
        except (ObjectStoreError, IntegrityError) as exc:
            return str(exc)
        self.contents.add_object(staged, entry.sha256)
        return None

