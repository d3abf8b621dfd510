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
    from .store.search import Row as SearchRow
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


def search(*, model_type: str | None = None, labels: "Mapping[str, Any] | Iterable[str] | None" = None,
           alias: str | None = None, base: str | None = None, since: Any = None, user: "str | int | None" = None,
           store: "Store | None" = None) -> "list[SearchRow]":
    """The names in the store with a version that matches every filter given, one row each (a frozen
    :class:`zoo.store.search.Row`): the newest matching version, how many match, its size, model type, labels,
    who made it, its base, and the name's aliases. ``zoo ls`` with the same filters shows the same rows
    (``zoo ls --json`` prints ``row.as_json()`` of each).

    ``model_type="bert"``; ``labels={"task": "ner"}`` (every pair must match); ``alias="prod"`` (the version it
    points at); ``base="my-bert"`` / ``"org/name"`` / ``"my-bert@v2"`` (versions saved or imported from it);
    ``since="2026-12-01"`` (an ISO date or datetime, local time unless it has an offset; a ``datetime``; or
    ``"7d"``); ``user="alice"`` or a uid (who made the version). Reads only: no locks, no writes."""
    from .store import search as found

    store = _store(store)
    extra = []
    if isinstance(base, str) and "/" not in base and ":" not in base:
        from .api import default_registry

        row = default_registry().checkpoint(base.partition("@")[0])  # a plugin's short name for a hub repository
        if row is not None:
            extra.append(row.item.repo)
    q = found.query(model_type=model_type, labels=labels, alias=alias, base=base, base_repos=extra, since=since,
                    user=user)
    return found.search(store, q)
