"""What the store holds, seen as hub repositories: ``repo@revision`` -> a :class:`Snapshot` (its commit, its
files with sizes and etags, who may read it), from the store's versions and the upstream's metadata.

- ``local/NAME`` repositories are zoo's imports and saves; their revisions are ``main`` (the newest), ``vN``
  (or ``zoo:vN``), content ids and aliases (``prod``). ``HEAD`` is ``main``, for every repository.
- In a tier (the upstream is another zoo daemon, :mod:`.tier`), ``local/NAME`` is the upstream's name when the
  upstream has it, as a hub repository's ref is the upstream's: the team's names mean the same on every node.
  A node's own ``local/NAME`` is served only while the upstream has no such name that the node's token may
  read (asked again after ``revalidate`` seconds), or when it cannot be reached and never answered for it. Files of the
  upstream's names are stored as content (never as versions of the node's own name of that spelling).
- Hub repositories: a commit is listed upstream once (its listing is kept in ``$ZOO_HOME/remote/``; gc
  removes old listings of commits no version holds);
  a branch or tag is asked again (one request, for its commit) when the answer is older than
  ``revalidate`` seconds, in the background: until the answer comes, the commit it was is served, so a
  cache hit never waits on the upstream. However many clients ask at once, the upstream is asked once.
  When it cannot be reached, what is stored for that ref is served (and logged). Offline, only what is
  stored exists.
- ``zoo:vN`` names a stored version of either kind. For a hub repository every other revision, ``vN``
  included, means what it means upstream (a client of the hub protocol cannot know zoo's conventions): its
  branch or tag ``v1`` is the upstream's, asked for like ``main``, never zoo's version 1.
- An alias of a hub repository (``zoo tag org/name prod``) is served when the upstream has no ref of that
  name (it never shadows one: the upstream is asked, and its answer that it has none is trusted for
  ``revalidate`` seconds), and offline or when the upstream cannot be reached.

Every method may be called from any thread. The answers that need no network and no lock are quick
(:meth:`Catalog.cached`), so the event loop asks them itself and hands the rest to a worker thread.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..store import hub
from ..store.hub import RemoteFile, RemoteRevision
from ..store.manifests import Version
from ..store.marks import Marks
from ..store.writer import Store
from ..errors import InvalidNameError, OfflineError, RemoteError, RemoteNotFoundError, ZooError
from ..names import is_local, validate_repo_id, validate_revision, version_number, zoo_version
from . import protocol
from .protocol import HubError, ServedFile
from .tier import Tier

log = logging.getLogger("zoo.daemon")


@dataclass(frozen=True)
class Snapshot:
    repo: str
    commit: str
    files: dict[str, ServedFile]
    access: str | None  # public, private, gated, local; None: not recorded (treated as restricted)
    last_modified: str | None = None
    remote: RemoteRevision | None = field(default=None, compare=False)  # the upstream's listing
    version: Version | None = field(default=None, compare=False)  # the stored version of this commit
    _memo: dict = field(default_factory=dict, compare=False, repr=False)

    def memo(self, key: Any, build: Callable[[], Any]) -> Any:
        """What ``build()`` returns, computed once per snapshot (tree pages, folders)."""
        try:
            return self._memo[key]
        except KeyError:
            value = self._memo[key] = build()
            return value


def _strictness(access: str | None) -> int:
    """public 0, gated 1, private (or anything else) 2."""
    return {"public": 0, "gated": 1}.get(access or "", 2)


class Catalog:
    def __init__(self, store: Store, *, revalidate: float = 60.0, offline: Callable[[], bool] = hub.offline,
                 tier: Tier | None = None) -> None:
        self.store = store
        self.tier = tier or Tier()
        self.revalidate = revalidate
        self.offline = offline
        self._lock = threading.RLock()  # (a listing read from the bucket is remembered under it)
        self._commits: dict[tuple[str, str], RemoteRevision] = {}  # (repo, commit) -> listing, forever
        self._refs: dict[tuple[str, str], tuple[str, float]] = {}  # (repo, ref) -> (commit, when asked)
        self._versions: dict[str, tuple[int, list[Version]]] = {}  # repo -> (folder mtime, versions)
        self._inflight: dict[tuple[str, str], concurrent.futures.Future] = {}
        self._snapshots: dict[tuple, Snapshot] = {}  # built answers, by what they were built from
        self._revalidating: set[tuple[str, str]] = set()
        self._access: dict[str, str] = {}  # repo -> public/private/gated, as the upstream last said
        self._background = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="zoo-revalidate")
        self._marks: dict[str, tuple[tuple[int, int], Marks]] = {}  # repo -> (file stamp, marks)
        self._not_upstream: dict[tuple[str, str], float] = {}  # (hub repo, alias) -> when the upstream said "no such ref"
        self._own: dict[str, float] = {}  # local/NAME -> when the upstream zoo daemon said it has no such name
        self._central_misses: dict[tuple, float] = {}  # what the bucket did not have, when last asked

    # -- the store's versions, cached until their folder changes ----------------------------------

    def versions(self, repo: str) -> list[Version]:
        folder = self.store.layout.versions_folder(repo)
        try:
            stamp = folder.stat().st_mtime_ns
        except OSError:
            return []
        cached = self._versions.get(repo)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        versions = self.store.versions(repo)
        self._versions[repo] = (stamp, versions)
        return versions

    def marks(self, repo: str) -> Marks:
        """``repo``'s aliases and labels, read again when their file changed."""
        path = self.store.layout.marks_path(repo)
        try:
            st = path.stat()
        except OSError:
            return Marks()
        stamp = (st.st_mtime_ns, st.st_ino)
        cached = self._marks.get(repo)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            marks = self.store.marks(repo)
        for w in caught:
            log.warning("%s", w.message)
        self._marks[repo] = (stamp, marks)
        return marks

    def alias(self, repo: str, alias: str) -> Version | None:
        """The version ``alias`` points at (None when no such alias, or its version is gone)."""
        found = self.marks(repo).aliases.get(alias)
        if found is None:
            return None
        return next((v for v in self.versions(repo) if v.name == found.version and v.id == found.id), None)

    def _stored(self, repo: str, revision: str) -> Version | None:
        """The stored version ``revision`` names (``zoo:vN``, ``vN`` of a local name, an upstream ref zoo
        recorded, a commit, an alias); no network."""
        versions = self.versions(repo)
        if not versions:
            return None
        number = zoo_version(revision) or (version_number(revision) if is_local(repo) else None)
        if number is not None:
            return next((v for v in versions if v.number == number), None)
        if protocol.is_commit(revision):
            return next((v for v in reversed(versions) if v.id == revision), None)
        if is_local(repo):
            if revision == "main":
                return versions[-1]
            return self.alias(repo, revision)
        try:  # an upstream ref: what the store recorded of it (never zoo's own refs/vN)
            target = self.store.upstream_ref(repo, revision)
        except OSError:
            target = None
        if target:
            return next((v for v in reversed(versions) if v.id == target), None)
        return self.alias(repo, revision)

    # -- upstream listings -------------------------------------------------------------------------

    def _listing(self, repo: str, commit: str) -> RemoteRevision | None:
        """The upstream's listing of a commit: in memory, else on disk; None when never asked."""
        key = (repo, commit)
        found = self._commits.get(key)
        if found is not None:
            return found
        path = self.store.layout.listing_path(repo, commit)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            found = RemoteRevision(repo, data["revision"], commit,
                                   tuple(RemoteFile(**f) for f in data["files"]),
                                   data.get("access", "public"), data.get("last_modified"))
        except FileNotFoundError:
            return None  # (never the bucket from here: this runs on the event loop; resolve() asks it)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: unreadable upstream listing (%s); it will be asked again", path, exc)
            return None
        self._commits[key] = found
        return found

    def _from_central(self, repo: str, revision: str) -> RemoteRevision | None:
        """The upstream's answer as a daemon on the store's bucket recorded it (``--object-store``): a branch
        or tag no older than ``revalidate`` seconds, a commit's listing whatever its age. No upstream request."""
        central = self.store.central
        if central is None:
            return None
        key = ("central", repo, revision)
        with self._lock:
            if self._fresh(self._central_misses.get(key)):
                return None
            if len(self._central_misses) > 10000:  # bounded: any client can ask for made-up commits
                self._central_misses.clear()
        try:
            found = central.remote_revision(repo, revision, self.revalidate)
        except ZooError as exc:
            log.warning("%s@%s: %s", repo, revision, exc)
            found = None
        if found is None:
            with self._lock:
                self._central_misses[key] = time.monotonic()
            return None
        remote, age = found
        with self._lock:
            known = self._access.get(repo)
            self._remember(remote)
            if known is not None and _strictness(known) > _strictness(remote.access):
                self._access[repo] = known  # an old listing in the bucket never opens what the upstream closed
            if remote.revision != remote.commit:
                self._refs[(repo, remote.revision)] = (remote.commit, time.monotonic() - age)
        return remote


    def _remember(self, remote: RemoteRevision) -> None:
        self._access[remote.repo] = remote.access  # a repository's access, as last asked: for all its commits
        self._commits[(remote.repo, remote.commit)] = remote
        if remote.revision != remote.commit:
            self._refs[(remote.repo, remote.revision)] = (remote.commit, time.monotonic())
            self._not_upstream.pop((remote.repo, remote.revision), None)  # the upstream's ref now: it wins
        path = self.store.layout.listing_path(remote.repo, remote.commit)
        kept = self._listing(remote.repo, remote.commit) if path.exists() else None
        self._commits[(remote.repo, remote.commit)] = remote
        if kept is not None and kept.access == remote.access:
            return
        data = {"revision": remote.revision, "access": remote.access, "last_modified": remote.last_modified,
                "files": [{"path": f.path, "size": f.size, "sha256": f.sha256, "blob_id": f.blob_id}
                          for f in remote.files]}
        try:
            self.store.disk.mkdir(path.parent)
            self.store.disk.write_text(path, json.dumps(data))
        except OSError as exc:  # a cache of answers: losing it costs one request later
            log.warning("could not keep the upstream listing %s: %s", path, exc)

    def refs_to(self, repo: str, commit: str) -> list[str]:
        """The refs last seen upstream pointing at ``commit`` (for the version made of it)."""
        with self._lock:
            return sorted(ref for (r, ref), (c, _) in self._refs.items() if r == repo and c == commit)

    def _ask_upstream(self, repo: str, revision: str) -> RemoteRevision:
        """One request set upstream for ``repo@revision``, however many threads ask at once."""
        key = (repo, revision)
        with self._lock:
            future = self._inflight.get(key)
            mine = future is None
            if mine:
                future = self._inflight[key] = concurrent.futures.Future()
        if not mine:
            return future.result()
        try:
            remote = self._from_central(repo, revision)
            if remote is None:
                remote = hub.fetch_revision(repo, revision, known=lambda commit: self._listing(repo, commit))
                with self._lock:
                    self._remember(remote)
                if self.store.central is not None:  # for the other daemons on the bucket (outside the lock)
                    try:
                        self.store.central.put_listing(remote)
                    except ZooError as exc:
                        log.warning("%s@%s: could not record the upstream's answer in the bucket: %s", repo,
                                    revision, exc)
            future.set_result(remote)
            return remote
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._inflight.pop(key, None)

    # -- resolving ---------------------------------------------------------------------------------

    def cached(self, repo: str, revision: str | None) -> Snapshot | None:
        """The snapshot when it is known without asking anyone; None when :meth:`resolve` must be called.
        Raises :class:`HubError` for names that cannot exist."""
        revision = default_branch(revision)
        self._check_names(repo, revision)
        upstream_local = False
        if is_local(repo):
            tier = self.tier.known()
            if tier is None:
                return None  # the upstream must be asked what it is
            if not tier or self._fresh(self._own.get(repo)):
                return self._local(repo, revision)
            upstream_local = True  # the upstream's name, when it has it
        offline = self.offline()
        if not upstream_local and (zoo_version(revision) is not None or offline):  # zoo's own, or only what is stored
            version = self._stored(repo, revision)
            if version is None:
                raise self._absent(repo, revision, offline)
            return self._snapshot(repo, version.id, self._listing(repo, version.id), version)
        if protocol.is_commit(revision):
            commit = revision
        else:
            known = self._refs.get((repo, revision))
            if known is None:
                missed = None if upstream_local else self._not_upstream.get((repo, revision))
                version = self.alias(repo, revision) if missed is not None else None
                if version is None:
                    return None
                if not self._fresh(missed):
                    self._revalidate(repo, revision)  # has the upstream a ref of that name now? (it would win)
                return self._snapshot(repo, version.id, self._listing(repo, version.id), version)
            if time.monotonic() - known[1] > self.revalidate:
                self._revalidate(repo, revision)  # meanwhile the commit it was stays served: a hit never waits
            commit = known[0]
        listing = self._listing(repo, commit)
        if listing is None:
            return None
        if upstream_local:
            return self._snapshot(repo, commit, listing, None, access="local")
        return self._snapshot(repo, commit, listing, self._stored(repo, commit))

    def _fresh(self, when: float | None) -> bool:
        return when is not None and time.monotonic() - when <= self.revalidate

    def _revalidate(self, repo: str, revision: str) -> None:
        """Ask the upstream again what ``revision`` is, in the background (once, however many ask)."""
        with self._lock:
            if (repo, revision) in self._inflight or (repo, revision) in self._revalidating:
                return
            self._revalidating.add((repo, revision))
        self._background.submit(self._refresh, repo, revision)

    def _refresh(self, repo: str, revision: str) -> None:
        try:
            remote = self._ask_upstream(repo, revision)
            log.debug("%s@%s revalidated: %s", repo, revision, remote.commit[:12])
        except RemoteNotFoundError as exc:
            with self._lock:
                was_ref = self._refs.pop((repo, revision), None) is not None
                if not was_ref and (repo, revision) in self._not_upstream and exc.code != "GatedRepo":
                    self._not_upstream[(repo, revision)] = time.monotonic()  # still none upstream: the alias stays
                    return
            log.warning("%s@%s: gone upstream, or refused (%s); no longer served", repo, revision, exc.code)
            with self._lock:
                if exc.code in ("RepoNotFound", "GatedRepo"):  # the repository went private or gated:
                    self._access[repo] = "gated" if exc.code == "GatedRepo" else "private"  # its commits too
        except Exception as exc:  # the upstream is down: keep serving what it was, ask again later
            log.warning("%s@%s: could not revalidate (%s); still serving what it was", repo, revision, exc)
            with self._lock:
                old = self._refs.get((repo, revision))
                if old is not None:
                    self._refs[(repo, revision)] = (old[0], time.monotonic())
        finally:
            with self._lock:
                self._revalidating.discard((repo, revision))

    def resolve(self, repo: str, revision: str | None) -> Snapshot:
        """The snapshot of ``repo@revision``, asking the upstream when needed (blocking)."""
        revision = default_branch(revision)
        found = self.cached(repo, revision)
        if found is not None:
            return found
        if is_local(repo):
            if not self.tier.probe() or self._fresh(self._own.get(repo)):
                return self._local(repo, revision)
            return self._upstream_local(repo, revision)
        try:
            remote = self._ask_upstream(repo, revision)
        except RemoteNotFoundError as exc:
            code = exc.code or "RepoNotFound"
            if code == "GatedRepo":
                raise HubError(401, "GatedRepo", f"{repo}: the upstream refused this zoo server's token "
                                                 "(gated or private; its HF_TOKEN has no access)") from None
            if code == "RepoNotFound" and self._known(repo):  # some mirrors (olah) say so for a bad revision
                code = "RevisionNotFound"
            version = self.alias(repo, revision) if code == "RevisionNotFound" else None
            if version is not None:  # no such ref upstream: the alias is the name
                with self._lock:
                    self._not_upstream[(repo, revision)] = time.monotonic()
                return self._snapshot(repo, version.id, self._listing(repo, version.id), version)
            raise HubError(404, code, f"{repo}@{revision}: not found upstream ({hub.endpoint()})") from None
        except OfflineError:
            raise self._absent(repo, revision, True) from None
        except (RemoteError, InvalidNameError) as exc:
            version = self._stored(repo, revision)
            if version is None or isinstance(exc, InvalidNameError):
                raise HubError(502, None, f"{repo}@{revision}: the upstream failed and nothing is stored for "
                                          f"it here: {exc}") from None
            log.warning("%s@%s: the upstream failed (%s); serving the stored %s", repo, revision, exc, version.name)
            return self._snapshot(repo, version.id, self._listing(repo, version.id), version)
        return self._snapshot(repo, remote.commit, remote, self._stored(repo, remote.commit))

    def _upstream_local(self, repo: str, revision: str) -> Snapshot:
        """``local/NAME@revision`` of the upstream zoo daemon; the node's own when the upstream has no such name."""
        try:
            remote = self._ask_upstream(repo, revision)
        except RemoteNotFoundError as exc:
            if exc.code == "GatedRepo" and not self.versions(repo):
                raise HubError(401, "GatedRepo", f"{repo}: the upstream zoo daemon refused this daemon's token (start "
                                                 "it with HF_TOKEN set to a token the upstream's --tokens lists, "
                                                 "with a read= scope that includes this name)") from None
            if exc.code == "RevisionNotFound":
                raise protocol.revision_not_found(repo, revision, " on the upstream zoo daemon (its local/ names "
                                                  "come first)") from None
            if exc.code == "GatedRepo":  # none this daemon may read (its token's scope); never told which
                log.info("%s: the upstream zoo daemon serves no such name to this daemon; this daemon's own is "
                         "served", repo)
            with self._lock:
                self._own[repo] = time.monotonic()
            return self._local(repo, revision)
        except (OfflineError, RemoteError, InvalidNameError) as exc:
            if not self.versions(repo):
                raise HubError(502, None, f"{repo}@{revision}: the upstream zoo daemon failed and this daemon has no "
                                          f"such name of its own: {exc}") from None
            log.warning("%s@%s: the upstream zoo daemon failed (%s); serving this daemon's own name", repo, revision,
                        exc)
            return self._local(repo, revision)
        return self._snapshot(repo, remote.commit, remote, None, access="local")

    def upstream_has(self, repo: str, ref: str) -> bool:
        """Whether the upstream was last seen to have a branch or tag ``ref`` of hub repository ``repo``."""
        if (repo, ref) in self._refs:
            return True
        try:
            return self.store.upstream_ref(repo, ref) is not None
        except OSError:
            return False

    def upstream_local(self, snap: Snapshot) -> bool:
        """Whether ``snap`` is a ``local/`` name of the upstream zoo daemon (not this store's)."""
        return is_local(snap.repo) and snap.remote is not None

    def _known(self, repo: str) -> bool:
        """Whether ``repo`` exists: stored, or seen upstream."""
        with self._lock:
            seen = any(r == repo for r, _ in list(self._commits)) or any(r == repo for r, _ in list(self._refs))
        return seen or bool(self.versions(repo))

    def _check_names(self, repo: str, revision: str) -> None:
        try:
            validate_repo_id(repo)
        except InvalidNameError:
            raise protocol.repo_not_found(repo, " (not a valid repository id)") from None
        try:
            validate_revision(revision)
        except InvalidNameError:
            raise protocol.revision_not_found(repo, revision[:80], " (not a revision zoo can name)") from None

    def _absent(self, repo: str, revision: str, offline: bool) -> HubError:
        why = " (this zoo server is offline: it serves only what it stores)" if offline else ""
        if self.versions(repo):
            return protocol.revision_not_found(repo, revision, why)
        return protocol.repo_not_found(repo, why)

    def _local(self, repo: str, revision: str) -> Snapshot:
        version = self._stored(repo, revision)
        if version is None:
            raise self._absent(repo, revision, False)
        return self._snapshot(repo, version.id, None, version, access="local")

    def _snapshot(self, repo: str, commit: str, remote: RemoteRevision | None, version: Version | None,
                  access: str | None = None) -> Snapshot:
        offline = self.offline()
        if access is None:
            access = self._access.get(repo)
        key = (repo, commit, id(remote), id(version), access, offline)
        found = self._snapshots.get(key)
        if found is not None and found.remote is remote and found.version is version:  # the very same inputs
            return found
        found = self._build_snapshot(repo, commit, remote, version, access, offline)
        if len(self._snapshots) > 1000:
            self._snapshots.clear()
        self._snapshots[key] = found
        return found

    def _build_snapshot(self, repo: str, commit: str, remote: RemoteRevision | None, version: Version | None,
                        access: str | None, offline: bool) -> Snapshot:
        files: dict[str, ServedFile] = {}
        stored = {e.path: e for e in version.files} if version else {}
        if remote is not None and not offline:  # offline, only what is stored exists
            for f in remote.files:
                entry = stored.get(f.path)
                files[f.path] = ServedFile(f.path, f.size, entry.sha256 if entry else f.sha256, f.etag,
                                           entry.mtime_ns if entry else 0)
        for path, e in stored.items():
            files.setdefault(path, ServedFile(path, e.size, e.sha256, e.etag, e.mtime_ns))
        if access is None:
            access = remote.access if remote is not None else version.access if version else None
        modified = remote.last_modified if remote is not None else version.created if version else None
        return Snapshot(repo, commit, dict(sorted(files.items())), access, modified, remote, version)

    # -- content -----------------------------------------------------------------------------------

    def content(self, snap: Snapshot, f: ServedFile) -> Path | str | None:
        """Where ``f``'s content is stored: a path; ``"repair"`` when the stored object changed since it was
        checked (the store must look at it before it is served); ``"confirm"`` when it was stored for
        another repository (the upstream must say it serves this one the file); None when it is not stored."""
        layout = self.store.layout
        if f.sha256:
            path = layout.object_path(f.sha256)
            try:
                st = path.stat()
            except OSError:
                st = None
            if st is not None and st.st_size == f.size:
                if f.mtime_ns and st.st_mtime_ns != f.mtime_ns:
                    return "repair"
                if f.mtime_ns or snap.access == "local" or layout.blob_path(snap.repo, f.etag).exists():
                    return path
                return "confirm"  # stored for another repository: see HubServer._confirm
            if st is not None or (f.mtime_ns and snap.version is not None):
                return "repair"  # listed by a version, but changed or gone
        blob = layout.blob_path(snap.repo, f.etag)
        try:
            if blob.stat().st_size == f.size:
                return blob
        except OSError:
            pass
        return None

    def forget(self, repo: str) -> None:
        """Drop what is cached of ``repo``'s versions (after the store repaired or changed them)."""
        self._versions.pop(repo, None)


def default_branch(revision: str | None) -> str:
    """``HEAD`` (what ``@huggingface/hub``'s ``modelInfo`` asks for) and no revision: the default branch."""
    return "main" if revision in (None, "", "HEAD") else revision


def served_remote_file(f: ServedFile) -> RemoteFile:
    """The upstream's description of a file, for a download of it."""
    return RemoteFile(f.path, f.size, f.etag if f.lfs else None, f.blob_id)


__all__ = ["Catalog", "Snapshot", "default_branch", "served_remote_file"]
