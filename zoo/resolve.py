"""Parsing what the user typed: a directory, or a name in the cache or on a hub.

Forms of ``ref``:

- a path (``Path`` object, or text starting with ``/``, ``./``, ``../``, ``~``, or an existing
  directory), or ``dir:PATH``;
- a name from a plugin's checkpoint table (``bert-base-cased``), or ``local:NAME`` for a name made by
  ``zoo import`` / ``zoo.save(model, "NAME")``; a bare name means either, and if both exist zoo asks
  for the prefixed form;
- a hub repository ``org/name`` or ``hf:name``;
- any name may end in ``@REV``: ``@zoo:v2`` (zoo's version 2), ``@main`` (a branch or tag), ``@<commit>``.
  ``@v2`` is zoo's version 2 too, except for a hub repository whose upstream is known (from what the store
  recorded: pulls, the hub server's listings) to have a branch or tag ``v2``: that is refused as ambiguous,
  naming ``@zoo:v2`` and the upstream ref's commit. Nothing is asked upstream to decide it (warm loads make
  no request).

Parsing only: no network request, no write. Making a parsed name present is the store's job
(:meth:`zoo.store.writer.Store.ensure`).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import AmbiguousNameError, InvalidNameError, UnknownNameError
from .names import (
    LOCAL_NAMESPACE,
    display_name,
    is_local,
    local_repo,
    validate_name,
    validate_repo_id,
    validate_revision,
    version_number,
    zoo_version,
)




@dataclass(frozen=True)
class Target:
    kind: str  # "dir", "hub" or "local"
    path: Path | None = None
    repo: str | None = None
    revision: str | None = None  # what follows '@', if anything
    default_revision: str = "main"  # from the checkpoint table
    own_version: bool = False  # written @zoo:vN: zoo's own version, never an upstream's ref

    @property
    def label(self) -> str:
        if self.kind == "dir":
            return str(self.path)
        name = self.repo if self.kind == "hub" else f"local:{display_name(self.repo)}"
        if self.kind == "hub" and version_number(self.revision) is not None:
            return f"{name}@zoo:{self.revision}"  # the spelling that cannot mean an upstream's ref
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
    """Decide what ``ref`` names, without any network request. A bare name that is also a directory
    here (or a cached hub id that is also a directory) is refused with the prefixed forms to choose from."""
    path = as_path(ref)
    if path is not None:
        return Target("dir", path=path)
    if not isinstance(ref, str) or not ref:
        raise InvalidNameError(f"expected a path or a name, got {ref!r}")
    head, at, tail = ref.partition("@")  # a ':' after the '@' is part of the revision (zoo:v2)
    prefix, sep, rest = head.partition(":")
    if sep and prefix in ("hf", "local"):
        body = rest + at + tail
    elif sep:
        raise InvalidNameError(f"unknown prefix {prefix + ':'!r} in {ref!r}; use dir:, hf: or local:")
    else:
        prefix, body = "", ref
    base, _, revision = body.partition("@")
    if not prefix and (base.count("/") > 1 or (_is_dir(body) and not _is_name(base))):
        return Target("dir", path=Path(body).expanduser())  # a/b/c is a path: hub ids have one '/'
    revision = validate_revision(revision) if revision else None
    number = zoo_version(revision)
    explicit = number is not None
    if explicit:
        revision = f"v{number}"  # the store's spelling: there, vN is always zoo's version
    is_dir = not prefix and revision is None and _is_dir(base)
    if prefix == "hf" or (not prefix and "/" in base):
        if base.split("/")[0] == LOCAL_NAMESPACE:
            raise InvalidNameError(f"{ref!r}: the namespace 'local' holds your imports; write local:{base.split('/', 1)[1]}")
        repo = validate_repo_id(base)
        if is_dir and store.versions(repo):
            raise AmbiguousNameError(f"{base!r} could mean hf:{base} (cached) or ./{base} (the directory here); "
                                     "write one of these forms")
        if is_dir:
            return Target("dir", path=Path(base))
        _check_version_spelling(store, repo, revision, explicit)
        return Target("hub", repo=repo, revision=revision, own_version=explicit)
    repo = local_repo(base)
    if prefix == "local":
        return Target("local", repo=repo, revision=revision)
    row = registry.checkpoint(base)
    local = bool(store.versions(repo))
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
        _check_version_spelling(store, row.item.repo, revision, explicit)
        return Target("hub", repo=row.item.repo, revision=revision, default_revision=row.item.revision,
                      own_version=explicit)
    if local:
        return Target("local", repo=repo, revision=revision)
    known = sorted({*registry.checkpoints(), *(display_name(r) for r in store.repos() if is_local(r))})
    close = difflib.get_close_matches(base, known, n=3, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownNameError(
        f"{base!r} is not a directory, a checkpoint name from an installed plugin, or a name in the cache "
        f"({store.home}).{hint} Use org/name for a hub repository, ./{base} for a directory; "
        "zoo ls lists cached names and zoo plugins the known ones"
    )


def _check_version_spelling(store: Any, repo: str, revision: str | None, explicit: bool) -> None:
    """``repo@vN`` (not ``@zoo:vN``) of a hub repository whose upstream is known to have a branch or tag
    ``vN``: refused, with both spellings."""
    if explicit or version_number(revision) is None:
        return
    commit = store.upstream_ref(repo, revision)
    if commit is not None:
        raise AmbiguousNameError(
            f"{repo}@{revision} could mean zoo's version {revision} (write {repo}@zoo:{revision}) or the "
            f"upstream's branch or tag {revision!r}, last seen at commit {commit} (write {repo}@{commit}); "
            "zoo's own versions are always zoo:vN"
        )


def _is_dir(text: str) -> bool:
    """Whether ``text`` is a directory here; False for what cannot be a path at all (a component over
    255 bytes, a NUL): such text is then judged as a name, and refused as one, with zoo's error."""
    try:
        return Path(text).expanduser().is_dir()
    except (OSError, ValueError):
        return False


def _is_name(text: str) -> bool:
    """Whether ``text`` could be a name or hub id at all (else a directory of that name is meant)."""
    try:
        (validate_repo_id if "/" in text else validate_name)(text)
        return True
    except InvalidNameError:
        return False
