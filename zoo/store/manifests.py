"""Manifests: the record of one immutable version (``versions/models--org--name/v0001.json``).

A version exists exactly when its manifest does. It lists every file with its sha256, size, the etag
its blob is named by, and the stat (``mtime_ns``) its stored object had when last checked, so a warm
load can tell an untouched object from a changed one with one ``stat`` and no hashing.
Scans return what they could read and say what they could not, as warnings (never silently).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import CacheWarning


@dataclass(frozen=True)
class FileEntry:
    path: str  # path inside the repository, posix
    sha256: str
    size: int
    etag: str  # the blob name in the hub layout
    mtime_ns: int = 0  # of the stored object when last checked: a stat tells if it changed


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
    # Who may be served this content over HTTP (zoo.hubserver): "public", "private" or "gated" as
    # the hub said when it was pulled; None for imports and for manifests written before zoo recorded it.
    access: str | None = None
    # Who made it (the client, through the daemon), on which host; what it was made from; what it is.
    # None for manifests written before zoo recorded them.
    uid: int | None = None
    user: str | None = None
    host: str | None = None
    base: dict[str, Any] | None = None  # {"name", "version", "id"} of the model it was saved or imported from
    description: str | None = None

    @property
    def name(self) -> str:
        return f"v{self.number}"

    @classmethod
    def read(cls, path: Path) -> "Version":
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            repo=data["repo"], number=int(data["number"]), id=data["id"], source=data["source"],
            revision=data.get("revision"), created=data["created"],
            files=tuple(FileEntry(**f) for f in data["files"]), total_size=data["total_size"],
            transformers_version=data.get("transformers_version"), model_type=data.get("model_type"),
            architectures=tuple(data.get("architectures") or ()), manifest=path,
            access=data.get("access") if isinstance(data.get("access"), str) else None,
            uid=data.get("uid") if isinstance(data.get("uid"), int) else None,
            user=_text(data.get("user")), host=_text(data.get("host")),
            base=data.get("base") if isinstance(data.get("base"), dict) else None,
            description=_text(data.get("description"), 4096),
        )

    def to_json(self) -> str:
        data = {k: v for k, v in asdict(self).items() if k != "manifest"}
        data["files"] = [asdict(f) for f in sorted(self.files, key=lambda f: f.path)]
        data["architectures"] = list(self.architectures)
        return json.dumps(data, indent=2)


def _text(value: Any, limit: int = 256) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def read_folder(folder: Path) -> list[Version]:
    """Every readable manifest in ``folder``, oldest first. An unreadable one is reported as a
    :class:`~zoo.errors.CacheWarning` naming the file and the fix, and left out."""
    if not folder.is_dir():
        return []
    found = [v for v in (read_or_warn(path, stacklevel=4) for path in folder.glob("v*.json")) if v is not None]
    return sorted(found, key=lambda v: v.number)


def read_or_warn(path: Path, *, stacklevel: int = 3) -> Version | None:
    """The version ``path`` records; None when it was removed meanwhile (zoo rm: not a problem) or cannot be read
    (then a :class:`~zoo.errors.CacheWarning` names the file and the fix)."""
    try:
        return Version.read(path)
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, AttributeError, OSError, RecursionError) as exc:
        warnings.warn(
            f"{path} is not a readable zoo manifest ({type(exc).__name__}: {exc}); that version is "
            "skipped. zoo writes manifests atomically, so something else changed it: move it away, "
            "and pull or import the model again",
            CacheWarning, stacklevel=stacklevel,
        )
        return None


def content_id(files: Iterable[FileEntry]) -> str:
    """A 40-hex id of a set of files (paths and contents), shaped like a commit hash."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        h.update(f"{f.path}\0{f.sha256}\n".encode())
    return h.hexdigest()[:40]


def config_fields(config_path: Path | None) -> dict[str, Any]:
    """What a manifest records of ``config.json``: transformers_version, model_type, architectures."""
    if config_path is None:
        return {}
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return {}
    if not isinstance(raw, dict):
        return {}
    arch = raw.get("architectures")
    version = raw.get("transformers_version")
    return {
        "transformers_version": version if isinstance(version, str) and len(version) <= 64 else None,
        "model_type": raw.get("model_type") if isinstance(raw.get("model_type"), str) else None,
        "architectures": [a for a in arch if isinstance(a, str)] if isinstance(arch, list) else [],
    }
