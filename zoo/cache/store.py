"""The store: content-addressed files, immutable versions, readable as a Hugging Face hub cache.

Layout under ``$ZOO_HOME`` (default ``~/.cache/zoo``)::

    $ZOO_HOME/
    ├── objects/sha256/ab/ab12…          every distinct file content, stored once, read-only
    ├── hub/                             a Hugging Face hub cache (HF_HUB_CACHE=$ZOO_HOME/hub)
    │   └── models--org--name/
    │       ├── blobs/<etag>             hard link to objects/sha256/… (etag: sha256 for LFS files,
    │       │                            git blob sha1 for the others, as the hub sends them)
    │       ├── snapshots/<id>/<path>    relative symlink to ../../blobs/<etag>
    │       │                            <id>: the hub commit, or the content id of an import
    │       └── refs/main, refs/v1, …    the <id> each ref points to
    ├── versions/models--org--name/
    │   └── v0001.json                   the manifest of version 1; a version exists (is visible)
    │                                    exactly when this file does. Its entries never change
    │                                    (``pull --all`` of the same commit may add files)
    ├── used/models--org--name           touched on every load: "last used"
    ├── quarantine/                      objects that failed ``verify``
    ├── locks/                           filelock files (best-effort: see zoo.cache.locks)
    └── tmp/                             unique temporaries: ``<etag>.<pid>.<rand>.part`` downloads,
                                         snapshot folders being built

Rules that keep it correct without trusting the locks:

- every file is written under a unique temporary name in ``tmp/`` and moved into place by an
  atomic rename or an exclusive ``link`` (a second writer finds the content there and drops its copy);
- a snapshot folder is built in ``tmp/`` and renamed into ``snapshots/`` whole;
- the manifest is written last, after every file was checked against its size and digest, so a
  crash at any moment leaves either no version or a complete one;
- a file's content lives in one inode: ``objects/`` entry, ``blobs/`` entries of every repo and
  imported source files are hard links to it, never copies.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..errors import AmbiguousNameError, ConfigError, IntegrityError
from ..names import validate_name, validate_repo_id, validate_revision
from . import progress
from .locks import locked

LOCAL_NAMESPACE = "local"
CHUNK = 1 << 22




def default_home() -> Path:
    if os.environ.get("ZOO_HOME"):
        return Path(os.environ["ZOO_HOME"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "zoo"


def repo_folder(repo_id: str) -> str:
    """``org/name`` -> ``models--org--name``, as huggingface_hub names it."""
    return "models--" + validate_repo_id(repo_id).replace("/", "--")


def hash_file(path: Path, on_bytes: Callable[[int], None] | None = None, *,
              git_sha1: bool = False) -> tuple[str, str | None, int]:
    """sha256 (and, when asked, the git blob sha1 the hub uses as ETag of regular files) in one pass."""
    size = path.stat().st_size
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(f"blob {size}\0".encode()) if git_sha1 else None
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            sha256.update(view[:n])
            if sha1 is not None:
                sha1.update(view[:n])
            if on_bytes:
                on_bytes(n)
    return sha256.hexdigest(), sha1.hexdigest() if sha1 else None, size


@dataclass(frozen=True)
class FileEntry:
    path: str  # path inside the repository, posix
    sha256: str
    size: int
    etag: str  # the blob name in the hub layout
    mtime_ns: int = 0  # of the stored object when the version was made: a stat tells if it changed


@dataclass(frozen=True)
class Version:
    """One immutable version, as its manifest records it."""

    repo: str
    number: int
    id: str  # hub commit, or content id of an import
    source: str
    revision: str | None
    created: str
    files: tuple[FileEntry, ...]
    total_size: int
    transformers_version: str | None
    model_type: str | None
    architectures: tuple[str, ...]
    manifest: Path = field(compare=False)

    @property
    def name(self) -> str:
        return f"v{self.number}"

    @classmethod
    def read(cls, path: Path) -> "Version":
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            repo=data["repo"], number=data["number"], id=data["id"], source=data["source"],
            revision=data.get("revision"), created=data["created"],
            files=tuple(FileEntry(**f) for f in data["files"]), total_size=data["total_size"],
            transformers_version=data.get("transformers_version"), model_type=data.get("model_type"),
            architectures=tuple(data.get("architectures") or ()), manifest=path,
        )


def _config_fields(config_path: Path | None) -> dict[str, Any]:
    if config_path is None or not config_path.is_file():
        return {}
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(raw, dict):
        return {}
    arch = raw.get("architectures")
    return {
        "transformers_version": raw.get("transformers_version") if isinstance(raw.get("transformers_version"), str) else None,
        "model_type": raw.get("model_type") if isinstance(raw.get("model_type"), str) else None,
        "architectures": [a for a in arch if isinstance(a, str)] if isinstance(arch, list) else [],
    }


def content_id(files: Iterable[FileEntry]) -> str:
    """A 40-hex id of a set of files (paths and contents), shaped like a commit hash."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        h.update(f"{f.path}\0{f.sha256}\n".encode())
    return h.hexdigest()[:40]


