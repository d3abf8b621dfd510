"""The central tier in a bucket: what a store keeps in object storage (``zoo daemon --object-store s3://...``)
and how several daemons share it without a lock server of zoo's own.

Keys, under the bucket's prefix::

    objects/sha256/ab/<sha256>          every content, once (create-only: If-None-Match: *)
    versions/models--org--name/v0003.json  a version record (a manifest), written after its objects:
                                          a version is in the bucket only once all it lists is there
    removed/models--org--name/v0003.json   a removed version's number and id (``zoo rm``): the other daemons
                                          drop their copy of exactly that version, and the number is never reused
    refs/models--org--name/<ref>        a hub repository's branch or tag as the upstream last said
    listings/models--org--name/<commit>.json  the upstream's listing of a commit (files, sizes, digests)
    etags/<etag>                        the sha256 of a file the hub names by its git sha1
    claims/<etag>                       "a daemon is downloading this now": the others wait for it

The local store is a cache of the bucket: :meth:`Central.sync` writes a local manifest for every record the
store lacks (no bytes move); a file is fetched from the bucket when a load or a client asks for it, checked
against its sha256 before it is stored or served. Version numbers are claimed in the bucket with a
create-only write, so two daemons never give one number to two versions. A daemon drops a version of its own
only on positive evidence (a ``removed/`` record with the same id), never because a listing lacks it: an
empty, replaced or unreachable bucket costs no local copy. The bucket is reached only on a miss or a write:
a warm load never waits on it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import quote

from ..errors import IntegrityError, ObjectStoreError, ZooError
from .disk import Disk
from .hub import RemoteFile, RemoteRevision, _check_path
from .layout import Layout, repo_folder
from .manifests import FileEntry, Version
from .s3 import Bucket

log = logging.getLogger("zoo.store")
CONFIG = "objectstore.json"
CLAIM_STALE = 120.0  # seconds without progress after which a claim is taken over (its daemon died)
_HEX = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?\Z")
_RECORD = re.compile(r"^(versions|removed)/(models--[^/]+)/v(\d{4,9})\.json\Z")


@dataclass(frozen=True)
class Usage:
    """What the bucket holds and what of it is also on this machine's disk."""

    versions: int
    objects: int
    bytes: int
    local_objects: int
    local_bytes: int

    @property
    def bucket_only_bytes(self) -> int:
        return self.bytes - self.local_bytes


