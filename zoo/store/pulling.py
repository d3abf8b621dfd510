"""The pulling half of the store's writer: a hub revision made a complete, verified version (``pull``),
and the hub server's pull-through (``fetch_file`` one file at a time, ``adopt`` once a load's files are
there). Files come from the store's fetcher (:class:`~zoo.store.protocol.Fetcher`); their bytes are
checked against the listed size and digest before they are stored, and a checkpoint is checked as loads
check it before it becomes a version.

:class:`Pulling` is a part of :class:`zoo.store.writer.Store` (its methods use the store's disk, contents,
fetcher and commit), kept in its own file so that each stays one job.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from ..atomic import HOST, owner_alive
from ..errors import CheckpointError, CorruptCheckpointError, IntegrityError, ObjectStoreError
from ..names import validate_repo_id, validate_revision
from .content import hash_file
from .disk import disk_errors
from .manifests import FileEntry, Version

log = logging.getLogger("zoo.store")


class Pulling:
    def pull(self, repo: str, revision: str = "main", *, all_files: bool = False) -> Version:
        """Ask the hub what ``repo@revision`` is now and make that commit a complete, verified version
        (only what loading needs unless ``all_files``). Files already stored are not downloaded again."""
        validate_repo_id(repo)
        validate_revision(revision)
        self.disk.prepare()
        with self.disk.name_lock(repo):
            return self._pull_locked(repo, revision, all_files=all_files, ask=True)

    def _pull_locked(self, repo: str, revision: str, *, all_files: bool = False, ask: bool = False,
                     refs: Iterable[str] | None = None) -> Version:
        """Under the name lock. Without ``ask``, a complete stored version for ``revision`` is taken
        as it is: N processes asking for one uncached model cost the hub one set of requests, not N."""
        from .select import select_files

        if not ask:
            cached = self.find(repo, revision)
            if cached is not None and not self.missing_files(cached):
                return cached
        remote = self.fetcher.fetch_revision(repo, revision)
        if self.central is not None:  # the upstream's answer, for the other daemons on the bucket
            with contextlib.suppress(ObjectStoreError):
                self.central.put_listing(remote)
        wanted = select_files([f.path for f in remote.files], all_files=all_files)
        refs = [revision] if refs is None and revision != remote.commit else list(refs or ())
        done = [v for v in self.versions(repo) if v.id == remote.commit]
        if done and not self._repair(done[-1]) and {f.path for f in done[-1].files} >= wanted:
            for ref in refs:
                self.disk.write_text(self.layout.ref_path(repo, ref), remote.commit)
            return self.find(repo, done[-1].name) or done[-1]
        files = [f for f in remote.files if f.path in wanted]
        self._room_for(sum(self._missing_bytes(f.etag, f.size) for f in files
                           if not (f.sha256 and self.object_path(f.sha256).exists())),
                       f"the pull of {repo}@{revision}", repo)
        entries: list[FileEntry] = []
        downloaded: set[str] = set()
        try:
            with self.bar(sum(f.size for f in files), f"pull {repo}") as bar:
                for f in files:
                    entries.append(self._fetch(repo, remote.commit, f, bar.update, downloaded=downloaded,
                                               verify_stored=True))
            self._check_pulled(repo, remote.commit, entries)
            return self._commit(repo, remote.commit, entries, source=f"hub:{self.fetcher.endpoint()}",
                                revision=revision, refs=refs, access=remote.access, verified=downloaded)
        finally:
            self._pulling.release(e.sha256 for e in entries)

    def fetch_file(self, repo: str, commit: str, remote: Any, *, on_bytes: Callable[[int], None] = lambda n: None,
                   on_part: Callable[[Path], None] | None = None,
                   confirm: Callable[[], None] | None = None) -> FileEntry:
        """One file of ``repo@commit`` into the store, with no version made for it yet (see :meth:`adopt`):
        what the daemon's HTTP pull-through does for a file a client asks for. ``on_part`` is told the
        partial file before each try, so that the file can be read while it arrives. Its blob is linked
        (``blobs/<etag>``), so that it is found by its etag until a version lists it. ``confirm()`` is
        called (under the file's lock) when the content turns out to be stored already, for whatever
        repository: the daemon asks its upstream there whether ``repo`` may have it."""
        validate_repo_id(repo)
        self.disk.prepare()
        if not (remote.sha256 and self.object_path(remote.sha256).exists()):
            self._room_for(self._missing_bytes(remote.etag, remote.size), f"the download of {repo}/{remote.path}",
                           repo)
        fetched: set[str] = set()
        entry = self._fetch(repo, commit, remote, on_bytes, on_part, confirm=confirm, downloaded=fetched)
        try:
            self.link_file(repo, entry)
            if fetched and self.central is not None:  # a version of the bucket's that lists it: checked now
                self._checked(repo, entry.sha256)
        finally:
            self._pulling.release([entry.sha256])  # linked: gc takes it only as what no version lists
        return entry

    def link_file(self, repo: str, entry: FileEntry) -> None:
        """Content already stored becomes ``repo``'s too (its ``blobs/<etag>``), ahead of :meth:`adopt`."""
        validate_repo_id(repo)
        with disk_errors(str(self.home)):
            self.contents.link_blob(repo, entry)

    def adopt(self, remote: Any, entries: Iterable[FileEntry], *, refs: Iterable[str] = ()) -> Version | None:
        """Files of ``remote`` (a :class:`~zoo.store.hub.RemoteRevision`) fetched one by one become part of
        its version: added to the version of that commit if there is one, else a new version as soon as
        every file a load needs is stored. Returns the version, or None while files a load needs are missing."""
        from .select import select_files

        known = {e.path: e for e in entries}
        repo = remote.repo
        with self.disk.name_lock(repo):
            for f in remote.files:
                if f.path in known:
                    continue
                blob = self.layout.blob_path(repo, f.etag)  # this repository's: fetched for it, or confirmed
                if f.sha256 and self.object_path(f.sha256).exists() and blob.exists():
                    known[f.path] = FileEntry(f.path, f.sha256, f.size, f.etag)
                    continue
                with contextlib.suppress(OSError):
                    if blob.stat().st_size == f.size:  # a small file fetched before: hashed again (cheap)
                        sha256, sha1, size = hash_file(blob, git_sha1=True)
                        if sha1 == f.blob_id and size == f.size and self.object_path(sha256).exists():
                            known[f.path] = FileEntry(f.path, sha256, f.size, f.etag)
            done = [v for v in self.versions(repo) if v.id == remote.commit]
            wanted = select_files([f.path for f in remote.files])
            if not done and not wanted <= set(known):
                return None
            refs = [r for r in refs if r != remote.commit]
            return self._commit(repo, remote.commit, list(known.values()), source=f"hub:{self.fetcher.endpoint()}",
                                revision=refs[0] if refs else remote.commit, refs=refs, access=remote.access)

    def _fetch(self, repo: str, commit: str, remote: Any, on_bytes: Callable[[int], None],
               on_part: Callable[[Path], None] | None = None, *, confirm: Callable[[], None] | None = None,
               downloaded: set[str] | None = None, verify_stored: bool = False) -> FileEntry:
        """One file into objects/: skipped when its content is stored (after ``confirm()``, when given),
        else downloaded (resuming a dead process's partial file), checked against size and digest, and
        moved in (its path added to ``downloaded``). Until the pull commits, gc leaves it alone."""

        def stored() -> bool:
            if not (remote.sha256 and self.object_path(remote.sha256).exists()):
                return False
            if verify_stored and self.contents.check_object(  # a pull makes a version of it: the
                    FileEntry(remote.path, remote.sha256, remote.size, remote.etag)):  # stored copy is hashed
                return False  # damaged (now quarantined): fetched again below
            if confirm is not None:
                confirm()
            self._pulling.add(remote.sha256)
            on_bytes(remote.size)
            return True

        if stored():
            return FileEntry(remote.path, remote.sha256, remote.size, remote.etag)
        with self.disk.lock(f"blob-{remote.etag}", f"the download of {remote.path}"):
            if stored():
                return FileEntry(remote.path, remote.sha256, remote.size, remote.etag)
            if self.central is not None:  # the bucket first: what any daemon on it fetched is never asked again
                found = self._fetch_central(remote, on_bytes, on_part)
                if found is not None:
                    self._pulling.add(found.sha256)
                    if downloaded is not None:
                        downloaded.add(remote.path)
                    return found
            try:
                entry = self._download(repo, commit, remote, self._claiming(remote.etag, on_bytes), on_part,
                                       downloaded)
                if self.central is not None:
                    self._to_central(lambda: self.central.upload([entry]), f"{repo}/{remote.path}",
                                     "so it is not served from here (it stays in the local store until zoo gc)")
                    with contextlib.suppress(ObjectStoreError):
                        self.central.remember_etag(remote.etag, entry.sha256)
                return entry
            finally:
                if self.central is not None:
                    self.central.release(remote.etag)

    def _checked(self, repo: str, sha256: str) -> None:
        """A content fetched from the bucket was checked against its sha256 as it arrived: the versions of
        ``repo`` that list it record its object's stat, so that loads take it as checked (stat calls only)."""
        import dataclasses

        with contextlib.suppress(OSError), self.disk.name_lock(repo):
            mtime = self.object_path(sha256).stat().st_mtime_ns
            for version in self.versions(repo):
                if any(f.sha256 == sha256 and f.mtime_ns != mtime for f in version.files):
                    files = tuple(dataclasses.replace(f, mtime_ns=mtime) if f.sha256 == sha256 else f
                                  for f in version.files)
                    self.disk.write_text(version.manifest, dataclasses.replace(version, files=files).to_json())

    def _claiming(self, etag: str, on_bytes: Callable[[int], None]) -> Callable[[int], None]:
        """``on_bytes`` that also keeps this daemon's claim on ``etag`` fresh in the bucket while it downloads."""
        if self.central is None:
            return on_bytes
        last = [time.monotonic()]

        def counted(n: int) -> None:
            on_bytes(n)
            if time.monotonic() - last[0] > 20:
                last[0] = time.monotonic()
                self.central.refresh_claim(etag)

        return counted

    def _fetch_central(self, remote: Any, on_bytes: Callable[[int], None],
                       on_part: Callable[[Path], None] | None) -> FileEntry | None:
        """``remote``'s content from the bucket (checked), or None after claiming its download (this daemon
        fetches it upstream; another that claimed it first is waited for, while its claim is fresh). A bucket
        that cannot be reached, or holds damaged bytes, is logged and the upstream asked."""
        central = self.central
        deadline = time.monotonic() + 3600  # bounded: a claim refreshed for longer than this is not waited on
        wait = 0.1
        try:
            while True:
                sha256 = central.content_of(remote.etag)
                if sha256 is not None:
                    part = self.disk.tmp_name(remote.etag, ".part")
                    if on_part is not None:
                        on_part(part)
                    if central.fetch(sha256, remote.size, part, on_bytes):
                        if remote.sha256 is None and hash_file(part, git_sha1=True)[1] != remote.blob_id:
                            part.unlink()  # the bucket's etags/ said another content: the upstream decides
                            raise IntegrityError(f"{central.url}: etags/{remote.etag} names content that is not "
                                                 f"{remote.path}")
                        self.contents.add_object(part, sha256)
                        return FileEntry(remote.path, sha256, remote.size, remote.etag)
                if central.claim(remote.etag) or time.monotonic() > deadline:
                    return None
                wait = min(wait * 1.5, 2.0)
                time.sleep(wait)  # another daemon is downloading it: it lands in the bucket
        except (ObjectStoreError, IntegrityError) as exc:
            log.warning("%s: %s; asking the upstream", remote.path, exc)
            return None

    def _download(self, repo: str, commit: str, remote: Any, on_bytes: Callable[[int], None],
                  on_part: Callable[[Path], None] | None, downloaded: set[str] | None) -> FileEntry:
        """Under the blob lock: the file from the upstream, checked, into objects/."""
        part = self._adopt_part(remote.etag)
        for attempt in (1, 2):
            if on_part is not None:
                on_part(part)
            with disk_errors(str(self.tmp)):
                self.fetcher.download(repo, commit, remote, part, on_bytes)
            sha256, sha1, size = hash_file(part, git_sha1=remote.sha256 is None)
            if size == remote.size and (sha256 == remote.sha256 if remote.sha256 else sha1 == remote.blob_id):
                break
            part.unlink()
            if attempt == 2:
                raise IntegrityError(
                    f"{repo}/{remote.path}: downloaded {size} bytes with sha256 {sha256[:12]}…, expected "
                    f"{remote.size} bytes and {remote.etag[:12]}…, twice. The server or a proxy is "
                    "serving damaged data; nothing was stored"
                )
        self._pulling.add(sha256)
        self.contents.add_object(part, sha256)
        if downloaded is not None:
            downloaded.add(remote.path)
        return FileEntry(remote.path, sha256, remote.size, remote.etag)

    def _missing_bytes(self, etag: str, size: int) -> int:
        """What a download of ``etag`` (``size`` bytes) still has to write: a partial download in tmp/ is
        resumed, so only the rest needs room (counting the whole file refused every retry after a full
        disk cut a download)."""
        have = 0
        for part in self.tmp.glob(f"*.{etag}.part"):
            with contextlib.suppress(OSError):
                have = max(have, part.stat().st_size)
        return max(size - have, 0)

    def _adopt_part(self, etag: str) -> Path:
        """Under the blob lock: a partial download of ``etag`` left by a dead process, or by an earlier
        try of this one, becomes ours (resume) if we may write it; else a new name."""
        mine = self.disk.tmp_name(etag, ".part")
        ours = f"{HOST}.{os.getpid()}."
        for part in sorted(self.tmp.glob(f"*.{etag}.part")):
            if (part.name.startswith(ours) or not owner_alive(part)) and os.access(part, os.W_OK):
                try:
                    os.rename(part, mine)
                    return mine
                except OSError:
                    continue
        return mine

    def _check_pulled(self, repo: str, commit: str, entries: list[FileEntry]) -> None:
        """A pull that brings a checkpoint (a config.json and weights) passes the check loads make
        (:func:`zoo.model.checkpoint.check_folder`) before it becomes a version: files the upstream serves
        whole but that no load could use are refused now, with the reason, not at every load."""
        from ..model.checkpoint import check_folder
        from ..model.weights import WEIGHT_FORMATS

        paths = {e.path for e in entries}
        if "config.json" not in paths or not paths & set(WEIGHT_FORMATS):
            return  # not a checkpoint (a tokenizer, a dataset-like repository): nothing a load would check
        folder = self.contents.build_snapshot(repo, commit, entries)  # invisible until a manifest names it
        try:
            check_folder(folder)
        except CheckpointError as exc:
            raise CorruptCheckpointError(
                f"{repo}@{commit[:12]}, as {self.fetcher.endpoint()} serves it, is not a checkpoint zoo can load: "
                f"{exc} No version was made (zoo gc removes the files); ask the repository's owner, or pull "
                "another revision"
            ) from None


class _Held:
    """A multiset of sha256s, safe across threads: objects a pull in progress stored (gc leaves them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()

    def add(self, sha256: str) -> None:
        with self._lock:
            self._counts[sha256] += 1

    def release(self, sha256s: Iterable[str]) -> None:
        with self._lock:
            for sha in sha256s:
                self._counts[sha] -= 1
                if self._counts[sha] <= 0:
                    del self._counts[sha]

    def held(self) -> set[str]:
        with self._lock:
            return set(self._counts)
