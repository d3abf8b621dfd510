"""The store: content-addressed files, immutable versions, readable as a Hugging Face hub cache.

The layout is drawn in :mod:`zoo.store.layout`. :class:`Store` reads it as any reader does
(:class:`zoo.store.reader.StoreReader`: no locks; a warm load is a few ``stat`` calls) and is the one
writer of it in direct mode: every write goes through the methods of :class:`zoo.store.protocol.CacheWriter`
(``ensure``, ``pull``, ``import_dir``, ``remove``, ``gc``, ``verify``, ``pin``), and each takes its own locks.
The paths a load opens are made only by :mod:`zoo.store.content`; folders, modes and locks are
:mod:`zoo.store.disk`'s; the import half is :mod:`zoo.store.ingest`, the pulling half :mod:`zoo.store.pulling`. Rules that keep it correct without
trusting the locks:

- every file is written under a unique temporary name in ``tmp/`` (:mod:`zoo.atomic`) and moved
  into place by an atomic rename or an exclusive ``link`` (a second writer finds the content there and
  drops its copy);
- a snapshot folder is built in ``tmp/`` and renamed into ``snapshots/`` whole;
- the manifest is written last, after every file was checked against its size and digest, so a crash
  at any moment leaves either no version or a complete one;
- a file's content lives in one inode: the ``objects/`` entry and the ``blobs/`` entries of every repo
  are hard links to it (a copy only where the kernel refuses the link);
- bytes whose digest is wrong are never served: a stored object whose stat changed is hashed again
  before it is used, and quarantined if it no longer matches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .. import atomic
from ..errors import CorruptCheckpointError, IntegrityError, OfflineError, ZooError
from ..names import ZOO_PREFIX, is_local, local_repo, validate_name
from . import history, hub, ingest, progress, records
from .content import Contents
from .disk import check_free_space, disk_errors
from .events import Actor, Dispatcher, Event, VersionCreated, plugin_hooks
from .manifests import FileEntry, Version, config_fields, content_id, read_or_warn
from .protocol import Fetcher, WritePolicy
from .pulling import Pulling, _Held
from .tiering import Tiering
from .reader import StoreReader

log = logging.getLogger("zoo.store")


class Store(Pulling, Tiering, StoreReader):
    """One zoo store, read and written: the one writer of it in direct mode (the daemon's in daemon mode).
    Every write goes through the methods of :class:`zoo.store.protocol.CacheWriter` and takes its own locks."""

    def __init__(self, home: str | os.PathLike[str] | None = None, *, quiet: bool | None = None,
                 fetcher: Fetcher | None = None, policy: WritePolicy | None = None,
                 events: Callable[[Event], None] | None = None, objectstore: str | None = None) -> None:
        super().__init__(home)
        from .central import Central

        # The central tier: every object and version record goes to the bucket before the version is visible,
        # and the store is a cache of it (zoo daemon --object-store; recorded in the store for the CLI)
        self.central = Central(self.layout, self.disk, objectstore) if objectstore else \
            Central.configured(self.layout, self.disk)
        self.fetcher: Fetcher = fetcher if fetcher is not None else hub  # type: ignore[assignment]
        self.contents = Contents(self.layout, self.disk)
        self._importer = ingest.Importer(self.layout, self.disk, self.contents)
        self.quiet = quiet
        # The daemon's decisions (its quota, progress streamed to clients); None: free space only, a terminal bar
        self.policy = policy
        self._pulling = _Held()  # objects stored by a pull of this process that has not committed yet
        # Where events go once durable and in the history: the plugins' hooks, on a thread of their own
        self.events: Callable[[Event], None] = events if events is not None else Dispatcher(plugin_hooks)

    def bar(self, total: int, desc: str) -> Any:
        """A progress bar for long work: the daemon's stream to its client, else one on the terminal."""
        return self.policy.bar(total, desc) if self.policy else progress.bar(total, desc, self.quiet)

    def pulling(self) -> set[str]:
        """Objects a pull of this process has stored and not yet committed (gc leaves them)."""
        return self._pulling.held()

    def touch_used(self, repo: str) -> None:
        """Record a use (for ``zoo ls``); best-effort: a read-only shared store still loads. The stamp is
        writable by whoever may write the store, as lock files are."""
        path = self.layout.used_path(repo)
        with contextlib.suppress(OSError):
            try:
                os.utime(path)
            except FileNotFoundError:
                path.touch()
                os.chmod(path, self.disk.modes()[1] & 0o666)

    def _room_for(self, incoming: int, what: str, repo: str) -> None:
        """Before writing ``incoming`` bytes: the daemon makes room under its quota (``make_room``); in
        any case a disk without the space fails now, before anything is downloaded or copied."""
        if self.policy is not None:
            self.policy.make_room(incoming, what, repo)
            return
        check_free_space(self.home, incoming, what=what)

    # -- the writer interface (zoo.store.protocol.CacheWriter) -------------------------------------

    def ensure(self, repo: str, revision: str | None = None) -> Version:
        """Make ``repo@revision`` present and intact, and return its version.

        Cached and unchanged: stat calls only, no lock, no request, no hashing. A file whose stat
        changed is hashed again: intact, it is recorded as checked; damaged, it is quarantined and
        fetched again (a hub repo, online) or the load fails with :class:`IntegrityError` (offline, or an
        import). A hub name that is not cached is pulled once, however many processes ask at once.
        """
        local = is_local(repo)
        wanted = revision or (None if local else "main")
        version = self.find(repo, wanted)
        if version is not None and not self.missing_files(version):
            self.touch_used(repo)
            return version
        if version is None and self.central is not None:  # another daemon on the bucket may have made it
            self._sync_central(repo)
            version = self.find(repo, wanted)
            if version is not None and not self.missing_files(version):
                self.touch_used(repo)
                return version
        if version is None:
            self.check_absent(repo, wanted)
        self.disk.prepare()
        with self.disk.name_lock(repo):
            version = self.find(repo, wanted)  # another process may have done it meanwhile
            if version is not None:
                damaged = self._repair(version)
                if not damaged:
                    self.touch_used(repo)
                    return self.find(repo, version.name) or version
                if local:
                    raise IntegrityError(
                        f"local:{repo.split('/', 1)[1]}@{version.name}: {self._describe(damaged)}; the damaged "
                        f"files were moved to {self.quarantine}. An import cannot be fetched again: import or "
                        "save the model again"
                    )
                try:
                    version = self._pull_locked(repo, version.id, refs=())
                except OfflineError:
                    raise IntegrityError(
                        f"{repo}@{version.name}: {self._describe(damaged)}; the damaged files were moved to "
                        f"{self.quarantine}, and offline mode is on, so they cannot be fetched again. Unset "
                        "ZOO_OFFLINE/HF_HUB_OFFLINE, or run zoo pull where the network is reachable"
                    ) from None
            else:
                version = self._pull_locked(repo, wanted)
        self.touch_used(repo)
        return version

    @staticmethod
    def _describe(damaged: list[tuple[FileEntry, str]]) -> str:
        shown = "; ".join(f"{e.path}: {problem}" for e, problem in damaged[:3])
        return f"{len(damaged)} files failed their digest ({shown}{' ...' if len(damaged) > 3 else ''})"

    @contextlib.contextmanager
    def staging(self, stem: str) -> Iterator[Path]:
        """A private folder to write files into before ``import_dir(..., owned=True)`` (``zoo.save``):
        in the store's tmp/, so that the import moves them in; removed afterwards."""
        self.disk.prepare()
        folder = self.disk.tmp_name(stem, "")
        try:
            with disk_errors(str(self.tmp)):
                folder.mkdir()
                yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def import_dir(self, directory: str | os.PathLike[str], name: str, *, link: bool = False,
                   source: str | None = None, owned: bool = False, contained: bool = False,
                   description: str | None = None, labels: dict[str, str] | None = None,
                   base: dict[str, Any] | None = None) -> Version:
        """Ingest a saved directory as a new version of ``local/<name>`` (or return the version that
        already holds exactly this content).

        The store keeps content, never a symlink: symlinked files (a Hugging Face snapshot) are read
        through. The user's files are never changed: they are copied (hashed in the same pass), and a
        source file whose stat is unchanged since an earlier import is not read again. ``link=True``
        hard-links them instead (no copy; the files become read-only, as store objects are).
        ``owned=True`` is for zoo's own staging folders (``zoo.save``): the files are moved in.
        ``contained=True`` (drop folders, which anyone may write): a symlink that leads outside
        ``directory`` is refused, so an import never reads a file the folder's writer could not place.
        ``description`` and ``base`` (the model it was made from; else found from the model card's
        ``base_model`` or config's ``_name_or_path``) are recorded with a new version; ``labels`` are set on
        the version made (or found).
        """
        from . import lineage, marks

        repo = local_repo(name)
        labels = marks.check_labels(labels) if labels else {}
        if description is not None and (not isinstance(description, str) or len(description) > 4096
                                        or not description.replace("\n", " ").replace("\t", " ").isprintable()):
            from ..errors import InvalidArgumentError

            raise InvalidArgumentError("a description is printable text (lines and tabs allowed, no control "
                                       "characters) of at most 4096 characters")
        if source is not None:  # shown by zoo versions and zoo history: one line, whoever sent it
            source = "".join(c if c.isprintable() else "?" for c in str(source)[:1024])
        directory, files = ingest.import_source(directory, contained=contained)
        self.disk.prepare()
        total = sum(size for _, _, size in files)
        self._room_for(total, f"the import of {name}", repo)
        entries = []
        with self.bar(total, f"import {name}") as bar, disk_errors(str(self.home)):
            for rel, path, size in files:
                sha256 = self._importer.ingest(path, link=link, owned=owned, on_bytes=bar.update)
                entries.append(FileEntry(rel, sha256, size, sha256))
        if base is None:
            base = lineage.base_of_folder(self, directory)
        base = _base_record(base)
        with self.disk.name_lock(repo):
            version = self._commit(repo, content_id(entries), entries, source=source or f"import:{directory}",
                                   revision=None, refs=["main"], about={"description": description, "base": base})
            if labels:
                self.tagging.label_locked(version, labels, [])
        return version

    # -- versions --------------------------------------------------------------------------------

    def _check_shards(self, repo: str, entries: list[FileEntry]) -> None:
        """A sharded checkpoint is complete only if every shard its index names is among the files."""
        from ..model.weights import missing_shards

        paths = {e.path for e in entries}
        for entry in entries:
            if not entry.path.endswith(".index.json"):
                continue
            prefix = entry.path.rpartition("/")[0]
            try:
                shards, missing = missing_shards(
                    self.object_path(entry.sha256), lambda s: (f"{prefix}/{s}" if prefix else s) in paths)
            except CorruptCheckpointError as exc:
                raise IntegrityError(f"{repo}: {entry.path}: {exc}; nothing was stored") from None
            if missing:
                raise IntegrityError(
                    f"{repo}: {entry.path} lists {len(shards)} shards but {', '.join(missing[:5])} "
                    f"{'is' if len(missing) == 1 else 'are'} not among the files; the checkpoint is incomplete, "
                    "so no version was made. Save or upload it again"
                )

    def _commit(self, repo: str, snap_id: str, entries: list[FileEntry], *, source: str,
                revision: str | None, refs: Iterable[str], access: str | None = None,
                verified: Iterable[str] = (), about: dict[str, Any] | None = None) -> Version:
        """Make a version visible: snapshot in place, then the manifest (exclusive create), then refs."""
        self._check_shards(repo, entries)
        entries = [dataclasses.replace(e, mtime_ns=self.object_path(e.sha256).stat().st_mtime_ns) for e in entries]
        if self.central is not None:  # the objects before any record: a version in the bucket is complete
            self._to_central(lambda: self.central.upload(entries), f"{repo}: its files")
        with disk_errors(str(self.home)):
            self.contents.build_snapshot(repo, snap_id, entries)
            existing = [v for v in self.versions(repo) if v.id == snap_id]
            if existing:
                version = existing[-1]
                verified = set(verified)
                fresh = {e.path: e for e in entries if e.path in verified}
                # a file downloaded again (after a repair) keeps its place with the stat of its new object,
                # so that the next load does not take it for changed and hash it again; a file merely found
                # stored keeps the stat it was checked with (its damage, if any, stays visible)
                kept = tuple(fresh[f.path] if f.path in fresh and fresh[f.path].sha256 == f.sha256 else f
                             for f in version.files)
                added = [e for e in entries if e.path not in {f.path for f in version.files}]
                if added or kept != version.files:  # and more files of the same commit (pull --all)
                    files = (*kept, *added)
                    version = dataclasses.replace(version, files=files, total_size=sum(e.size for e in files))
                    if added and self.central is not None:
                        self._to_central(lambda: self.central.publish(version, replace_existing=True),
                                         f"{repo} {version.name}: its record")
                    self.disk.write_text(version.manifest, version.to_json())
            else:
                version = self._new_version(repo, snap_id, entries, source, revision, access, about or {})
            newest = max(v.number for v in self.versions(repo))
            # readers of the hub layout (HF_HUB_CACHE=$ZOO_HOME/hub) find zoo's version by its ref too: vN for
            # local/ names, zoo:vN for hub repositories, where vN may be an upstream's tag (never shadowed)
            own = version.name if is_local(repo) else f"{ZOO_PREFIX}{version.name}"
            for ref in {*refs, own}:
                if ref == "main" and is_local(repo) and version.number != newest:
                    continue  # an import's main is its newest version, as the plain name loads it
                self.disk.write_text(self.layout.ref_path(repo, ref), snap_id)
            if not is_local(repo):
                self.tagging.shadowed(repo, refs)  # the upstream's refs come first: an alias of that name goes
        return version

    def _new_version(self, repo: str, snap_id: str, entries: list[FileEntry], source: str,
                     revision: str | None, access: str | None, about: dict[str, Any]) -> Version:
        config = next((e for e in entries if e.path == "config.json"), None)
        fields = config_fields(self.object_path(config.sha256) if config else None)
        folder = self.layout.versions_folder(repo)
        self.disk.mkdir(folder)
        highest = 0
        if self.central is not None:  # the bucket's numbers (removed ones too) are taken: this one comes after
            self._sync_central(repo, required=True)
            highest = self._to_central(lambda: self.central.highest(repo), f"{repo}: its numbers")
        number = max(max((v.number for v in self.versions(repo)), default=0), highest) + 1
        who = Actor.current()
        template = Version(
            repo=repo, number=number, id=snap_id, source=source, revision=revision,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            files=tuple(sorted(entries, key=lambda e: e.path)), total_size=sum(e.size for e in entries),
            transformers_version=fields.get("transformers_version"), model_type=fields.get("model_type"),
            architectures=tuple(fields.get("architectures", ())), manifest=folder, access=access,
            uid=who.uid, user=who.user, host=who.host, base=about.get("base"), description=about.get("description"),
        )
        staged = self.disk.tmp_name("manifest")
        while True:  # exclusive create: two writers never share a number
            with open(staged, "w", encoding="utf-8") as f:
                f.write(dataclasses.replace(template, number=number).to_json())
                f.flush()
                os.fsync(f.fileno())  # a version is recorded and announced only once its manifest is on disk
            self.disk.seal(staged)
            numbered = dataclasses.replace(template, number=number)
            if self.central is not None and not self._to_central(lambda: self.central.publish(numbered),
                                                                 f"{repo} v{number}: its record"):
                number += 1  # another daemon on the bucket took that number first
                staged.unlink()
                continue
            if atomic.link_exclusive(staged, folder / f"v{number:04d}.json"):
                break
            if self.central is not None:
                found = read_or_warn(folder / f"v{number:04d}.json")
                if found is not None and found.id == snap_id:  # a sync brought our own record in first
                    break
                # a version of this store that was never in the bucket holds the number: ours takes the next
                self._to_central(lambda: self.central.unpublish([numbered], removed=False),
                                 f"{repo} v{number}: its record")
            staged.unlink()
            number += 1
        staged.unlink()
        atomic.sync_dir(folder)
        if self.central is not None:  # its objects once more, after the record: a zoo gc that ran meanwhile
            self._to_central(lambda: self.central.upload(template.files), f"{repo} v{number}: its files")
        version = Version.read(folder / f"v{number:04d}.json")
        # Without a working lock two writers may both number the same content: the lowest number
        # stays, the others are withdrawn (they were complete copies, so no reader saw a partial one).
        twins = [v for v in self.versions(repo) if v.id == snap_id and v.number < version.number]
        if twins:
            if self.central is not None:  # (another daemon on the bucket numbered the same content first)
                self._to_central(lambda: self.central.unpublish([version], removed=False),
                                 f"{repo} {version.name}: its record")
            version.manifest.unlink(missing_ok=True)
            return twins[0]
        self.tagging.created(version)
        self.record(VersionCreated(repo, version.name, version.id, who, version.created, source=source,
                                   base=version.base, description=version.description))
        return version

    # -- the registry: records and events ---------------------------------------------------------

    def record(self, event: Event) -> None:
        """After a change is durable: append it to its name's history, then hand it to the hooks. Neither
        can undo the change: a history that cannot be written is logged (and warned), not raised."""
        try:
            history.append(self.layout, self.disk, event)
        except (OSError, ValueError, ZooError) as exc:
            log.error("%s of %s@%s is done but could not be added to the history: %s", event.kind, event.name,
                      event.version, exc)
        self.events(event)

    @property
    def tagging(self) -> Any:
        """Aliases, labels and who may change them (:class:`zoo.store.tagging.Tagging`)."""
        from .tagging import Tagging

        return Tagging(self)

    def tag(self, repo: str, alias: str, revision: str | None = None) -> Any:
        """Point ``alias`` at ``repo@revision`` (the newest version without one); moving it if it exists."""
        return self.tagging.tag(repo, alias, revision)

    def untag(self, repo: str, alias: str) -> Any:
        return self.tagging.untag(repo, alias)

    def label(self, repo: str, revision: str | None, labels: dict[str, str], remove: Iterable[str] = ()) -> Version:
        return self.tagging.label(repo, revision, labels, list(remove))

    # -- integrity -------------------------------------------------------------------------------

    def _repair(self, version: Version) -> list[tuple[FileEntry, str]]:
        """Under the name lock: bring the files of ``version`` whose stat changed back in order. Each is
        hashed again; intact, its new stat is recorded; missing from objects/, it is restored from an
        intact linked copy; damaged, it is quarantined. Returns the damaged or lost files."""
        changed = self.missing_files(version)
        if not changed:
            return []
        damaged = []
        checked = {}
        if self.central is not None:  # what comes from the bucket needs room here, as a download does
            absent = {e.sha256: e.size for e in changed if not self.object_path(e.sha256).exists()}
            if absent:
                self._room_for(sum(absent.values()), f"{version.repo} {version.name} from the object store",
                               version.repo)
        for entry in changed:
            problem = self.contents.check_object(entry)
            if problem and self.central is not None:  # the bucket keeps every version's objects
                problem = self._from_central(entry)
            if problem:
                damaged.append((entry, problem))
            else:
                checked[entry.path] = self.object_path(entry.sha256).stat().st_mtime_ns
        if checked:
            files = tuple(dataclasses.replace(e, mtime_ns=checked.get(e.path, e.mtime_ns)) for e in version.files)
            self.contents.build_snapshot(version.repo, version.id, [e for e in files if e.path in checked])
            self.disk.write_text(version.manifest, dataclasses.replace(version, files=files).to_json())
        return damaged

    def verify(self, repo: str | None = None) -> list[tuple[Version, FileEntry, str]]:
        """Re-hash every file (of ``repo``, or of the store) and check every snapshot link. A missing
        object is restored from an intact copy; a damaged one is quarantined and its blobs (the same
        damaged bytes) unlinked, so the next load fetches it again; a missing link is rebuilt.
        Returns the problems that remain."""
        problems = []
        checked: dict[str, str | None] = {}
        versions = self.versions(repo) if repo else list(self.iter_versions())
        total = sum(e.size for v in versions for e in v.files)
        self.disk.prepare()
        with self.bar(total, "verify") as bar:
            for version in versions:
                with self.disk.name_lock(version.repo):
                    elsewhere = set()  # in the bucket only (zoo verify --bucket checks those)
                    for entry in version.files:
                        if self.central is not None and not self.object_path(entry.sha256).exists():
                            elsewhere.add(entry.sha256)
                            bar.update(entry.size)
                            continue
                        if entry.sha256 not in checked:
                            checked[entry.sha256] = self.contents.check_object(entry, bar.update)
                        problem = checked[entry.sha256]
                        if problem:
                            problems.append((version, entry, problem))
                    intact = [e for e in version.files if e.sha256 not in elsewhere and not checked[e.sha256]]
                    for entry in version.files:
                        if checked.get(entry.sha256):  # its blobs, in every repo, hold the damaged bytes
                            self.contents.unlink_blobs(entry)
                    self.contents.build_snapshot(version.repo, version.id, intact)  # re-links what was deleted
                    if intact and not elsewhere:  # (a version partly in the bucket only is not fetched here)
                        self._repair(version)  # records the stat of what was checked
        return problems

    # -- pins, uses and leases (zoo.store.records; the daemon's quota honours them) -------------------

    def pin(self, repo: str, revision: str | None = None) -> Version:
        """Keep ``repo@revision`` (the newest version without one) from quota eviction."""
        return records.pin(self, repo, revision)

    def unpin(self, repo: str, revision: str | None = None) -> list[str]:
        return records.unpin(self, repo, revision)

    def note_use(self, version: Version) -> None:
        """A process loads ``version``: record the use (for LRU eviction) and hold its lease for as long as
        the process lives, so that no eviction removes it under the process. Best-effort, never raises."""
        records.record_use(self, version.repo, version.name)
        records.hold_lease(self, version)

    # -- removal and garbage collection ------------------------------------------------------------

    def remove(self, repo: str, revision: str | None = None, *, dry_run: bool = False) -> Any:
        """Remove one version (``revision``) or every version of ``repo``. Returns the plan carried out
        (or only made, with ``dry_run``): what is deleted and the bytes that frees."""
        from .maintenance import removal_plan

        self.disk.prepare()
        with self.disk.name_lock(repo):
            if revision is not None:
                version = self.find(repo, revision)
                versions = [version] if version else []
            else:
                versions = self.versions(repo)
            plan = removal_plan(self, repo, versions)
            if not dry_run and versions:
                self.tagging.check_removal(repo, versions)
                if self.central is not None:  # from the bucket first: no daemon brings them back
                    self._to_central(lambda: self.central.unpublish(versions), f"the removal of {repo}",
                                     "so nothing was removed")
                plan.execute()
                self.tagging.removed(repo, versions, "removed")
        return plan

    def gc(self, *, dry_run: bool = False, grace: float | None = None) -> Any:
        """Delete what no version uses (older than the grace period) and dead processes' temporaries."""
        from .maintenance import gc_grace, gc_plan

        grace = gc_grace() if grace is None else grace
        plan = gc_plan(self, grace=grace)
        if not dry_run:
            plan.execute()
        if self.central is not None:  # objects no record in the bucket lists, uploads a killed writer left
            objects, freed, uploads = self.central.gc(grace=grace, dry_run=dry_run)
            plan.description += (f" (and in {self.central.url}: {objects} unused objects, {progress.human(freed)}"
                                 f"{' to delete' if dry_run else ' deleted'}, {uploads} unfinished uploads"
                                 f"{' to abort' if dry_run else ' aborted'})")
        return plan


def _base_record(base: Any) -> dict[str, str | None] | None:
    """A base as a manifest records it: ``name``, ``repo``, ``version``, ``id``, each short text or None (what a
    client sent through the daemon is not trusted to be anything else)."""
    if base is None:
        return None
    if not isinstance(base, dict) or not isinstance(base.get("name"), str):
        from ..errors import InvalidArgumentError

        raise InvalidArgumentError("a base is a dict with at least a name, e.g. {'name': 'bert-base-cased'}")
    record = {key: value[:256] if isinstance(value, str) else None
              for key, value in ((k, base.get(k)) for k in ("name", "repo", "version", "id"))}
    if not all(v is None or v.isprintable() for v in record.values()):
        from ..errors import InvalidArgumentError

        raise InvalidArgumentError("a base's name, repo, version and id are printable text")
    return record


def save_name(name: str) -> str:
    """The name ``zoo.save(model, name)`` stores to (``local:NAME`` or ``NAME``)."""
    return validate_name(name.removeprefix("local:"))