HOST = socket.gethostname().replace(".", "_") or "localhost"
STALE_FOREIGN = 24 * 3600  # a temporary of another host is taken as abandoned after this long


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_alive(path: Path) -> bool:
    """Whether the process that named the temporary ``path`` (``<host>.<pid>.<rand>.<stem>``) may still
    be using it. Another host's processes cannot be asked: its files count as live for a day."""
    parts = path.name.split(".")
    try:
        host, pid = parts[0], int(parts[1])
    except (IndexError, ValueError):
        return False
    if host != HOST:
        try:
            return time.time() - path.lstat().st_mtime < STALE_FOREIGN
        except OSError:
            return False
    return pid == os.getpid() or _pid_alive(pid)


class Store:
    """One zoo store. Holds no global state: a daemon may drive several."""

    def __init__(self, home: str | os.PathLike[str] | None = None, *, quiet: bool | None = None) -> None:
        self.home = Path(home).expanduser() if home is not None else default_home()
        self.quiet = quiet
        self.objects = self.home / "objects" / "sha256"
        self.hub = self.home / "hub"
        self.versions_root = self.home / "versions"
        self.used_root = self.home / "used"
        self.quarantine = self.home / "quarantine"
        self.locks = self.home / "locks"
        self.tmp = self.home / "tmp"

    # -- small helpers ---------------------------------------------------------------------------

    def _mkdirs(self) -> None:
        for d in (self.objects, self.hub, self.versions_root, self.used_root, self.locks, self.tmp):
            d.mkdir(parents=True, exist_ok=True)

    def _tmp_name(self, stem: str, suffix: str = ".tmp") -> Path:
        """``tmp/<host>.<pid>.<random>.<stem><suffix>``: unique, and says who owns it (gc, resume)."""
        return self.tmp / f"{HOST}.{os.getpid()}.{uuid.uuid4().hex[:12]}.{stem}{suffix}"

    def object_path(self, sha256: str) -> Path:
        return self.objects / sha256[:2] / sha256

    def repo_path(self, repo: str) -> Path:
        return self.hub / repo_folder(repo)

    def _lock(self, key: str, what: str) -> Any:
        return locked(self.locks / f"{key}.lock", what=what)

    def lock_name(self, repo: str) -> Any:
        """The lock that pulls, imports and removals of ``repo`` hold (best-effort; see zoo.cache.locks)."""
        return self._lock(repo_folder(repo), f"the name {repo!r}")

    def _write_atomic(self, path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp_name(path.name)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)

    # -- content ---------------------------------------------------------------------------------

    def add_object(self, src: Path, sha256: str, *, keep_source: bool) -> Path:
        """Make ``src`` the stored content ``sha256``. A temporary we own is moved in (``keep_source``
        False); a user's file is hard-linked (True). Content already stored is not written again."""
        dest = self.object_path(sha256)
        if dest.exists():
            if not keep_source:
                src.unlink()
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        if keep_source:
            staged = self._tmp_name(sha256, ".link")
            try:
                os.link(src, staged)
            except OSError:  # another file system: copy once
                shutil.copyfile(src, staged)
            src = staged
        os.chmod(src, src.stat().st_mode & ~0o222 & 0o7777)  # read-only; other bits as they were
        try:
            os.link(src, dest)  # exclusive: if another writer got there first, its copy stays
        except FileExistsError:
            pass
        src.unlink()
        return dest

    def _link_blob(self, repo: str, entry: FileEntry) -> Path:
        blob = self.repo_path(repo) / "blobs" / entry.etag
        obj = self.object_path(entry.sha256)
        if blob.exists() and os.path.samestat(blob.stat(), obj.stat()):
            return blob
        blob.parent.mkdir(parents=True, exist_ok=True)
        staged = self._tmp_name(entry.etag, ".blob")
        os.link(obj, staged)
        os.replace(staged, blob)
        return blob

    # -- versions --------------------------------------------------------------------------------

    def versions(self, repo: str) -> list[Version]:
        folder = self.versions_root / repo_folder(repo)
        if not folder.is_dir():
            return []
        found = []
        for path in folder.glob("v*.json"):
            try:
                found.append(Version.read(path))
            except (ValueError, KeyError, TypeError, OSError):
                continue  # a manifest is written atomically; anything else is not ours
        return sorted(found, key=lambda v: v.number)

    def repos(self) -> list[str]:
        out = []
        for folder in sorted(self.versions_root.glob("models--*")) if self.versions_root.is_dir() else []:
            versions = sorted(folder.glob("v*.json"))
            if versions:
                try:
                    out.append(Version.read(versions[-1]).repo)
                except (ValueError, KeyError, TypeError, OSError):
                    continue
        return out

    def find(self, repo: str, spec: str | None = None) -> Version | None:
        """The version of ``repo`` that ``spec`` names: None (newest), ``v3``, a commit or content id
        (or a prefix of 7+ characters), or a ref such as ``main``. Local only: no network."""
        versions = self.versions(repo)
        if not versions:
            return None
        if spec is None:
            return versions[-1]
        if spec[:1] == "v" and spec[1:].isdigit():
            return next((v for v in versions if v.number == int(spec[1:])), None)
        ref = self.repo_path(repo) / "refs" / spec
        if "/" not in spec and ref.is_file():
            target = ref.read_text().strip()
            matches = [v for v in versions if v.id == target]
            if matches:
                return matches[-1]
        if len(spec) >= 7 and all(c in "0123456789abcdef" for c in spec.lower()):
            matches = {v.id: v for v in versions if v.id.startswith(spec.lower())}
            if len(matches) > 1:
                raise AmbiguousNameError(
                    f"{repo}@{spec} matches {len(matches)} versions ({', '.join(sorted(i[:12] for i in matches))}); "
                    "give more characters of the id, or @vN"
                )
            if matches:
                return next(iter(matches.values()))
        return None

    def snapshot(self, version: Version) -> Path:
        return self.repo_path(version.repo) / "snapshots" / version.id

    def missing_files(self, version: Version) -> list[FileEntry]:
        """Files of a version that are not in place with the right size: stat calls only, no hashing."""
        snap = self.snapshot(version)
        missing = []
        for entry in version.files:
            try:
                st = (snap / entry.path).stat()
            except OSError:
                missing.append(entry)
                continue
            if st.st_size != entry.size or (entry.mtime_ns and st.st_mtime_ns != entry.mtime_ns):
                missing.append(entry)  # gone, or rewritten in place since the version was made
        return missing

    def touch_used(self, repo: str) -> None:
        """Record a use (for ``zoo ls``); best-effort: a read-only shared store still loads."""
        path = self.used_root / repo_folder(repo)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        except OSError:
            pass

    def last_used(self, repo: str) -> float | None:
        try:
            return (self.used_root / repo_folder(repo)).stat().st_mtime
        except OSError:
            return None

    def _build_snapshot(self, repo: str, snap_id: str, entries: list[FileEntry]) -> Path:
        """Make ``snapshots/<snap_id>`` hold a symlink per entry. A new snapshot is built in tmp/ and
        renamed into place whole; an existing one gets its missing links added one atomic rename each."""
        final = self.repo_path(repo) / "snapshots" / snap_id
        final.parent.mkdir(parents=True, exist_ok=True)
        (self.repo_path(repo) / "refs").mkdir(exist_ok=True)
        for entry in entries:
            self._link_blob(repo, entry)
        if not final.is_dir():
            staged = self._tmp_name(f"snapshot-{snap_id[:12]}", "")
            for entry in entries:
                self._symlink(staged, entry)
            try:
                os.rename(staged, final)
                return final
            except OSError:  # another writer renamed its copy in first: check that one below
                shutil.rmtree(staged, ignore_errors=True)
        for entry in entries:
            target = final / entry.path
            if not (target.is_symlink() and os.readlink(target) == self._link_text(entry)):
                self._symlink(final, entry, replace=True)
        return final

    @staticmethod
    def _link_text(entry: FileEntry) -> str:
        return "../" * (entry.path.count("/") + 2) + f"blobs/{entry.etag}"

    def _symlink(self, root: Path, entry: FileEntry, *, replace: bool = False) -> None:
        target = root / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if not replace:
            os.symlink(self._link_text(entry), target)
            return
        staged = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        os.symlink(self._link_text(entry), staged)
        os.replace(staged, target)

    def _check_shards(self, repo: str, entries: list[FileEntry]) -> None:
        """A sharded checkpoint is complete only if every shard its index names is among the files."""
        paths = {e.path for e in entries}
        for entry in entries:
            if not entry.path.endswith(".index.json"):
                continue
            try:
                data = json.loads(self.object_path(entry.sha256).read_text(encoding="utf-8"))
                shards = set(data["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise IntegrityError(f"{repo}: {entry.path} is not a valid shard index ({exc}); nothing was stored") from exc
            prefix = entry.path.rpartition("/")[0]
            missing = sorted(s for s in shards if (f"{prefix}/{s}" if prefix else s) not in paths)
            if missing:
                raise IntegrityError(
                    f"{repo}: {entry.path} lists {len(shards)} shards but {', '.join(missing[:5])} "
                    f"{'is' if len(missing) == 1 else 'are'} not among the files; the checkpoint is incomplete, "
                    "so no version was made. Save or upload it again"
                )

    def _commit(self, repo: str, snap_id: str, entries: list[FileEntry], *, source: str,
                revision: str | None, refs: Iterable[str]) -> Version:
        """Make a version visible: snapshot in place, then the manifest (exclusive create), then refs."""
        self._check_shards(repo, entries)
        entries = [dataclasses.replace(e, mtime_ns=self.object_path(e.sha256).stat().st_mtime_ns) for e in entries]
        self._build_snapshot(repo, snap_id, entries)
        existing = [v for v in self.versions(repo) if v.id == snap_id]
        if existing:
            version = existing[-1]
            added = {e.path: e for e in entries if e.path not in {f.path for f in version.files}}
            if added:  # more files of the same commit (pull --all): the version gains them
                data = json.loads(version.manifest.read_text(encoding="utf-8"))
                files = sorted([*version.files, *added.values()], key=lambda e: e.path)
                data["files"] = [e.__dict__ for e in files]
                data["total_size"] = sum(e.size for e in files)
                self._write_atomic(version.manifest, json.dumps(data, indent=2))
                version = Version.read(version.manifest)
        else:
            config = next((e for e in entries if e.path == "config.json"), None)
            fields = _config_fields(self.object_path(config.sha256) if config else None)
            folder = self.versions_root / repo_folder(repo)
            folder.mkdir(parents=True, exist_ok=True)
            number = max((v.number for v in self.versions(repo)), default=0) + 1
            data = {
                "repo": repo, "id": snap_id, "source": source, "revision": revision,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "files": [e.__dict__ for e in sorted(entries, key=lambda e: e.path)],
                "total_size": sum(e.size for e in entries),
                "transformers_version": fields.get("transformers_version"),
                "model_type": fields.get("model_type"),
                "architectures": fields.get("architectures", []),
            }
            staged = self._tmp_name("manifest")
            while True:  # exclusive create: two writers never share a number
                staged.write_text(json.dumps({"number": number, **data}, indent=2), encoding="utf-8")
                try:
                    os.link(staged, folder / f"v{number:04d}.json")
                    break
                except FileExistsError:
                    number += 1
            staged.unlink()
            version = Version.read(folder / f"v{number:04d}.json")
            # Without a working lock two writers may both number the same content: the lowest number
            # stays, the others are withdrawn (they were complete copies, so no reader saw a partial one).
            twins = [v for v in self.versions(repo) if v.id == snap_id and v.number < version.number]
            if twins:
                version.manifest.unlink(missing_ok=True)
                version = twins[0]
        newest = max(v.number for v in self.versions(repo))
        for ref in {*refs, version.name}:
            if ref == "main" and repo.startswith(LOCAL_NAMESPACE + "/") and version.number != newest:
                continue  # an import's main is its newest version, as the plain name loads it
            self._write_atomic(self.repo_path(repo) / "refs" / ref, snap_id)
        return version

    # -- imports ---------------------------------------------------------------------------------

    def import_dir(self, directory: str | os.PathLike[str], name: str, *, copy: bool = False,
                   source: str | None = None) -> Version:
        """Ingest a saved directory as a new version of ``local/<name>`` (or return the version that
        already holds exactly this content). Files are hard-linked into the store, not copied, unless
        ``copy``; they become read-only."""
        directory = Path(directory).expanduser().resolve()
        validate_name(name)
        if not (directory / "config.json").is_file():
            raise ConfigError(
                f"{directory} has no config.json: zoo import takes a directory written by zoo.save or "
                "save_pretrained"
            )
        repo = f"{LOCAL_NAMESPACE}/{name}"
        self._mkdirs()
        # Symlinked files are followed (a Hugging Face snapshot is all symlinks into its blobs).
        files = sorted(
            p for p in directory.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
        )
        total = sum(p.stat().st_size for p in files)
        entries = []
        known = self._linked_digests(repo)
        with progress.bar(total, f"import {name}", self.quiet) as bar:
            for path in files:
                st = path.stat()
                sha256 = known.get((st.st_dev, st.st_ino, st.st_size))
                if sha256 is None:  # not already one of our read-only objects: hash it
                    sha256, _, _ = hash_file(path, bar.update)
                else:
                    bar.update(st.st_size)
                size = st.st_size
                self.add_object(path, sha256, keep_source=True) if not copy else self._copy_in(path, sha256)
                entries.append(FileEntry(path.relative_to(directory).as_posix(), sha256, size, sha256))
        snap_id = content_id(entries)
        with self.lock_name(repo):
            return self._commit(repo, snap_id, entries, source=source or f"import:{directory}",
                                revision=None, refs=["main"])

    def _linked_digests(self, repo: str) -> dict[tuple[int, int, int], str]:
        """(device, inode, size) -> sha256 of the objects of ``repo``'s versions. A source file that is
        the same inode as a stored object (an earlier import linked it) is not hashed again."""
        known = {}
        for version in self.versions(repo):
            created = datetime.fromisoformat(version.created).timestamp()
            for entry in version.files:
                try:
                    st = self.object_path(entry.sha256).stat()
                except OSError:
                    continue
                # Read-only and not modified since the version was made: the digest still holds.
                if st.st_size == entry.size and not st.st_mode & 0o222 and st.st_mtime <= created + 1:
                    known[(st.st_dev, st.st_ino, st.st_size)] = entry.sha256
        return known

    def _copy_in(self, path: Path, sha256: str) -> None:
        if self.object_path(sha256).exists():
            return
        staged = self._tmp_name(sha256, ".copy")
        shutil.copyfile(path, staged)
        self.add_object(staged, sha256, keep_source=False)

    # -- hub pulls -------------------------------------------------------------------------------

    def pull(self, repo: str, revision: str = "main", *, all_files: bool = False,
             if_missing: bool = False) -> Version:
        """Download ``repo`` at ``revision`` (only what loading needs unless ``all_files``) into a
        complete, verified version. Files already stored are not downloaded again.

        ``if_missing``: first look in the store, under the name's lock, and make no request at all
        when a complete version for ``revision`` is there; N processes asking for one uncached model
        then cost the hub one set of requests, not N.
        """
        from . import hub
        from .select import select_files

        validate_repo_id(repo)
        validate_revision(revision)
        self._mkdirs()
        with self.lock_name(repo):
            if if_missing:
                cached = self.find(repo, revision)
                if cached is not None and not self.missing_files(cached):
                    return cached
            remote = hub.fetch_revision(repo, revision)
            wanted = select_files([f.path for f in remote.files], all_files=all_files)
            done = [v for v in self.versions(repo) if v.id == remote.commit]
            if done and not self.missing_files(done[-1]) and {f.path for f in done[-1].files} >= wanted:
                for ref in {revision} - {remote.commit}:
                    self._write_atomic(self.repo_path(repo) / "refs" / ref, remote.commit)
                return done[-1]
            files = [f for f in remote.files if f.path in wanted]
            entries = []
            with progress.bar(sum(f.size for f in files), f"pull {repo}", self.quiet) as bar:
                for f in files:
                    entries.append(self._fetch(repo, remote.commit, f, bar.update))
            refs = [revision] if revision != remote.commit else []
            return self._commit(repo, remote.commit, entries, source=f"hub:{hub.endpoint()}",
                                revision=revision, refs=refs)

    def _fetch(self, repo: str, commit: str, remote: Any, on_bytes: Callable[[int], None]) -> FileEntry:
        """One file into objects/: skipped when its content is stored, else downloaded (resuming a
        dead process's partial file), checked against size and digest, and moved in."""
        from . import hub

        if remote.sha256 and self.object_path(remote.sha256).exists():
            on_bytes(remote.size)
            return FileEntry(remote.path, remote.sha256, remote.size, remote.etag)
        with self._lock(f"blob-{remote.etag}", f"the download of {remote.path}"):
            if remote.sha256 and self.object_path(remote.sha256).exists():
                on_bytes(remote.size)
                return FileEntry(remote.path, remote.sha256, remote.size, remote.etag)
            part = self._adopt_part(remote.etag)
            for attempt in (1, 2):
                hub.download(repo, commit, remote, part, on_bytes)
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
            self.add_object(part, sha256, keep_source=False)
            return FileEntry(remote.path, sha256, remote.size, remote.etag)

    def _adopt_part(self, etag: str) -> Path:
        """A partial download of ``etag`` left by a dead process becomes ours (resume); else a new name."""
        mine = self._tmp_name(etag, ".part")
        for part in sorted(self.tmp.glob(f"*.{etag}.part")):
            if not owner_alive(part):
                try:
                    os.rename(part, mine)
                    return mine
                except OSError:
                    continue
        return mine

    # -- maintenance -----------------------------------------------------------------------------

    def iter_versions(self) -> Iterator[Version]:
        for repo in self.repos():
            yield from self.versions(repo)

    def verify(self, repo: str | None = None) -> list[tuple[Version, FileEntry, str]]:
        """Re-hash every file (of ``repo``, or of the store). A damaged object is moved to quarantine/
        and unlinked from the hub layout, so the next pull fetches it again. Returns the problems."""
        problems = []
        checked: dict[str, str | None] = {}
        versions = self.versions(repo) if repo else list(self.iter_versions())
        total = sum(e.size for v in versions for e in v.files)
        with progress.bar(total, "verify", self.quiet) as bar:
            for version in versions:
                for entry in version.files:
                    if entry.sha256 not in checked:
                        checked[entry.sha256] = self._check_object(entry, bar.update)
                    problem = checked[entry.sha256]
                    if problem:
                        problems.append((version, entry, problem))
        bad = {entry.sha256 for _, entry, _ in problems}
        for version in self.iter_versions() if bad else ():  # every repo sharing the content, not only ``repo``
            for entry in version.files:
                blob = self.repo_path(version.repo) / "blobs" / entry.etag
                if entry.sha256 in bad and (blob.exists() or blob.is_symlink()):
                    blob.unlink()
        return problems

    def _check_object(self, entry: FileEntry, on_bytes: Callable[[int], None]) -> str | None:
        obj = self.object_path(entry.sha256)
        if not obj.exists():
            on_bytes(entry.size)
            return "missing"
        sha256, _, size = hash_file(obj, on_bytes)
        if sha256 == entry.sha256 and size == entry.size:
            return None
        self.quarantine.mkdir(parents=True, exist_ok=True)
        os.replace(obj, self.quarantine / f"{entry.sha256}.{int(time.time())}")
        return f"content changed (size {size}, sha256 {sha256[:12]}…)"
