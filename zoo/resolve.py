"""From what the user typed to a saved directory on disk.

Forms of ``ref``:

- a path (``Path`` object, or text starting with ``/``, ``./``, ``../``, ``~``, or an existing
  directory), or ``dir:PATH``;
- a name from a plugin's checkpoint table (``bert-base-cased``), or ``local:NAME`` for a name made by
  ``zoo import`` / ``zoo.save(model, "NAME")``; a bare name means either, and if both exist zoo asks
  for the prefixed form;
- a hub repository ``org/name`` or ``hf:name``;
- any name may end in ``@REV``: ``@v2`` (a zoo version), ``@main`` (a branch or tag), ``@<commit>``.

A cached name resolves with no network request; an uncached hub name is pulled once.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import (
    AmbiguousNameError,
    CheckpointNotFoundError,
    InvalidNameError,
    RemoteNotFoundError,
    UnknownNameError,
)
from .names import validate_name, validate_repo_id, validate_revision




@dataclass(frozen=True)
class Target:
    kind: str  # "dir", "hub" or "local"
    path: Path | None = None
    repo: str | None = None
    revision: str | None = None  # what follows '@', if anything
    default_revision: str = "main"  # from the checkpoint table

    @property
    def label(self) -> str:
        if self.kind == "dir":
            return str(self.path)
        name = self.repo if self.kind == "hub" else f"local:{self.repo.split('/', 1)[1]}"
        return f"{name}@{self.revision}" if self.revision else name


def as_path(ref: Any) -> Path | None:
    """The directory ``ref`` names when it is written as a path (a ``PathLike``, ``dir:PATH``, or text
    starting with ``/``, ``./``, ``../`` or ``~``); None for anything that may be a name. Needs neither
    the store nor the registry."""
    if isinstance(ref, os.PathLike):
        return Path(ref).expanduser()
    if isinstance(ref, str) and ref.startswith("dir:"):
        return Path(ref[4:]).expanduser()
    if isinstance(ref, str) and (ref.startswith(("/", "./", "../", "~", ".\\")) or ref in (".", "..")):
        return Path(ref).expanduser()
    return None


def parse(ref: Any, *, registry: Any, store: Any) -> Target:
    """Decide what ``ref`` names, without any network request."""
    path = as_path(ref)
    if path is not None:
        return Target("dir", path=path)
    if not isinstance(ref, str) or not ref:
        raise InvalidNameError(f"expected a path or a name, got {ref!r}")
    prefix, sep, rest = ref.partition(":")
    if sep and prefix in ("hf", "local"):
        body = rest
    elif sep:
        raise InvalidNameError(f"unknown prefix {prefix + ':'!r} in {ref!r}; use dir:, hf: or local:")
    else:
        prefix, body = "", ref
    base, _, revision = body.partition("@")
    revision = validate_revision(revision) if revision else None
    if not prefix and (base.count("/") > 1 or Path(body).is_dir()):
        return Target("dir", path=Path(body).expanduser())  # a/b/c is a path: hub ids have one '/'
    if prefix == "hf" or (not prefix and "/" in base):
        if base.split("/")[0] == "local":
            raise InvalidNameError(f"{ref!r}: the namespace 'local' holds your imports; write local:{base.split('/', 1)[1]}")
        return Target("hub", repo=validate_repo_id(base), revision=revision)
    validate_name(base)
    local_repo = f"local/{base}"
    if prefix == "local":
        return Target("local", repo=local_repo, revision=revision)
    row = registry.checkpoint(base)
    local = bool(store.versions(local_repo))
    is_dir = Path(base).is_dir() and revision is None
    choices = []
    if row is not None:
        choices.append(f"hf:{row.item.repo} (the checkpoint table of plugin {row.plugin!r})")
    if local:
        choices.append(f"local:{base} (your import)")
    if is_dir:
        choices.append(f"./{base} (the directory here)")
    if len(choices) > 1:
        raise AmbiguousNameError(f"{base!r} could mean {' or '.join(choices)}; write one of these forms")
    if is_dir:
        return Target("dir", path=Path(base))
    if row is not None:
        return Target("hub", repo=row.item.repo, revision=revision, default_revision=row.item.revision)
    if local:
        return Target("local", repo=local_repo, revision=revision)
    known = sorted({*registry.checkpoints(), *(r.split("/", 1)[1] for r in store.repos() if r.startswith("local/"))})
    close = difflib.get_close_matches(base, known, n=3, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownNameError(
        f"{base!r} is not a directory, a checkpoint name from an installed plugin, or a name in the cache "
        f"({store.home}).{hint} Use org/name for a hub repository, ./{base} for a directory; "
        "zoo ls lists cached names and zoo plugins the known ones"
    )


def to_directory(target: Target, *, store: Any) -> Path:
    """The snapshot directory of a target, pulling a hub repo that is not cached (or damaged)."""
    if target.kind == "dir":
        return target.path
    # A hub name without @REV means its table revision (usually main), as last pulled: no network.
    wanted = target.revision or (target.default_revision if target.kind == "hub" else None)
    version = store.find(target.repo, wanted)
    if version is not None and not store.missing_files(version):
        store.touch_used(target.repo)
        return store.snapshot(version)
    if target.kind == "local":
        versions = store.versions(target.repo)
        if version is not None:
            raise CheckpointNotFoundError(
                f"{target.label} ({version.name}) is damaged: {len(store.missing_files(version))} files are "
                "missing or changed (zoo verify tells which). Import the directory again"
            )
        listing = ", ".join(v.name for v in versions) or "none"
        raise CheckpointNotFoundError(f"{target.label} is not in the cache (versions: {listing}); zoo ls lists names")
    if target.revision and target.revision[:1] == "v" and target.revision[1:].isdigit():
        listing = ", ".join(v.name for v in store.versions(target.repo)) or "none"
        raise CheckpointNotFoundError(f"{target.label}: no such version (cached versions: {listing})")
    try:
        version = store.pull(target.repo, wanted, if_missing=True)
    except RemoteNotFoundError as exc:
        if "/" in target.repo:
            raise RemoteNotFoundError(f"{exc} (there is no directory ./{target.repo} either; "
                                      f"write ./{target.repo} or dir:{target.repo} for a path)") from exc
        raise
    store.touch_used(target.repo)
    return store.snapshot(version)
