"""The registry in Python: aliases, labels, history and search over the store (``zoo.tag``, ``zoo.search``...).

Names are written as for ``zoo.load``: ``my-bert`` (a saved name), ``org/name`` (a hub repository in the
store), either with ``@REV`` (``@v3``, ``@prod``, a commit id). Changes go through the store's one writer (the
daemon, when one serves the store), which records them in the name's history and announces them to the
plugins' event hooks (:mod:`zoo.store.events`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .errors import UnknownNameError

if TYPE_CHECKING:
    from .store.events import Event
    from .store.manifests import Version
    from .store.marks import Alias
    from .store.writer import Store


def target(name: str, store: Any) -> tuple[str, str | None]:
    """``(repo, revision)`` that ``name`` means in ``store`` (no request, no write)."""
    from . import resolve
    from .api import default_registry

    parsed = resolve.parse(name, registry=default_registry(), store=store)
    if parsed.kind == "dir":
        raise UnknownNameError(f"{name!r} is a directory, not a name; zoo import DIR --name NAME stores it")
    return parsed.repo, parsed.revision


def _store(store: Any) -> Any:
    from .api import default_store

    return store or default_store()


def tag(name: str, alias: str, version: str | None = None, *, store: "Store | None" = None) -> "Alias":
    """Point ``alias`` at a version of ``name`` (``version``, or the one ``name@REV`` names, or the newest),
    moving it atomically if it exists: a load meanwhile gets the old or the new version, never a mix."""
    store = _store(store)
    repo, revision = target(name, store)
    return store.tag(repo, alias, version or revision)


def untag(name: str, alias: str, *, store: "Store | None" = None) -> "Alias":
    """Remove ``alias`` of ``name``; returns what it pointed at."""
    store = _store(store)
    repo, _ = target(name, store)
    return store.untag(repo, alias)


def label(name: str, labels: Mapping[str, Any] | None = None, *, remove: Iterable[str] = (),
          store: "Store | None" = None) -> "Version":
    """Set ``labels`` (``{"task": "ner"}``) and remove the keys ``remove`` on ``name`` (``name@REV``, or the
    newest version)."""
    store = _store(store)
    repo, revision = target(name, store)
    return store.label(repo, revision, dict(labels or {}), list(remove))


def history(name: str, *, store: "Store | None" = None) -> "list[Event]":
    """What happened to ``name``, oldest first: versions created, aliases moved, labels changed, versions
    removed or evicted, each with who and when."""
    store = _store(store)
    repo, _ = target(name, store)
    return store.history(repo).events


def lineage(name: str, *, store: "Store | None" = None) -> dict[str, Any]:
    """The lineage of ``name`` (``name@REV``, or its newest version): ``bases`` above it (nearest first: each
    version's recorded base, followed upward; a base the store does not hold has ``stored: False``), ``derived``
    below it (every version saved or imported from a version of ``name``, and theirs, each with ``aliases`` and
    ``from``), and on each stored node ``shares``: what it shares with its base (tensors whose bytes are
    identical, by sha256 of each tensor's bytes; a file of both is shared whole). As ``zoo lineage --json``."""
    from .store import lineage as lineages

    store = _store(store)
    repo, revision = target(name, store)
    return lineages.tree(store, repo, revision)
