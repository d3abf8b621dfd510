"""The writer's registry half: aliases moved, labels changed, versions removed, each recorded and announced.

Every change here happens under the name's lock, is written atomically (:mod:`zoo.store.marks`), then
recorded (:meth:`zoo.store.writer.Store.record`: the name's history, then the hooks). Who may change what is
the policy's to say: in direct mode whoever may write the store may; through the daemon, an alias is moved or
removed, and a version removed, only by the user who made it, root, or a member of the daemon's admin group
(:meth:`zoo.store.protocol.WritePolicy.may_change`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Iterable

from ..errors import CheckpointNotFoundError, IntegrityError, InvalidArgumentError, ProtectedError
from ..names import display_name, is_local
from . import marks as marking
from .events import Actor, AliasMoved, LabelsChanged, VersionRemoved, now
from .manifests import Version
from .records import _repo

if TYPE_CHECKING:
    from .writer import Store

log = logging.getLogger("zoo.store")


class Tagging:
    def __init__(self, store: "Store") -> None:
        self.store = store

    def _version(self, repo: str, revision: str | None, doing: str) -> Version:
        version = self.store.find(repo, revision)
        if version is None:
            have = ", ".join(v.name for v in self.store.versions(repo)) or "none"
            spelled = display_name(repo) + (f"@{revision}" if revision else "")
            raise CheckpointNotFoundError(f"cannot {doing} {spelled}: no such version in {self.store.home} "
                                          f"(versions: {have}); zoo versions {display_name(repo)} lists them")
        return version

    def _authorise(self, owner: Actor | None, doing: str) -> None:
        policy = self.store.policy
        if policy is not None and hasattr(policy, "may_change"):
            policy.may_change(owner, doing)

    def tag(self, name: str, alias: str, revision: str | None = None) -> marking.Alias:
        store = self.store
        marking.check_alias(alias)  # first: only a word is ever looked up as a ref
        repo = _repo(store, name)
        if not is_local(repo):
            marking.check_alias(alias, upstream_ref=store.upstream_ref(repo, alias))
        store.disk.prepare()
        with store.disk.name_lock(repo):
            version = self._version(repo, revision, f"tag {alias!r} on")
            marks = marking.read(store.layout, repo, strict=True)
            old = marks.aliases.get(alias)
            if old is not None and old.version == version.name and old.id == version.id:
                return old  # already there: nothing changes, nothing is recorded
            if old is not None:
                self._authorise(old.owner, f"move the alias {alias!r} of {display_name(repo)} (set by {old.owner.user})")
            who, when = Actor.current(), now()
            marks = marking.moved(marks, alias, version.name, version.id, who, when)
            marking.write(store.layout, store.disk, repo, marks)
            # under the lock: two moves of one alias reach the history and the hooks in the order they happened
            store.record(AliasMoved(repo, version.name, version.id, who, when, alias=alias,
                                    previous=old.version if old else None))
        return marks.aliases[alias]

    def untag(self, name: str, alias: str) -> marking.Alias:
        store = self.store
        repo = _repo(store, name)
        store.disk.prepare()
        with store.disk.name_lock(repo):
            marks = marking.read(store.layout, repo, strict=True)
            old = marks.aliases.get(alias)
            if old is None:
                have = ", ".join(sorted(marks.aliases)) or "none"
                raise CheckpointNotFoundError(f"{display_name(repo)} has no alias {alias!r} (its aliases: {have})")
            self._authorise(old.owner, f"remove the alias {alias!r} of {display_name(repo)} (set by {old.owner.user})")
            marking.write(store.layout, store.disk, repo, marking.without(marks, alias))
            store.record(AliasMoved(repo, None, None, Actor.current(), now(), alias=alias, previous=old.version))
        return old

    def label(self, name: str, revision: str | None, labels: dict[str, str], remove: list[str]) -> Version:
        store = self.store
        repo = _repo(store, name)
        labels = marking.check_labels(labels)
        for key in remove:
            marking.check_label_key(key)
        if not labels and not remove:
            raise InvalidArgumentError("no labels given: write key=value to set one, --rm KEY to remove one")
        store.disk.prepare()
        with store.disk.name_lock(repo):
            version = self._version(repo, revision, "label")
            self.label_locked(version, labels, remove)
        return version

    def label_locked(self, version: Version, labels: dict[str, str], remove: list[str]) -> None:
        """Under the name's lock: set ``labels`` and remove the keys ``remove`` on ``version``."""
        store = self.store
        marks = marking.read(store.layout, version.repo, strict=True)
        current = marks.labels.get(version.name, {})
        removed = tuple(k for k in remove if k in current)
        changed = {k: v for k, v in labels.items() if current.get(k) != v}
        if not changed and not removed:
            return
        marking.write(store.layout, store.disk, version.repo, marking.relabelled(marks, version.name, labels, remove))
        store.record(LabelsChanged(version.repo, version.name, version.id, Actor.current(), now(),
                                   labels=changed, removed=removed))

    def check_removal(self, repo: str, versions: Iterable[Version]) -> None:
        """Under the name's lock, before ``versions`` are removed: none may be aliased (move or remove the
        alias first), and the policy may refuse (through the daemon: only their maker, root or an admin)."""
        marks = marking.read(self.store.layout, repo, strict=True)  # unreadable: no removal decided blind
        for version in versions:
            aliased = marks.aliases_of(version.name)
            if aliased:
                raise ProtectedError(
                    f"{display_name(repo)}@{version.name} is aliased as {', '.join(aliased)}; nothing was removed. "
                    f"Move the alias to another version (zoo tag {display_name(repo)}@vN {aliased[0]}) or remove it "
                    f"(zoo untag {display_name(repo)} {aliased[0]}) first"
                )
            owner = Actor(version.uid, version.user or str(version.uid), version.host or "") \
                if version.uid is not None else None
            self._authorise(owner, f"remove {display_name(repo)}@{version.name}"
                            + (f" (made by {owner.user})" if owner else ""))

    def removed(self, repo: str, versions: Iterable[Version], reason: str) -> None:
        """Under the name's lock, after ``versions`` were removed (``zoo rm``) or evicted (the quota): their
        labels go (a later version may take the number), and each removal is recorded."""
        versions = list(versions)
        store = self.store
        try:
            marks = marking.read(store.layout, repo, strict=True)
        except IntegrityError:
            marks = marking.Marks()  # nothing to clear that can be read; the removal is recorded all the same
        gone = {v.name for v in versions}
        if any(name in marks.labels for name in gone) and store.layout.marks_path(repo).exists():
            kept = {k: v for k, v in marks.labels.items() if k not in gone}
            marking.write(store.layout, store.disk, repo, marking.Marks(marks.aliases, kept))
        who, when = Actor.current(), now()
        for version in versions:
            store.record(VersionRemoved(repo, version.name, version.id, who, when, reason=reason))

    def created(self, version: Version) -> None:
        """Under the name's lock, a new version: labels left under its number by a version that went without
        ``zoo rm`` (a manifest removed by hand) are not its labels."""
        store = self.store
        try:
            marks = marking.read(store.layout, version.repo, strict=True)
        except IntegrityError:
            return
        if version.name in marks.labels:
            kept = {k: v for k, v in marks.labels.items() if k != version.name}
            marking.write(store.layout, store.disk, version.repo, marking.Marks(marks.aliases, kept))

    def shadowed(self, repo: str, refs: Iterable[str]) -> None:
        """Under the name's lock, after a pull wrote the upstream's ``refs`` of hub repository ``repo``: an alias of
        the same name would be shadowed by the upstream's ref (which a revision means first), so it goes, and the
        history says so."""
        store = self.store
        try:
            marks = marking.read(store.layout, repo, strict=True)
        except IntegrityError:
            return
        clash = {alias: marks.aliases[alias] for alias in sorted(set(refs) & set(marks.aliases))}
        if not clash:
            return
        for alias in clash:
            marks = marking.without(marks, alias)
        marking.write(store.layout, store.disk, repo, marks)
        for alias, old in clash.items():
            log.warning("%s: the upstream has a ref %r now; the alias %r (-> %s) is removed, as an alias never "
                        "shadows an upstream's ref", repo, alias, alias, old.version)
            store.record(AliasMoved(repo, None, None, Actor.current(), now(), alias=alias, previous=old.version,
                                    note="shadowed by the upstream's ref of that name"))
