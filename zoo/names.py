"""Validation of checkpoint names and hub repository ids: no path traversal, no absolute paths."""

from __future__ import annotations

import re

from .errors import InvalidNameError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")



def validate_name(name: str) -> str:
    """A zoo name: letters, digits, ``.``, ``_``, ``-``; no ``/``, no ``..``."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise InvalidNameError(
            f"invalid name {name!r}: use letters, digits, '.', '_' and '-' (at most 96), "
            "starting with a letter or digit, e.g. 'my-bert'"
        )
    return name


def validate_revision(revision: str) -> str:
    """A branch, tag, commit or zoo version (``main``, ``v2``, ``<sha>``): no ``/``, no ``..``."""
    if (not isinstance(revision, str) or not revision or "/" in revision or ".." in revision
            or revision.startswith(".") or not revision.isprintable()):
        raise InvalidNameError(f"invalid revision {revision!r}: expected e.g. main, v2 or a commit id")
    return revision


def validate_repo_id(repo_id: str) -> str:
    """A hub repository id: ``name`` or ``org/name``."""
    parts = repo_id.split("/") if isinstance(repo_id, str) else []
    if not 1 <= len(parts) <= 2 or not all(_REPO_PART.match(p) and ".." not in p for p in parts):
        raise InvalidNameError(
            f"invalid hub repository id {repo_id!r}: expected 'org/name' or 'name' "
            "(letters, digits, '.', '_', '-'; no '..', no leading '/')"
        )
    return repo_id
