"""The store: content-addressed files, immutable versions, readable as a Hugging Face hub cache.

The layout is drawn in :mod:`zoo.cache.layout`. :class:`Store` reads it without locks (a warm load is a
few ``stat`` calls) and is the one writer of it in direct mode: every write goes through the methods of
:class:`zoo.cache.protocol.CacheWriter` (``ensure``, ``pull``, ``import_dir``, ``remove``, ``gc``,
``verify``), and each takes its own locks. Rules that keep it correct without trusting the locks:

- every file is written under a unique temporary name in ``tmp/`` (:mod:`zoo.cache.atomic`) and moved
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

import collections
import contextlib
import dataclasses
import errno
import grp
import hashlib
import json
import os
import pwd
import shutil
import stat
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..errors import (
    AmbiguousNameError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    IntegrityError,
    OfflineError,
    StoreAccessError,
    StoreFullError,
)
from ..names import is_local, local_repo, validate_name, validate_repo_id, validate_revision, version_number
from . import atomic, progress
from .atomic import HOST, owner_alive  # noqa: F401  (re-exported: tests and the daemon name temporaries)
from .layout import Layout, default_home, repo_folder  # noqa: F401
from .locks import locked
from .manifests import FileEntry, Version, config_fields, content_id, read_folder

CHUNK = 1 << 22


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


def copy_hashing(src: Path, dest: Path, on_bytes: Callable[[int], None] | None = None) -> tuple[str, int]:
    """Copy ``src`` to the new file ``dest`` in the kernel (``copy_file_range``: no trip through Python,
    about 3x faster than reading and writing here), then hash the copy, which is ours and cannot change
    meanwhile, so the digest is always of the stored bytes. Returns (sha256, size)."""
    with open(src, "rb") as fin, open(dest, "xb") as fout:
        size = os.fstat(fin.fileno()).st_size
        done = 0
        try:
            while done < size:
                n = os.copy_file_range(fin.fileno(), fout.fileno(), size - done)
                if n == 0:
                    break  # the source shrank meanwhile: the hash below is of what was copied
                done += n
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP) or done:
                raise
            shutil.copyfileobj(fin, fout, CHUNK)
    sha256, _, size = hash_file(dest, on_bytes)
    return sha256, size


@contextlib.contextmanager
def _disk_errors(where: str) -> Iterator[None]:
    """OSErrors of writing into the store become zoo errors that name the store, not the source."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StoreFullError(
                f"no space left on the device of {where} ({exc.strerror}); nothing partial was kept. Free space "
                "(zoo gc, zoo rm NAME@vN) or point ZOO_HOME at a larger disk"
            ) from None
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise StoreAccessError(
                f"cannot write to {where} ({exc.strerror}: {exc.filename}). The store belongs to another user "
                "or is read-only: ask its owner to pull it (or to add you to the store's group), or use a store "
                "of your own with ZOO_HOME=DIR"
            ) from None
        raise


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


FREE_MARGIN = 64 * 2**20  # bytes a pull leaves free on the disk, beyond what it brings


def check_free_space(store: "Store", incoming: int, *, what: str = "", margin: int = FREE_MARGIN) -> None:
    """Raise :class:`~zoo.errors.StoreFullError` when the disk of the store has less free space than
    ``incoming`` bytes plus ``margin``."""
    where = store.home
    while not where.exists() and where != where.parent:
        where = where.parent
    disk = shutil.disk_usage(where)
    if disk.free >= incoming + margin:
        return
    human = progress.human
    request = f"{what} ({human(incoming)})" if what else human(incoming)
    raise StoreFullError(
        f"not enough free disk space for {request}: the disk of {store.home} has {human(disk.free)} free of "
        f"{human(disk.total)}, and {human(incoming + margin)} is needed (with a {human(margin)} margin); "
        f"nothing was downloaded. Free space on that disk (zoo gc, zoo rm NAME@vN), lower the quota "
        f"(zoo daemon --max-size SIZE) so that eviction makes room, or move the store to a larger disk",
    )


