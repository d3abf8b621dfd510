"""The one way into the store for writes: what a cache writer does, whoever carries it out.

In direct mode the process itself is the writer (:class:`zoo.store.writer.Store` implements this); with
a daemon serving the store, a client forwards the same calls over its socket and the daemon carries
them out as the store's one writer. Reading (``find``, ``versions``, ``snapshot``, ``missing_files``)
is not part of it: any process reads the store directly, with no lock and no request.

Every call takes its own locks; callers (``zoo.api``, the CLI) never take store locks. Arguments and
results are plain data (names, revisions, paths; :class:`~zoo.store.manifests.Version` and
:class:`~zoo.store.maintenance.Plan` are frozen records), so each call maps onto one request and one
reply.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Protocol

from .manifests import FileEntry, Version


class Fetcher(Protocol):
    """Where a store's pulls come from, passed in as httpx passes a transport: the module
    :mod:`zoo.store.hub` (a hub over HTTP) by default, an in-process fake in the store's own tests.
    Errors are zoo's (:class:`~zoo.errors.RemoteError` and its kinds)."""

    def endpoint(self) -> str:
        """Where the files come from, as recorded in a version's source (``hub:ENDPOINT``)."""

    def fetch_revision(self, repo: str, revision: str) -> Any:
        """The commit ``revision`` of ``repo`` is now, and its files (a
        :class:`~zoo.store.hub.RemoteRevision` of :class:`~zoo.store.hub.RemoteFile`)."""

    def download(self, repo: str, commit: str, file: Any, dest: Path, on_bytes: Callable[[int], None]) -> None:
        """The bytes of ``file`` into ``dest``, resuming from its current size; the store checks the digest."""


class CacheWriter(Protocol):
    def ensure(self, repo: str, revision: str | None = None) -> Version:
        """Make ``repo@revision`` present and intact (pull it, repair it) and return its version."""

    def pull(self, repo: str, revision: str = "main", *, all_files: bool = False) -> Version:
        """Ask the hub what ``revision`` is now and store that commit."""

    def import_dir(self, directory: str | os.PathLike[str], name: str, *, link: bool = False,
                   source: str | None = None, owned: bool = False, description: str | None = None,
                   labels: dict[str, str] | None = None, base: dict[str, Any] | None = None) -> Version:
        """A saved directory as a new version of ``local/<name>`` (``zoo import``, ``zoo.save``)."""

    def staging(self, stem: str) -> Any:
        """A context manager giving a private folder to write a model into before ``import_dir(...,
        owned=True)``; the writer can read it, and it is removed afterwards."""

    def remove(self, repo: str, revision: str | None = None, *, dry_run: bool = False) -> Any:
        """Remove a version, or every version of ``repo``; returns the plan (bytes freed)."""

    def gc(self, *, dry_run: bool = False, grace: float | None = None) -> Any:
        """Delete what no version uses and dead processes' temporaries; returns the plan."""

    def tag(self, repo: str, alias: str, revision: str | None = None) -> Any:
        """Point ``alias`` at ``repo@revision`` (the newest without one), moving it if it exists."""

    def untag(self, repo: str, alias: str) -> Any:
        """Remove ``alias`` of ``repo``."""

    def label(self, repo: str, revision: str | None, labels: dict[str, str], remove: Any = ()) -> Version:
        """Set ``labels`` and remove the keys ``remove`` on ``repo@revision``."""

    def verify(self, repo: str | None = None) -> list[tuple[Version, FileEntry, str]]:
        """Re-hash and repair; returns the problems that remain."""


class WritePolicy(Protocol):
    """What the one writer of a shared store (the daemon) decides for the store, given to it when it is made
    (``Store(home, policy=...)``): room under a quota before a write, and where progress is shown."""

    def make_room(self, incoming: int, what: str, repo: str) -> None:
        """Before ``incoming`` bytes are written for ``repo``: evict to fit, or raise zoo's QuotaError /
        StoreFullError."""

    def bar(self, total: int, desc: str) -> Any:
        """A progress bar (a context manager with ``update(n)``) for long work."""

    def may_change(self, owner: Any, doing: str) -> None:
        """Before an alias is moved or removed, or a version removed: raise zoo's ProtectedError unless the
        actor of this call (:meth:`zoo.store.events.Actor.current`) may change what ``owner`` (an
        :class:`~zoo.store.events.Actor`, None when unknown) made."""

