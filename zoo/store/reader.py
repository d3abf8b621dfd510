"""Reading the store: which versions there are, which one a name means, and whether its files are in place.

No locks, no writes, no network: any process (a load, ``zoo ls``, the hub server) reads the store this way,
whoever writes it. A warm load is :meth:`StoreReader.find` and :meth:`StoreReader.missing_files`: a few
``stat`` calls.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

from .. import atomic
from ..errors import AmbiguousNameError, CheckpointNotFoundError
from ..names import is_local, validate_revision, version_number
from .disk import Disk
from .layout import Layout, default_home
from .manifests import FileEntry, Version, read_folder
from .marks import Marks
from .marks import read as read_marks


class StoreReader:
    """One store, read. Holds no global state."""

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.layout = Layout(Path(home).expanduser() if home is not None else default_home())
        self.home = self.layout.home
        self.disk = Disk(self.layout)

    # -- paths (see zoo.store.layout) ------------------------------------------------------------

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

    # -- versions --------------------------------------------------------------------------------

    def versions(self, repo: str) -> list[Version]:
        self.disk.check_readable()
        return read_folder(self.layout.versions_folder(repo))

    def repos(self) -> list[str]:
        self.disk.check_readable()
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
        validate_revision(spec)  # never a path: a client's revision is not trusted to be one word
        target = read_ref(self.layout.ref_path(repo, spec))
        if target:
            matches = [v for v in versions if v.id == target]
            if matches:
                return matches[-1]
        alias = self.marks(repo).aliases.get(spec)  # one read of one file: the old or the new target, whole
        if alias is not None:
            return next((v for v in versions if v.number == version_number(alias.version) and v.id == alias.id), None)
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

    def marks(self, repo: str) -> Marks:
        """The aliases of ``repo`` and its versions' labels (:mod:`zoo.store.marks`)."""
        return read_marks(self.layout, repo)

    def history(self, repo: str) -> Any:
        """What happened to ``repo``, oldest first (:class:`zoo.store.history.History`)."""
        from .history import read

        return read(self.layout, repo)

    def check_absent(self, repo: str, wanted: str | None) -> None:
        """Raise the not-found error for ``repo@wanted`` when no pull can make it: a local name, or a zoo
        version of a hub repository."""
        listing = ", ".join(v.name for v in self.versions(repo)) or "none"
        alias = self.marks(repo).aliases.get(wanted) if wanted and version_number(wanted) is None else None
        if alias is not None:  # an alias whose version went (removed by hand, or the aliases file restored)
            name = repo.split("/", 1)[1] if is_local(repo) else repo
            raise CheckpointNotFoundError(
                f"{name}@{wanted} points at {alias.version} ({alias.id[:12]}), which is not in the store (versions: "
                f"{listing}); move the alias (zoo tag {name}@vN {wanted}) or remove it (zoo untag {name} {wanted})")
        if is_local(repo):
            label = f"local:{repo.split('/', 1)[1]}" + (f"@{wanted}" if wanted else "")
            raise CheckpointNotFoundError(f"{label} is not in the cache (versions: {listing}); zoo ls lists names")
        if version_number(wanted) is not None:
            raise CheckpointNotFoundError(f"{repo}@{wanted}: no such version (cached versions: {listing})")

    def upstream_ref(self, repo: str, ref: str) -> str | None:
        """The commit the store recorded for the upstream's branch or tag ``ref`` of hub repository ``repo``, or
        None: reads only, no request. Records, in this order: the hub cache's ``refs/<ref>`` (except a
        ``refs/vN`` that names zoo's own version N, as stores before ``refs/zoo:vN`` wrote); a version pulled (or fetched by the hub server) as
        ``repo@ref``; the hub server's listing of a commit it asked for as ``ref``."""
        validate_revision(ref)
        versions = self.versions(repo)
        number = version_number(ref)
        own = next((v.id for v in versions if v.number == number), None)
        target = read_ref(self.layout.ref_path(repo, ref))
        if target and (number is None or (own is not None and target != own)):
            return target
        for version in reversed(versions):
            if version.revision == ref:
                return version.id
        folder = self.layout.listing_path(repo, "0" * 40).parent
        try:
            listings = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        except OSError:
            return None
        for listing in listings:
            try:
                if json.loads(listing.read_text(encoding="utf-8")).get("revision") == ref:
                    return listing.stem
            except (OSError, ValueError, AttributeError):
                continue
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

    def last_used(self, repo: str) -> float | None:
        try:
            return self.layout.used_path(repo).stat().st_mtime
        except OSError:
            return None


def read_ref(path: Path) -> str:
    """The commit id a ref file names ("" when there is none): a regular file only (never through a symlink,
    never a FIFO), at most 128 bytes read."""
    try:
        return atomic.read_regular(path, limit=128).decode("ascii", errors="replace").strip()
    except OSError:
        return ""