class Store:
    """One zoo store. Holds no global state: a daemon may drive several."""

    def __init__(self, home: str | os.PathLike[str] | None = None, *, quiet: bool | None = None) -> None:
        self.layout = Layout(Path(home).expanduser() if home is not None else default_home())
        self.home = self.layout.home
        self.quiet = quiet
        self._modes: tuple[int, int] | None = None
        # Where progress of long work goes: a terminal bar by default; the daemon streams it to clients.
        self.progress_bar: Callable[[int, str], Any] | None = None
        # What makes room before a write (the daemon's quota and LRU eviction); None: check free space only.
        self.make_room: Callable[[int, str, str], None] | None = None
        self._readable = False
        self._pulling = _Held()  # objects stored by a pull of this process that has not committed yet

    # -- paths (see zoo.cache.layout) ------------------------------------------------------------

    objects = property(lambda self: self.layout.objects)
    hub = property(lambda self: self.layout.hub)
    tmp = property(lambda self: self.layout.tmp)
    quarantine = property(lambda self: self.layout.quarantine)
    locks = property(lambda self: self.layout.locks)

    def object_path(self, sha256: str) -> Path:
        return self.layout.object_path(sha256)

    def repo_path(self, repo: str) -> Path:
        return self.layout.repo_path(repo)

    def snapshot(self, version: Version) -> Path:
        return self.layout.snapshot_path(version.repo, version.id)

    # -- permissions: they come from the store, never from a source file ---------------------------

    def _store_modes(self) -> tuple[int, int]:
        """(file mode, folder mode): files get the read bits of $ZOO_HOME, folders its mode."""
        if self._modes is None:
            home_mode = self.home.stat().st_mode & 0o7777
            self._modes = (home_mode & 0o444, home_mode | 0o700)
        return self._modes

    def _mkdirs(self) -> None:
        """Before any write: the store's folders exist, and this user may write them (else a
        :class:`StoreAccessError` that says whose store it is and what to do)."""
        with _disk_errors(str(self.home)):
            self.home.mkdir(parents=True, exist_ok=True)
            self._check_readable()
            for d in self.layout.writable_dirs():
                self._check_writable(d)
                self._mkdir(d)

    def _mkdir(self, path: Path) -> None:
        """A folder, and each missing parent, with the store's mode (umask does not narrow a group store)."""
        missing = []
        while not path.is_dir() and path != self.home:
            missing.append(path)
            path = path.parent
        for folder in reversed(missing):
            with contextlib.suppress(FileExistsError):
                folder.mkdir()
            with contextlib.suppress(OSError):
                os.chmod(folder, self._store_modes()[1])

    def _check_readable(self) -> None:
        """A store that exists but that this user may not read is an error that says so, not an empty store."""
        if self._readable:
            return
        try:
            self.home.stat()
        except FileNotFoundError:
            return  # no store yet: nothing cached
        except OSError:
            raise self._denied("read", self.home) from None
        if not os.access(self.home, os.R_OK | os.X_OK):
            raise self._denied("read", self.home)
        self._readable = True

    def _check_writable(self, folder: Path) -> None:
        """``folder`` (or the nearest of its parents that exists, where it is to be made) is writable by us."""
        while not folder.exists() and folder != self.home:
            folder = folder.parent
        if not os.access(folder, os.W_OK | os.X_OK):
            raise self._denied("write to", folder)

    def _denied(self, doing: str, path: Path) -> StoreAccessError:
        """The error for a store this user may not read or write: whose it is, and what to do."""
        try:
            st = self.home.stat()
        except OSError:
            return StoreAccessError(f"cannot {doing} the store {self.home} (permission denied on {path}): "
                                    "use a store of your own with ZOO_HOME=DIR")
        group, owner = _group_name(st.st_gid), _user_name(st.st_uid)
        member = st.st_uid == os.getuid() or st.st_gid == os.getgid() or st.st_gid in os.getgroups()
        if not member and st.st_mode & (0o060 if doing == "write to" else 0o050):
            fix = (f"it is shared with the group {group}, which you are not in: ask {owner} to add you to it "
                   "(then log in again)")
        elif doing == "read":
            fix = f"ask {owner} to make it readable for the group {group} (chmod -R g+rX)"
        else:
            fix = (f"it is read-only for you: ask {owner} to pull or save the model there (or to make it "
                   f"writable for the group {group}: chmod -R g+w)")
        where = "" if path == self.home else f"; permission denied on {path}"
        return StoreAccessError(
            f"cannot {doing} the store {self.home} ({stat.filemode(st.st_mode)} {owner}:{group}{where}): {fix}, "
            "or use a store of your own with ZOO_HOME=DIR"
        )

    def _seal(self, path: Path) -> None:
        """A stored file: read-only, readable by whoever may read the store."""
        os.chmod(path, self._store_modes()[0])

    def _write_text(self, path: Path, text: str) -> None:
        self._mkdir(path.parent)
        atomic.write_text(path, text, tmp_dir=self.tmp, mode=self._store_modes()[0])

    def _room_for(self, incoming: int, what: str, repo: str) -> None:
        """Before writing ``incoming`` bytes: the daemon makes room under its quota (``make_room``); in
        any case a disk without the space fails now, before anything is downloaded or copied."""
        if self.make_room is not None:
            self.make_room(incoming, what, repo)
            return
        check_free_space(self, incoming, what=what)

    def _bar(self, total: int, desc: str) -> Any:
        return self.progress_bar(total, desc) if self.progress_bar else progress.bar(total, desc, self.quiet)

    def _tmp_name(self, stem: str, suffix: str = ".tmp") -> Path:
        return atomic.temp_name(self.tmp, stem, suffix)

    # -- locks (best-effort; see zoo.cache.locks) ------------------------------------------------

    @contextlib.contextmanager
    def _lock(self, key: str, what: str) -> Iterator[None]:
        """Lock files are writable by whoever may write the store (its folder mode, less the x bits)."""
        with contextlib.ExitStack() as stack:
            with _disk_errors(str(self.home)):
                stack.enter_context(locked(self.layout.lock_path(key), what=what,
                                           mode=self._store_modes()[1] & 0o666))
            yield

    def _name_lock(self, repo: str) -> Any:
        """The lock that pulls, imports, repairs and removals of ``repo`` hold."""
        return self._lock(repo_folder(repo), f"the name {repo!r}")

    # -- reading: no locks, no network -------------------------------------------------------------

    def versions(self, repo: str) -> list[Version]:
        self._check_readable()
        return read_folder(self.layout.versions_folder(repo))

    def repos(self) -> list[str]:
        self._check_readable()
        root = self.layout.versions_root
        out = []
        for folder in sorted(root.glob("models--*")) if root.is_dir() else []:
            versions = read_folder(folder)
            if versions:
                out.append(versions[-1].repo)
        return out

    def iter_versions(self) -> Iterator[Version]:
        for repo in self.repos():
            yield from self.versions(repo)

    def find(self, repo: str, spec: str | None = None) -> Version | None:
        """The version of ``repo`` that ``spec`` names: None (newest), ``v3``, a commit or content id
        (or a prefix of 7+ characters), or a ref such as ``main``. Local only: no network."""
        versions = self.versions(repo)
        if not versions:
            return None
        if spec is None:
            return versions[-1]
        number = version_number(spec)
        if number is not None:
            return next((v for v in versions if v.number == number), None)
        ref = self.layout.ref_path(repo, spec)
        with contextlib.suppress(OSError):
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

    def missing_files(self, version: Version) -> list[FileEntry]:
        """Files of a version that are not in place as last checked (gone, another size, or another
        mtime: rewritten since): stat calls only, no hashing."""
        snap = self.snapshot(version)
        changed = []
        for entry in version.files:
            try:
                st = (snap / entry.path).stat()
            except OSError:
                changed.append(entry)
                continue
            if st.st_size != entry.size or (entry.mtime_ns and st.st_mtime_ns != entry.mtime_ns):
                changed.append(entry)
        return changed

    def touch_used(self, repo: str) -> None:
        """Record a use (for ``zoo ls``); best-effort: a read-only shared store still loads. The stamp is
        writable by whoever may write the store, as lock files are."""
        path = self.layout.used_path(repo)
        with contextlib.suppress(OSError):
            try:
                os.utime(path)
            except FileNotFoundError:
                path.touch()
                os.chmod(path, self._store_modes()[1] & 0o666)

    def last_used(self, repo: str) -> float | None:
        try:
            return self.layout.used_path(repo).stat().st_mtime
        except OSError:
            return None

    # -- the writer interface (zoo.cache.protocol.CacheWriter) -------------------------------------

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
        if version is None:
            self._check_absent(repo, wanted)
        self._mkdirs()
        with self._name_lock(repo):
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

    def _check_absent(self, repo: str, wanted: str | None) -> None:
        listing = ", ".join(v.name for v in self.versions(repo)) or "none"
        if is_local(repo):
            label = f"local:{repo.split('/', 1)[1]}" + (f"@{wanted}" if wanted else "")
            raise CheckpointNotFoundError(f"{label} is not in the cache (versions: {listing}); zoo ls lists names")
        if version_number(wanted) is not None:
            raise CheckpointNotFoundError(f"{repo}@{wanted}: no such version (cached versions: {listing})")

    @staticmethod
    def _describe(damaged: list[tuple[FileEntry, str]]) -> str:
        shown = "; ".join(f"{e.path}: {problem}" for e, problem in damaged[:3])
        return f"{len(damaged)} files failed their digest ({shown}{' ...' if len(damaged) > 3 else ''})"

    def pull(self, repo: str, revision: str = "main", *, all_files: bool = False) -> Version:
        """Ask the hub what ``repo@revision`` is now and make that commit a complete, verified version
        (only what loading needs unless ``all_files``). Files already stored are not downloaded again."""
        validate_repo_id(repo)
        validate_revision(revision)
        self._mkdirs()
        with self._name_lock(repo):
            return self._pull_locked(repo, revision, all_files=all_files, ask=True)

    def _pull_locked(self, repo: str, revision: str, *, all_files: bool = False, ask: bool = False,
                     refs: Iterable[str] | None = None) -> Version:
        """Under the name lock. Without ``ask``, a complete stored version for ``revision`` is taken
        as it is: N processes asking for one uncached model cost the hub one set of requests, not N."""
        from . import hub
        from .select import select_files

        if not ask:
            cached = self.find(repo, revision)
            if cached is not None and not self.missing_files(cached):
                return cached
        remote = hub.fetch_revision(repo, revision)
        wanted = select_files([f.path for f in remote.files], all_files=all_files)
        refs = [revision] if refs is None and revision != remote.commit else list(refs or ())
        done = [v for v in self.versions(repo) if v.id == remote.commit]
        if done and not self._repair(done[-1]) and {f.path for f in done[-1].files} >= wanted:
            for ref in refs:
                self._write_text(self.layout.ref_path(repo, ref), remote.commit)
            return self.find(repo, done[-1].name) or done[-1]
        files = [f for f in remote.files if f.path in wanted]
        self._room_for(sum(self._missing_bytes(f.etag, f.size) for f in files
                           if not (f.sha256 and self.object_path(f.sha256).exists())),
                       f"the pull of {repo}@{revision}", repo)
        entries: list[FileEntry] = []
        downloaded: set[str] = set()
        try:
            with self._bar(sum(f.size for f in files), f"pull {repo}") as bar:
                for f in files:
                    entries.append(self._fetch(repo, remote.commit, f, bar.update, downloaded=downloaded))
            return self._commit(repo, remote.commit, entries, source=f"hub:{hub.endpoint()}",
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
        self._mkdirs()
        if not (remote.sha256 and self.object_path(remote.sha256).exists()):
            self._room_for(self._missing_bytes(remote.etag, remote.size), f"the download of {repo}/{remote.path}",
                           repo)
        entry = self._fetch(repo, commit, remote, on_bytes, on_part, confirm=confirm)
        try:
            self.link_file(repo, entry)
        finally:
            self._pulling.release([entry.sha256])  # linked: gc takes it only as what no version lists
        return entry

    def link_file(self, repo: str, entry: FileEntry) -> None:
        """Content already stored becomes ``repo``'s too (its ``blobs/<etag>``), ahead of :meth:`adopt`."""
        validate_repo_id(repo)
        with _disk_errors(str(self.home)):
            self._link_blob(repo, entry)

    def adopt(self, remote: Any, entries: Iterable[FileEntry], *, refs: Iterable[str] = ()) -> Version | None:
        """Files of ``remote`` (a :class:`~zoo.cache.hub.RemoteRevision`) fetched one by one become part of
        its version: added to the version of that commit if there is one, else a new version as soon as
        every file a load needs is stored. Returns the version, or None while files a load needs are missing."""
        from .hub import endpoint
        from .select import select_files

        known = {e.path: e for e in entries}
        repo = remote.repo
        with self._name_lock(repo):
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
            return self._commit(repo, remote.commit, list(known.values()), source=f"hub:{endpoint()}",
                                revision=refs[0] if refs else remote.commit, refs=refs, access=remote.access)

    def _fetch(self, repo: str, commit: str, remote: Any, on_bytes: Callable[[int], None],
               on_part: Callable[[Path], None] | None = None, *, confirm: Callable[[], None] | None = None,
               downloaded: set[str] | None = None) -> FileEntry:
        """One file into objects/: skipped when its content is stored (after ``confirm()``, when given),
        else downloaded (resuming a dead process's partial file), checked against size and digest, and
        moved in (its path added to ``downloaded``). Until the pull commits, gc leaves it alone."""
        from . import hub

        def stored() -> bool:
            if not (remote.sha256 and self.object_path(remote.sha256).exists()):
                return False
            if confirm is not None:
                confirm()
            self._pulling.add(remote.sha256)
            on_bytes(remote.size)
            return True

        if stored():
            return FileEntry(remote.path, remote.sha256, remote.size, remote.etag)
        with self._lock(f"blob-{remote.etag}", f"the download of {remote.path}"):
            if stored():
                return FileEntry(remote.path, remote.sha256, remote.size, remote.etag)
            part = self._adopt_part(remote.etag)
            for attempt in (1, 2):
                if on_part is not None:
                    on_part(part)
                with _disk_errors(str(self.tmp)):
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
            self._pulling.add(sha256)
            self._add_object(part, sha256)
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
        mine = self._tmp_name(etag, ".part")
        ours = f"{HOST}.{os.getpid()}."
        for part in sorted(self.tmp.glob(f"*.{etag}.part")):
            if (part.name.startswith(ours) or not owner_alive(part)) and os.access(part, os.W_OK):
                try:
                    os.rename(part, mine)
                    return mine
                except OSError:
                    continue
        return mine

    @contextlib.contextmanager
    def staging(self, stem: str) -> Iterator[Path]:
        """A private folder to write files into before ``import_dir(..., owned=True)`` (``zoo.save``):
        in the store's tmp/, so that the import moves them in; removed afterwards."""
        self._mkdirs()
        folder = self._tmp_name(stem, "")
        try:
            with _disk_errors(str(self.tmp)):
                folder.mkdir()
                yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def import_dir(self, directory: str | os.PathLike[str], name: str, *, link: bool = False,
                   source: str | None = None, owned: bool = False, contained: bool = False) -> Version:
        """Ingest a saved directory as a new version of ``local/<name>`` (or return the version that
        already holds exactly this content).

        The store keeps content, never a symlink: symlinked files (a Hugging Face snapshot) are read
        through. The user's files are never changed: they are copied (hashed in the same pass), and a
        source file whose stat is unchanged since an earlier import is not read again. ``link=True``
        hard-links them instead (no copy; the files become read-only, as store objects are).
        ``owned=True`` is for zoo's own staging folders (``zoo.save``): the files are moved in.
        ``contained=True`` (drop folders, which anyone may write): a symlink that leads outside
        ``directory`` is refused, so an import never reads a file the folder's writer could not place.
        """
        repo = local_repo(name)
        directory, files = self._import_source(directory, contained=contained)
        self._mkdirs()
        total = sum(size for _, _, size in files)
        self._room_for(total, f"the import of {name}", repo)
        entries = []
        with self._bar(total, f"import {name}") as bar, _disk_errors(str(self.home)):
            for rel, path, size in files:
                sha256 = self._ingest(path, link=link, owned=owned, on_bytes=bar.update)
                entries.append(FileEntry(rel, sha256, size, sha256))
        with self._name_lock(repo):
            return self._commit(repo, content_id(entries), entries, source=source or f"import:{directory}",
                                revision=None, refs=["main"])

    @classmethod
    def _import_source(cls, directory: str | os.PathLike[str], *, contained: bool = False
                       ) -> tuple[Path, list[tuple[str, Path, int]]]:
        """The resolved folder an import reads, and its files. What a load would refuse is refused here,
        before anything is stored, by the one check loads use (:func:`zoo.checkpoint.check_folder`): a
        missing folder, no or a bad config.json, no weights, a damaged or incomplete weights file."""
        from ..checkpoint import check_folder

        directory = Path(directory).expanduser().resolve()
        check_folder(directory)
        return directory, cls._import_files(directory, contained=contained)

    @staticmethod
    def _import_files(directory: Path, *, contained: bool = False) -> list[tuple[str, Path, int]]:
        """(path in the repo, real file, size) for every file to import: symlinks read through, hidden
        files and folders skipped, anything that is not a regular file refused by name."""
        out = []
        for path in sorted(directory.rglob("*")):
            rel = path.relative_to(directory)
            if any(part.startswith(".") for part in rel.parts) or (path.is_dir() and not path.is_symlink()):
                continue
            try:
                real = path.resolve(strict=True)
                st = real.stat()
            except (OSError, RuntimeError) as exc:
                raise CorruptCheckpointError(
                    f"{path} cannot be read ({getattr(exc, 'strerror', None) or exc}): a dangling symlink or a file "
                    "removed meanwhile. Fix or remove it, then import again; nothing was stored"
                ) from None
            if contained and not real.is_relative_to(directory):
                raise CorruptCheckpointError(f"{path} is a symlink to {real}, outside {directory}; refused")
            if real.is_dir():
                continue
            if not real.is_file():
                raise CorruptCheckpointError(f"{path} is not a regular file (a FIFO, socket or device); refused")
            out.append((rel.as_posix(), real, st.st_size))
        return out

    def _ingest(self, path: Path, *, link: bool, owned: bool, on_bytes: Callable[[int], None]) -> str:
        """Store one file's content; returns its sha256."""
        st = path.stat()
        known = self._imported_digest(st)
        if known and self.object_path(known).exists():
            on_bytes(st.st_size)  # unchanged since an earlier import: neither read nor written again
            return known
        if owned or link:
            sha256, _, _ = hash_file(path, on_bytes)
            if owned:
                self._add_object(path, sha256)
            elif not self.object_path(sha256).exists():
                staged = self._tmp_name(sha256, ".link")
                atomic.link_or_copy(path, staged)
                self._add_object(staged, sha256)
        else:
            staged = self._tmp_name("import", ".copy")
            try:
                if atomic.clone(path, staged):  # copy-on-write: the user's file and ours share blocks
                    sha256, _, _ = hash_file(staged, on_bytes)
                else:
                    sha256, _ = copy_hashing(path, staged, on_bytes)
            except BaseException:
                staged.unlink(missing_ok=True)
                raise
            self._add_object(staged, sha256)
        if not owned:
            self._remember_import(path.stat(), sha256)
        return sha256

    @staticmethod
    def _fingerprint(st: os.stat_result) -> str:
        return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"

    def _imported_digest(self, st: os.stat_result) -> str | None:
        try:
            data = json.loads((self.layout.imported / f"{st.st_dev}-{st.st_ino}.json").read_text())
        except (OSError, ValueError):
            return None
        return data.get("sha256") if data.get("stat") == self._fingerprint(st) else None

    def _remember_import(self, st: os.stat_result, sha256: str) -> None:
        path = self.layout.imported / f"{st.st_dev}-{st.st_ino}.json"
        with contextlib.suppress(OSError):
            self._write_text(path, json.dumps({"stat": self._fingerprint(st), "sha256": sha256}))

    # -- content ---------------------------------------------------------------------------------

    def _add_object(self, staged: Path, sha256: str) -> Path:
        """Move the temporary ``staged`` (ours) in as the stored content ``sha256``, read-only. Content
        already stored is not written again."""
        dest = self.object_path(sha256)
        if dest.exists():
            staged.unlink()
            return dest
        self._mkdir(dest.parent)
        self._seal(staged)
        atomic.link_exclusive(staged, dest)  # if another writer got there first, its copy stays
        staged.unlink()
        return dest

    def _link_blob(self, repo: str, entry: FileEntry) -> Path:
        """Make ``repo``'s ``blobs/<etag>`` (the path every snapshot link of the content leads to) the
        stored object itself. A blob that is another inode (the damaged one a repair set aside, a file put
        there by hand) is replaced, never trusted for its size: after this, the path loads open is the
        verified object."""
        blob = self.layout.blob_path(repo, entry.etag)
        obj = self.object_path(entry.sha256)
        try:
            if os.path.samestat(blob.stat(), obj.stat()):
                return blob
        except OSError:
            pass
        self._mkdir(blob.parent)
        staged = self._tmp_name(entry.etag, ".blob")
        if not atomic.link_or_copy(obj, staged):
            self._seal(staged)
        os.replace(staged, blob)
        return blob

    # -- versions --------------------------------------------------------------------------------

    @staticmethod
    def _link_text(entry: FileEntry) -> str:
        return "../" * (entry.path.count("/") + 2) + f"blobs/{entry.etag}"

    def _build_snapshot(self, repo: str, snap_id: str, entries: list[FileEntry]) -> Path:
        """Make ``snapshots/<snap_id>`` hold a symlink per entry. A new snapshot is built in tmp/ and
        renamed into place whole; an existing one gets its missing links added one atomic rename each."""
        final = self.layout.snapshot_path(repo, snap_id)
        self._mkdir(final.parent)
        self._mkdir(self.repo_path(repo) / "refs")
        for entry in entries:
            self._link_blob(repo, entry)
        if not final.is_dir():
            staged = self._tmp_name(f"snapshot-{snap_id[:12]}", "")
            try:
                for entry in entries:
                    (staged / entry.path).parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(self._link_text(entry), staged / entry.path)
                for folder in [staged, *(p for p in staged.rglob("*") if p.is_dir() and not p.is_symlink())]:
                    os.chmod(folder, self._store_modes()[1])
                os.rename(staged, final)
                return final
            except OSError:  # another writer renamed its copy in first (checked below), or a bad entry (raised below)
                shutil.rmtree(staged, ignore_errors=True)
        for entry in entries:
            target = final / entry.path
            if not (target.is_symlink() and os.readlink(target) == self._link_text(entry)):
                self._mkdir(target.parent)
                atomic.symlink(self._link_text(entry), target)
        return final

    def _check_shards(self, repo: str, entries: list[FileEntry]) -> None:
        """A sharded checkpoint is complete only if every shard its index names is among the files."""
        from ..weights import missing_shards

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
                verified: Iterable[str] = ()) -> Version:
        """Make a version visible: snapshot in place, then the manifest (exclusive create), then refs."""
        self._check_shards(repo, entries)
        entries = [dataclasses.replace(e, mtime_ns=self.object_path(e.sha256).stat().st_mtime_ns) for e in entries]
        with _disk_errors(str(self.home)):
            self._build_snapshot(repo, snap_id, entries)
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
                    self._write_text(version.manifest, version.to_json())
            else:
                version = self._new_version(repo, snap_id, entries, source, revision, access)
            newest = max(v.number for v in self.versions(repo))
            for ref in {*refs, version.name}:
                if ref == "main" and is_local(repo) and version.number != newest:
                    continue  # an import's main is its newest version, as the plain name loads it
                self._write_text(self.layout.ref_path(repo, ref), snap_id)
        return version

    def _new_version(self, repo: str, snap_id: str, entries: list[FileEntry], source: str,
                     revision: str | None, access: str | None = None) -> Version:
        config = next((e for e in entries if e.path == "config.json"), None)
        fields = config_fields(self.object_path(config.sha256) if config else None)
        folder = self.layout.versions_folder(repo)
        self._mkdir(folder)
        number = max((v.number for v in self.versions(repo)), default=0) + 1
        template = Version(
            repo=repo, number=number, id=snap_id, source=source, revision=revision,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            files=tuple(sorted(entries, key=lambda e: e.path)), total_size=sum(e.size for e in entries),
            transformers_version=fields.get("transformers_version"), model_type=fields.get("model_type"),
            architectures=tuple(fields.get("architectures", ())), manifest=folder, access=access,
        )
        staged = self._tmp_name("manifest")
        while True:  # exclusive create: two writers never share a number
            staged.write_text(dataclasses.replace(template, number=number).to_json(), encoding="utf-8")
            self._seal(staged)
            if atomic.link_exclusive(staged, folder / f"v{number:04d}.json"):
                break
            staged.unlink()
            number += 1
        staged.unlink()
        version = Version.read(folder / f"v{number:04d}.json")
        # Without a working lock two writers may both number the same content: the lowest number
        # stays, the others are withdrawn (they were complete copies, so no reader saw a partial one).
        twins = [v for v in self.versions(repo) if v.id == snap_id and v.number < version.number]
        if twins:
            version.manifest.unlink(missing_ok=True)
            version = twins[0]
        return version

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
        for entry in changed:
            problem = self._check_object(entry, lambda n: None, self._intact_copies(entry))
            if problem:
                damaged.append((entry, problem))
            else:
                checked[entry.path] = self.object_path(entry.sha256).stat().st_mtime_ns
        if checked:
            files = tuple(dataclasses.replace(e, mtime_ns=checked.get(e.path, e.mtime_ns)) for e in version.files)
            self._build_snapshot(version.repo, version.id, [e for e in files if e.path in checked])
            self._write_text(version.manifest, dataclasses.replace(version, files=files).to_json())
        return damaged

    def _intact_copies(self, entry: FileEntry) -> list[Path]:
        """Other names that may hold the content of ``entry``: its blobs in every repo."""
        return [repo_path / "blobs" / entry.etag for repo_path in self.hub.glob("models--*")]

    def _check_object(self, entry: FileEntry, on_bytes: Callable[[int], None],
                      copies: Iterable[Path] = ()) -> str | None:
        """None if the stored object of ``entry`` is intact (restored from an intact copy if it was
        missing); else what is wrong. A damaged object is moved to quarantine/, never deleted."""
        obj = self.object_path(entry.sha256)
        if obj.exists():
            sha256, _, size = hash_file(obj, on_bytes)
            if sha256 == entry.sha256 and size == entry.size:
                return None
            damaged = obj.stat()
            self._mkdir(self.quarantine)
            os.replace(obj, self.quarantine / f"{entry.sha256}.{int(time.time())}")
            problem = f"content changed (size {size}, sha256 {sha256[:12]}…)"
            copies = list(copies)
            for copy in copies:  # the blobs that are the damaged inode: no path may lead to it any more
                with contextlib.suppress(OSError):
                    if os.path.samestat(copy.stat(), damaged):
                        copy.unlink()
        else:
            on_bytes(entry.size)
            problem = "missing from the store"
        for copy in copies:  # the last good copy of a content is never lost: it becomes the object again
            try:
                if hash_file(copy)[0] != entry.sha256:
                    continue
                self._mkdir(obj.parent)
                staged = self._tmp_name(entry.sha256, ".restore")
                atomic.link_or_copy(copy, staged)
                self._add_object(staged, entry.sha256)
                return None
            except OSError:
                continue
        return problem

    def verify(self, repo: str | None = None) -> list[tuple[Version, FileEntry, str]]:
        """Re-hash every file (of ``repo``, or of the store) and check every snapshot link. A missing
        object is restored from an intact copy; a damaged one is quarantined and its blobs (the same
        damaged bytes) unlinked, so the next load fetches it again; a missing link is rebuilt.
        Returns the problems that remain."""
        problems = []
        checked: dict[str, str | None] = {}
        versions = self.versions(repo) if repo else list(self.iter_versions())
        total = sum(e.size for v in versions for e in v.files)
        self._mkdirs()
        with self._bar(total, "verify") as bar:
            for version in versions:
                with self._name_lock(version.repo):
                    for entry in version.files:
                        if entry.sha256 not in checked:
                            checked[entry.sha256] = self._check_object(entry, bar.update, self._intact_copies(entry))
                        problem = checked[entry.sha256]
                        if problem:
                            problems.append((version, entry, problem))
                    intact = [e for e in version.files if not checked[e.sha256]]
                    self._unlink_damaged_blobs(version, {e.sha256 for e in version.files if checked[e.sha256]})
                    self._build_snapshot(version.repo, version.id, intact)  # re-links what was deleted
                    if intact:
                        self._repair(version)  # records the stat of what was checked
        return problems

    def _unlink_damaged_blobs(self, version: Version, bad: set[str]) -> None:
        for entry in version.files:
            if entry.sha256 not in bad:
                continue
            for blob in self._intact_copies(entry):  # every repo's blob of it: all hold the damaged bytes
                if blob.exists() or blob.is_symlink():
                    blob.unlink()

    # -- pins, uses and leases (the daemon's eviction honours them; see zoo.daemon.evict) ----------------

    def pin(self, repo: str, revision: str | None = None) -> Version:
        """Keep ``repo@revision`` (the newest version without one) from quota eviction."""
        from ..daemon.evict import pin

        return pin(self, repo, revision)

    def unpin(self, repo: str, revision: str | None = None) -> list[str]:
        from ..daemon.evict import unpin

        return unpin(self, repo, revision)

    def note_use(self, version: Version) -> None:
        """A process loads ``version``: record the use (for LRU eviction) and hold its lease for as long as
        the process lives, so that no eviction removes it under the process. Best-effort, never raises."""
        from ..daemon.evict import hold_lease, record_use

        record_use(self, version.repo, version.name)
        hold_lease(self, version)

    # -- removal and garbage collection ------------------------------------------------------------

    def remove(self, repo: str, revision: str | None = None, *, dry_run: bool = False) -> Any:
        """Remove one version (``revision``) or every version of ``repo``. Returns the plan carried out
        (or only made, with ``dry_run``): what is deleted and the bytes that frees."""
        from .maintenance import removal_plan

        self._mkdirs()
        with self._name_lock(repo):
            if revision is not None:
                version = self.find(repo, revision)
                versions = [version] if version else []
            else:
                versions = self.versions(repo)
            plan = removal_plan(self, repo, versions)
            if not dry_run and versions:
                plan.execute()
        return plan

    def gc(self, *, dry_run: bool = False, grace: float | None = None) -> Any:
        """Delete what no version uses (older than the grace period) and dead processes' temporaries."""
        from .maintenance import GRACE, gc_plan

        plan = gc_plan(self, grace=GRACE if grace is None else grace)
        if not dry_run:
            plan.execute()
        return plan


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


def save_name(name: str) -> str:
    """The name ``zoo.save(model, name)`` stores to (``local:NAME`` or ``NAME``)."""
    return validate_name(name.removeprefix("local:"))
