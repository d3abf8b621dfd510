"""Where everything lives in a store. Paths only: nothing here reads or writes.

Layout under ``$ZOO_HOME`` (default ``~/.cache/zoo``)::

    $ZOO_HOME/
    ├── objects/sha256/ab/ab12…          every distinct file content, stored once, read-only
    ├── hub/                             a Hugging Face hub cache (HF_HUB_CACHE=$ZOO_HOME/hub)
    │   └── models--org--name/
    │       ├── blobs/<etag>             hard link to objects/sha256/… (etag: sha256 for LFS files,
    │       │                            git blob sha1 for the others, as the hub sends them); a copy
    │       │                            where the kernel refuses the link (another user's file)
    │       ├── snapshots/<id>/<path>    relative symlink to ../../blobs/<etag>
    │       │                            <id>: the hub commit, or the content id of an import
    │       └── refs/main, refs/v1, …    the <id> each ref points to
    ├── versions/models--org--name/
    │   └── v0001.json                   the manifest of version 1; a version exists (is visible)
    │                                    exactly when this file does. Its files never change (only the
    │                                    stat each was last checked with, and ``pull --all`` additions)
    ├── used/models--org--name           touched on every load: "last used"
    ├── marks/models--org--name.json     the name's aliases (prod -> v7: who set it, when) and each
    │                                    version's labels; replaced whole, atomically (zoo.store.marks)
    ├── history/models--org--name.jsonl  what happened to the name, one JSON event per line, appended
    │                                    (zoo.store.history): created, alias moved, labels, removed
    ├── tensors/<sha256>.json            the sha256 of each tensor of a safetensors object, computed
    │                                    once (zoo.store.lineage: what a fine-tune shares with its base)
    ├── imported/<dev>-<ino>.json        stat fingerprints of imported source files -> sha256, so an
    │                                    unchanged file is not hashed again
    ├── conversions/<hash>.json          what transformers' key renames did to a checkpoint layout
    │                                    (zoo.model.conversion), so later loads skip building its table
    ├── pins/models--org--name/v3        a pinned version (JSON: repo, version, id, when, by whom): the
    │                                    quota never evicts it (zoo.store.records)
    ├── leases/models--org--name/v3.lease   a shared flock held by each live process that loaded v3
    ├── lru/models--org--name/v3         when v3 was last loaded (a Unix time), for LRU eviction
    ├── remote/models--org--name/<commit>.json   the upstream's listing of a commit, as the daemon's HTTP
    │                                    server asked it once (zoo.hubserver.catalog); gc removes
    │                                    the old ones of commits no version holds
    ├── remote/tainted/<etag>            files whose unverified bytes went out (zoo.hubserver.pullthrough)
    ├── daemon.sock                      the daemon's socket, when one serves the store (zoo.daemon)
    ├── quarantine/                      objects that failed their digest
    ├── locks/                           filelock files (best-effort: see zoo.store.locks)
    └── tmp/                             unique temporaries (zoo.atomic): downloads
                                         ``<host>.<pid>.<rand>.<etag>.part``, snapshots being built

Permissions come from the store, never from a source file: files get the read bits of ``$ZOO_HOME``
itself (a group store, ``chmod 2770``, makes them group-readable), folders its mode (setgid included),
every missing parent too. Lock files and ``used/`` stamps are writable by whoever may write the store
(its mode less the x bits: 0660 in a group store). A store this user may not read, or not write where a
write is needed, is a ``StoreAccessError`` naming the store, its owner and group, and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .._env import zoo_home
from ..names import validate_repo_id


def default_home() -> Path:
    """The store's home: ``$ZOO_HOME`` (default ``~/.cache/zoo``), read now, not at import."""
    return zoo_home()


def repo_folder(repo_id: str) -> str:
    """``org/name`` -> ``models--org--name``, as huggingface_hub names it."""
    return "models--" + validate_repo_id(repo_id).replace("/", "--")


@dataclass(frozen=True)
class Layout:
    home: Path

    @property
    def objects(self) -> Path:
        return self.home / "objects" / "sha256"

    @property
    def hub(self) -> Path:
        return self.home / "hub"

    @property
    def versions_root(self) -> Path:
        return self.home / "versions"

    @property
    def used_root(self) -> Path:
        return self.home / "used"

    @property
    def imported(self) -> Path:
        return self.home / "imported"

    @property
    def quarantine(self) -> Path:
        return self.home / "quarantine"

    @property
    def locks(self) -> Path:
        return self.home / "locks"

    @property
    def tmp(self) -> Path:
        return self.home / "tmp"

    def writable_dirs(self) -> tuple[Path, ...]:
        return (self.objects, self.hub, self.versions_root, self.used_root, self.imported, self.locks, self.tmp)

    def object_path(self, sha256: str) -> Path:
        return self.objects / sha256[:2] / sha256

    def repo_path(self, repo: str) -> Path:
        return self.hub / repo_folder(repo)

    def blob_path(self, repo: str, etag: str) -> Path:
        return self.repo_path(repo) / "blobs" / etag

    def snapshot_path(self, repo: str, snap_id: str) -> Path:
        return self.repo_path(repo) / "snapshots" / snap_id

    def ref_path(self, repo: str, ref: str) -> Path:
        return self.repo_path(repo) / "refs" / ref

    def records_root(self, kind: str) -> Path:
        """``pins``, ``leases`` or ``lru``: the store's records of use."""
        return self.home / kind

    @property
    def history_root(self) -> Path:
        return self.home / "history"

    def history_path(self, repo: str) -> Path:
        return self.history_root / f"{repo_folder(repo)}.jsonl"

    @property
    def marks_root(self) -> Path:
        return self.home / "marks"

    def marks_path(self, repo: str) -> Path:
        return self.marks_root / f"{repo_folder(repo)}.json"

    def tensors_path(self, sha256: str) -> Path:
        return self.home / "tensors" / f"{sha256}.json"

    def record_path(self, kind: str, repo: str, version_name: str, suffix: str = "") -> Path:
        return self.records_root(kind) / repo_folder(repo) / f"{version_name}{suffix}"

    def versions_folder(self, repo: str) -> Path:
        return self.versions_root / repo_folder(repo)

    def used_path(self, repo: str) -> Path:
        return self.used_root / repo_folder(repo)

    def lock_path(self, key: str) -> Path:
        return self.locks / f"{key}.lock"

    @property
    def remote(self) -> Path:
        return self.home / "remote"

    def listing_path(self, repo: str, commit: str) -> Path:
        return self.remote / repo_folder(repo) / f"{commit}.json"

    def tainted_path(self, etag: str) -> Path:
        return self.remote / "tainted" / etag