class Central:
    """One store's bucket."""

    def __init__(self, layout: Layout, disk: Disk, url: str) -> None:
        self.layout, self.disk = layout, disk
        self.bucket = Bucket(url)
        self.url = self.bucket.url
        self.gone: set[tuple[str, int, str]] = set()  # (folder, number, id) removed in the bucket: dropped here
        self.kept: set[tuple[str, int, str]] = set()  # ... kept here all the same (aliased, or in use): logged once
        self._damaged: set[str] = set()  # objects found damaged in the bucket: the next upload replaces them
        self._lock = threading.Lock()
        self.last_error: str | None = None  # the last failure to reach the bucket (zoo daemon status)
        self.last_sync: float | None = None

    # -- where it is configured --------------------------------------------------------------------

    @classmethod
    def configured(cls, layout: Layout, disk: Disk) -> "Central | None":
        """The store's object store, as the daemon that serves it recorded it (``$ZOO_HOME/objectstore.json``)."""
        try:
            url = json.loads((layout.home / CONFIG).read_text(encoding="utf-8")).get("url")
        except (OSError, ValueError, AttributeError):
            return None
        return cls(layout, disk, url) if isinstance(url, str) else None

    def remember(self) -> None:
        """Record the object store in the store, so that ``zoo ls``/``du``/``verify``/``gc`` show the bucket."""
        self.disk.write_text(self.layout.home / CONFIG, json.dumps({"url": self.url}) + "\n")

    # -- keys ----------------------------------------------------------------------------------------

    @staticmethod
    def object_key(sha256: str) -> str:
        return f"objects/sha256/{sha256[:2]}/{sha256}"

    @staticmethod
    def record_key(repo: str, number: int) -> str:
        return f"versions/{repo_folder(repo)}/v{number:04d}.json"

    @staticmethod
    def _ref_key(repo: str, ref: str) -> str:
        return f"refs/{repo_folder(repo)}/{quote(ref, safe='')}"

    @staticmethod
    def _listing_key(repo: str, commit: str) -> str:
        return f"listings/{repo_folder(repo)}/{commit}.json"

    # -- writing: objects before the record ----------------------------------------------------------

    def upload(self, entries: Iterable[FileEntry], on_bytes: Callable[[int], None] | None = None) -> int:
        """Put every object ``entries`` list into the bucket (those not there yet, and those found damaged
        there), each hashed first: bytes that are not their sha256 never go to the bucket. Returns bytes sent."""
        from .content import hash_file

        sent = 0
        for entry in {e.sha256: e for e in entries}.values():  # asked each time: zoo gc may have taken one
            key = self.object_key(entry.sha256)
            with self._lock:
                damaged = entry.sha256 in self._damaged
            if not damaged and self.bucket.head(key) == entry.size:
                continue
            path = self.layout.object_path(entry.sha256)
            if hash_file(path)[0] != entry.sha256:
                raise IntegrityError(f"{path} is not the content it is stored as (sha256 {entry.sha256[:12]}…): "
                                     "it was not sent to the object store; zoo verify quarantines it")
            if damaged:
                self.bucket.put_path(key, path)
                with self._lock:
                    self._damaged.discard(entry.sha256)
                sent += entry.size
            elif self.bucket.put_new(key, path, on_bytes):
                sent += entry.size
            elif self.bucket.head(key) != entry.size:  # someone else's object of that key, and wrong
                raise ObjectStoreError(f"{self.url}: {key} exists with another size than {entry.size}; it is "
                                       "damaged: delete it (zoo verify names every such object)")
        return sent

    def publish(self, version: Version, *, replace_existing: bool = False) -> bool:
        """Write ``version``'s record (its objects are in the bucket already). False: that number is taken (by
        a version, or a removed one). ``replace_existing``: more files of the same version (``pull --all``),
        written only over a record of the same id."""
        data = _record_bytes(version)
        key = self.record_key(version.repo, version.number)
        if self.bucket.head(self._removed_key(version.repo, version.number)) is not None:
            return False  # the number of a removed version: never given again
        if replace_existing:
            theirs = self.bucket.get_bytes(key, limit=1 << 24)
            try:
                same = theirs is None or json.loads(theirs).get("id") == version.id
            except (ValueError, AttributeError):
                same = False
            if not same:
                raise ObjectStoreError(f"{self.url}: {key} is another version (another daemon numbered it first); "
                                       f"{version.repo} {version.name} stays on this machine only")
            self.bucket.put(key, data)
            return True
        return self.bucket.put_new(key, data)

    @staticmethod
    def _removed_key(repo: str, number: int) -> str:
        return f"removed/{repo_folder(repo)}/v{number:04d}.json"

    def unpublish(self, versions: Iterable[Version], *, removed: bool = True) -> None:
        """``zoo rm``: a ``removed/`` record first (the other daemons drop exactly that version; its number is
        never given again), then the record (objects: ``zoo gc``). ``removed=False``: a record withdrawn
        because its content got another number first (nothing removed)."""
        for version in versions:
            if removed:
                self.bucket.put(self._removed_key(version.repo, version.number),
                                json.dumps({"id": version.id, "time": time.time()}).encode())
            self.bucket.delete(self.record_key(version.repo, version.number))

    def put_refs(self, repo: str, refs: Iterable[str], commit: str) -> None:
        now = time.time()
        for ref in refs:
            if ref != commit:
                self.bucket.put(self._ref_key(repo, ref), json.dumps({"commit": commit, "time": now}).encode())

    def put_listing(self, remote: RemoteRevision) -> None:
        data = {"revision": remote.revision, "access": remote.access, "last_modified": remote.last_modified,
                "files": [{"path": f.path, "size": f.size, "sha256": f.sha256, "blob_id": f.blob_id}
                          for f in remote.files]}
        self.bucket.put_new(self._listing_key(remote.repo, remote.commit), json.dumps(data).encode())
        self.put_refs(remote.repo, [remote.revision], remote.commit)

    # -- reading records -----------------------------------------------------------------------------

    def records(self, repo: str | None = None, kind: str = "versions") -> dict[tuple[str, int], int]:
        """(repository folder, number) -> record size, for every version record (``kind="removed"``: every
        record of a removed version) of ``repo``, or of the bucket."""
        out = {}
        for item in self.bucket.list(f"{kind}/{repo_folder(repo)}/" if repo else f"{kind}/"):
            match = _RECORD.match(item.key)
            if match and match[1] == kind:
                out[(match[2], int(match[3]))] = item.size
        return out

    def highest(self, repo: str) -> int:
        """The highest number the bucket gave a version of ``repo``, removed ones included (0: none)."""
        numbers = [n for _, n in (*self.records(repo), *self.records(repo, "removed"))]
        return max(numbers, default=0)

    def removed(self, repo: str | None = None) -> dict[tuple[str, int], str]:
        """(folder, number) -> id of each removed version (of ``repo``)."""
        out = {}
        for folder, number in self.records(repo, "removed"):
            data = self.bucket.get_bytes(f"removed/{folder}/v{number:04d}.json", limit=4096)
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                rid = json.loads(data).get("id") if data else None
                if isinstance(rid, str) and _HEX.match(rid):
                    out[(folder, number)] = rid
        return out

    def read_record(self, folder: str, number: int, home_folder: Path) -> Version:
        """The record's version, checked as a manifest from anyone would be (paths, digests, its own key)."""
        key = f"versions/{folder}/v{number:04d}.json"
        data = self.bucket.get_bytes(key, limit=1 << 24)
        if data is None:
            raise ObjectStoreError(f"{self.url}: {key} was removed meanwhile", code="NoSuchKey")
        try:
            raw = json.loads(data)
            files = tuple(FileEntry(str(f["path"]), str(f["sha256"]), int(f["size"]), str(f["etag"]))
                          for f in raw["files"])
            version = Version(
                repo=str(raw["repo"]), number=int(raw["number"]), id=str(raw["id"]), source=str(raw["source"]),
                revision=raw.get("revision"), created=str(raw["created"]), files=files,
                total_size=sum(f.size for f in files), transformers_version=raw.get("transformers_version"),
                model_type=raw.get("model_type"), architectures=tuple(raw.get("architectures") or ()),
                manifest=home_folder / f"v{number:04d}.json", access=raw.get("access"), uid=raw.get("uid"),
                user=raw.get("user"), host=raw.get("host"), base=raw.get("base"), description=raw.get("description"))
            if repo_folder(version.repo) != folder or version.number != number or not _HEX.match(version.id):
                raise ValueError("its repository, number or id does not match its key")
            for f in files:
                _check_path(key, f.path)
                if not _HEX.match(f.sha256) or len(f.sha256) != 64 or not _HEX.match(f.etag) or f.size < 0:
                    raise ValueError(f"{f.path}: a digest or size that is not one")
        except (ValueError, KeyError, TypeError, AttributeError, ZooError) as exc:
            raise ObjectStoreError(f"{self.url}: {key} is not a zoo version record ({exc}); something other than "
                                   "zoo wrote it: delete it") from None
        return version

    def sync(self, repo: str | None = None) -> int:
        """Write a local manifest for each version record of the bucket (of ``repo``) the store lacks, and note
        in :attr:`gone` the local versions the bucket records as removed (``zoo rm`` on another daemon), matched
        by number and id. Returns the number of manifests written. No bytes move."""
        found = self.records(repo)
        for (folder, number), rid in self.removed(repo).items():  # removed there: dropped here, if the same
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                local = json.loads((self.layout.versions_root / folder / f"v{number:04d}.json").read_text())
                if local.get("id") == rid and (folder, number, rid) not in self.kept:
                    with self._lock:
                        self.gone.add((folder, number, rid))
        written = 0
        for (folder, number) in sorted(found):
            local = self.layout.versions_root / folder / f"v{number:04d}.json"
            if local.exists() or any(g[:2] == (folder, number) for g in self.gone):
                continue
            try:
                version = self.read_record(folder, number, local.parent)
            except ObjectStoreError as exc:
                if exc.code != "NoSuchKey":
                    log.warning("%s", exc)
                continue
            files = []
            for f in version.files:  # a content stored here already is ours, checked when it was stored
                with contextlib.suppress(OSError):
                    f = replace(f, mtime_ns=self.layout.object_path(f.sha256).stat().st_mtime_ns)
                files.append(f)
            version = replace(version, files=tuple(files))
            self.disk.mkdir(local.parent)
            staged = self.disk.tmp_name("manifest")
            staged.write_text(version.to_json(), encoding="utf-8")
            self.disk.seal(staged)
            from .. import atomic

            if atomic.link_exclusive(staged, local):
                written += 1
            staged.unlink()
        self.last_sync, self.last_error = time.time(), None
        return written

    # -- reading content -----------------------------------------------------------------------------

    def fetch(self, sha256: str, size: int, dest: Path, on_bytes: Callable[[int], None] | None = None) -> bool:
        """Fetch the object ``sha256`` into ``dest`` (written in order: it can be read while it grows) and
        check it. False when the bucket does not have it; :class:`IntegrityError` when what it has is not those
        bytes (then nothing is kept: never stored, never served)."""
        key = self.object_key(sha256)
        digest, got = _Hasher(), 0  # hashed on a thread of its own, while the next bytes arrive
        try:
            with open(dest, "wb") as f:
                for chunk in self.bucket.stream(key):
                    f.write(chunk)
                    digest.update(chunk)
                    got += len(chunk)
                    if on_bytes:
                        on_bytes(len(chunk))
                    if got > size:
                        break
        except ObjectStoreError as exc:
            digest.hexdigest()
            dest.unlink(missing_ok=True)
            if exc.code == "NoSuchKey":
                return False
            raise
        except BaseException:
            digest.hexdigest()
            dest.unlink(missing_ok=True)
            raise
        if digest.hexdigest() != sha256 or got != size:
            dest.unlink(missing_ok=True)
            with self._lock:
                self._damaged.add(sha256)  # good bytes, once this store has them, replace it there
            raise IntegrityError(f"{self.url}: {key} is damaged in the bucket ({got} bytes, sha256 "
                                 f"{digest.hexdigest()[:12]}…, expected {size} bytes); it was not used. zoo verify "
                                 "reports every such object")
        return True

    def content_of(self, etag: str) -> str | None:
        """The sha256 of the hub file ``etag`` if the bucket has its content."""
        if len(etag) == 64:
            sha256 = etag
        else:
            data = self.bucket.get_bytes(f"etags/{etag}", limit=256)
            sha256 = data.decode("ascii", "replace").strip() if data else None
            if not sha256 or len(sha256) != 64 or not _HEX.match(sha256):
                return None
        return sha256 if self.bucket.head(self.object_key(sha256)) is not None else None

    def remember_etag(self, etag: str, sha256: str) -> None:
        if etag != sha256:
            self.bucket.put_new(f"etags/{etag}", sha256.encode())

    @staticmethod
    def _claim_body() -> bytes:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}).encode()

    @staticmethod
    def _mine(data: bytes | None) -> bool:
        try:
            claim = json.loads(data) if data else {}
            return claim.get("host") == socket.gethostname() and claim.get("pid") == os.getpid()
        except (ValueError, AttributeError):
            return False

    def claim(self, etag: str) -> bool:
        """Take the download of ``etag`` (create-only). False: another daemon has it, and is alive."""
        key = f"claims/{etag}"
        body = self._claim_body()
        if self.bucket.put_new(key, body):
            return True
        data = self.bucket.get_bytes(key, limit=4096)
        try:
            stale = data is None or abs(time.time() - float(json.loads(data)["time"])) > CLAIM_STALE
        except (ValueError, KeyError, TypeError):
            stale = True
        if stale:  # its daemon died (or never wrote it whole): take it over
            self.bucket.put(key, body)
            return True
        return False

    def release(self, etag: str) -> None:
        """Drop this process's claim on ``etag`` (another's, taken over meanwhile, stays)."""
        with contextlib.suppress(ObjectStoreError):
            if self._mine(self.bucket.get_bytes(f"claims/{etag}", limit=4096)):
                self.bucket.delete(f"claims/{etag}")

    def refresh_claim(self, etag: str) -> None:
        with contextlib.suppress(ObjectStoreError):
            if self._mine(self.bucket.get_bytes(f"claims/{etag}", limit=4096)):
                self.bucket.put(f"claims/{etag}", self._claim_body())

    def claimed(self, etag: str) -> bool:
        data = self.bucket.get_bytes(f"claims/{etag}", limit=4096)
        try:
            return data is not None and time.time() - float(json.loads(data)["time"]) <= CLAIM_STALE
        except (ValueError, KeyError, TypeError):
            return False

    def remote_revision(self, repo: str, revision: str, max_age: float | None) -> tuple[RemoteRevision, float] | None:
        """The upstream's answer for ``repo@revision`` as a daemon on this bucket recorded it, and its age in
        seconds (no older than ``max_age`` for a branch or tag; a commit's listing never changes: age 0)."""
        when = time.time()
        if _HEX.match(revision) and len(revision) == 40:
            commit = revision
        else:
            data = self.bucket.get_bytes(self._ref_key(repo, revision), limit=4096)
            if not data:
                return None
            try:
                ref = json.loads(data)
                commit, when = str(ref["commit"]), float(ref["time"])
            except (ValueError, KeyError, TypeError):
                return None
            age = time.time() - when  # another machine's clock: one far ahead of ours is not trusted
            if not (_HEX.match(commit) and len(commit) == 40) or age < -60 or (max_age is not None and age > max_age):
                return None
        data = self.bucket.get_bytes(self._listing_key(repo, commit), limit=1 << 24)
        if data is None:
            return None
        try:
            raw = json.loads(data)
            files = tuple(RemoteFile(str(f["path"]), int(f["size"]), f.get("sha256"), str(f["blob_id"]))
                          for f in raw["files"])
            for f in files:
                _check_path(repo, f.path)
                if not _HEX.match(f.blob_id) or (f.sha256 is not None and not (_HEX.match(f.sha256)
                                                                               and len(f.sha256) == 64)):
                    raise ValueError(f"{f.path}: bad digest")
            return RemoteRevision(repo, revision, commit, files, str(raw.get("access", "public")),
                                  raw.get("last_modified")), max(time.time() - when, 0.0)
        except (ValueError, KeyError, TypeError, AttributeError, ZooError) as exc:
            log.warning("%s: the listing of %s@%s in the bucket is not one (%s); the upstream is asked",
                        self.url, repo, commit[:12], exc)
            return None

    # -- what is where -------------------------------------------------------------------------------

    def usage(self) -> Usage:
        objects = {item.key.rsplit("/", 1)[-1]: item.size for item in self.bucket.list("objects/sha256/")}
        local = {sha: size for sha, size in objects.items() if self.layout.object_path(sha).exists()}
        return Usage(len(self.records()), len(objects), sum(objects.values()), len(local), sum(local.values()))

    def missing_objects(self) -> list[tuple[str, int, FileEntry, str]]:
        """Every file a version record lists whose object the bucket lacks or holds at another size."""
        objects = {item.key.rsplit("/", 1)[-1]: item.size for item in self.bucket.list("objects/sha256/")}
        problems = []
        for folder, number in sorted(self.records()):
            with contextlib.suppress(ObjectStoreError):
                version = self.read_record(folder, number, self.layout.versions_root / folder)
                for f in version.files:
                    if objects.get(f.sha256) != f.size:
                        problems.append((version.repo, number, f, "missing from the bucket" if f.sha256 not in objects
                                         else f"{objects[f.sha256]} bytes in the bucket, {f.size} listed"))
        return problems

    def gc(self, *, grace: float, dry_run: bool = False) -> tuple[int, int, int]:
        """Delete objects no version record lists (older than ``grace`` seconds), abort multipart uploads and
        drop claims older than that. Returns (objects, bytes, uploads)."""
        objects = list(self.bucket.list("objects/sha256/"))  # before the records: a record written meanwhile
        listed: set[str] = set()                              # names objects this gc then keeps
        seen = set(self.records())
        for folder, number in seen:
            try:
                listed.update(f.sha256 for f in self.read_record(folder, number, self.layout.versions_root).files)
            except ObjectStoreError as exc:
                if exc.code == "NoSuchKey":
                    continue
                raise  # an unreadable record: nothing is deleted (its objects might be anything)
        for folder, number in set(self.records()) - seen:  # records written while this gc read: theirs stay
            try:
                listed.update(f.sha256 for f in self.read_record(folder, number, self.layout.versions_root).files)
            except ObjectStoreError as exc:
                if exc.code != "NoSuchKey":
                    raise
        now = time.time()
        count = freed = 0
        for item in objects:
            if item.key.rsplit("/", 1)[-1] not in listed and now - item.modified > grace:
                count, freed = count + 1, freed + item.size
                if not dry_run:
                    self.bucket.delete(item.key)
        uploads = [(k, u) for k, u, started in self.bucket.uploads() if now - started > grace]
        for item in list(self.bucket.list("claims/")):
            if now - item.modified > max(grace, CLAIM_STALE) and not dry_run:
                self.bucket.delete(item.key)
        if not dry_run:
            for key, upload in uploads:
                self.bucket.abort_upload(key, upload)
        return count, freed, len(uploads)


class _Hasher:
    """sha256 of what ``update`` is given, computed on a thread of its own (hashlib lets go of the GIL), so that
    reading the next bytes from the socket and hashing the last ones overlap. At most 8 chunks wait."""

    def __init__(self) -> None:
        import queue

        self._queue: queue.Queue = queue.Queue(maxsize=8)
        self._digest = hashlib.sha256()
        self._thread = threading.Thread(target=self._run, name="zoo-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self._digest.update(chunk)

    def update(self, chunk: bytes) -> None:
        self._queue.put(chunk)

    def hexdigest(self) -> str:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        return self._digest.hexdigest()


def _record_bytes(version: Version) -> bytes:
    """A manifest as the bucket keeps it: without this machine's stat of its objects."""
    return replace(version, files=tuple(replace(f, mtime_ns=0) for f in version.files)).to_json().encode()


__all__ = ["CONFIG", "Central", "Usage"]
