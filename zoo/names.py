"""Names: validation of checkpoint names, hub repository ids and revisions, zoo's ``local/`` namespace
and ``vN`` version numbers. The one module that knows how these are spelt.

- a name (``my-bert``): letters, digits, ``.``, ``_``, ``-``, at most 96, no ``..`` and no ``--`` (the
  hub cache folder ``models--org--name`` uses ``--`` as its separator, so ``a--b`` could alias ``a/b``);
- a hub repository id: ``name`` or ``org/name``, each part a name as above;
- a revision: a branch, tag, commit or zoo version (``main``, ``v2``, ``<sha>``, ``zoo:v2``), printable, at
  most 128 characters, no ``/`` and no ``..``;
- zoo's own versions are ``zoo:vN`` everywhere (a ``:`` is never part of a git ref name, so this spelling
  cannot mean an upstream's branch or tag). The plain ``vN`` is zoo's version for ``local/`` names; for a hub
  repository it is the upstream's ref over the hub protocol, and in Python and the CLI zoo's version unless the
  upstream is known to have a ref of that name (then it is refused as ambiguous: :mod:`zoo.resolve`);
- imports and saves live in the reserved namespace ``local``: the name ``my-bert`` is the repository
  ``local/my-bert``, and ``local:my-bert`` names it explicitly.
"""

from __future__ import annotations

import re

from .errors import InvalidNameError

LOCAL_NAMESPACE = "local"
MAX_REVISION = 128

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}\Z")
_VERSION = re.compile(r"^v([1-9][0-9]{0,8})\Z")
ZOO_PREFIX = "zoo:"


def _valid_part(part: str) -> bool:
    return bool(_NAME.fullmatch(part)) and ".." not in part and "--" not in part


def _shown(text: object) -> str:
    """``text`` as an error message quotes it: at most 60 characters (a name of thousands, or one with a NUL
    or control characters, is still one readable line)."""
    if not isinstance(text, str) or len(text) <= 60:
        return repr(text)
    return repr(text[:60]) + f"... ({len(text)} characters)"


def validate_name(name: str) -> str:
    """A zoo name: letters, digits, ``.``, ``_``, ``-``; no ``/``, no ``..``, no ``--``."""
    if not isinstance(name, str) or not _valid_part(name):
        raise InvalidNameError(
            f"invalid name {_shown(name)}: use letters, digits, '.', '_' and '-' (at most 96, no '..' or '--'), "
            "starting with a letter or digit, e.g. 'my-bert'"
        )
    return name


def validate_revision(revision: str) -> str:
    """A branch, tag, commit or zoo version (``main``, ``v2``, ``<sha>``, ``zoo:v2``): no ``/``, no ``..``, no
    ``:`` but in ``zoo:vN`` (git refuses ``:`` in ref names)."""
    if (not isinstance(revision, str) or not revision or len(revision) > MAX_REVISION or "/" in revision
            or ".." in revision or revision.startswith(".") or not revision.isprintable()
            or (":" in revision and zoo_version(revision) is None)):
        raise InvalidNameError(
            f"invalid revision {_shown(revision)}: expected a branch, tag or commit id (e.g. main), or zoo:vN for "
            f"zoo's own version N (at most {MAX_REVISION} printable characters, no '/' or '..', ':' only in zoo:vN)"
        )
    return revision


def validate_repo_id(repo_id: str) -> str:
    """A hub repository id: ``name`` or ``org/name``."""
    parts = repo_id.split("/") if isinstance(repo_id, str) else []
    if not 1 <= len(parts) <= 2 or not all(_valid_part(p) for p in parts):
        raise InvalidNameError(
            f"invalid hub repository id {_shown(repo_id)}: expected 'org/name' or 'name' "
            "(letters, digits, '.', '_', '-'; no '..' or '--', no leading '/')"
        )
    return repo_id


def version_number(spec: str | None) -> int | None:
    """``"v3"`` -> 3; anything else (a branch, a commit, None) -> None."""
    match = _VERSION.fullmatch(spec) if isinstance(spec, str) else None
    return int(match.group(1)) if match else None


def zoo_version(spec: str | None) -> int | None:
    """``"zoo:v3"`` -> 3 (zoo's own version, never an upstream's ref); anything else -> None."""
    if isinstance(spec, str) and spec.startswith(ZOO_PREFIX):
        return version_number(spec[len(ZOO_PREFIX):])
    return None


def local_repo(name: str) -> str:
    """The repository that holds the imports and saves of ``name``."""
    return f"{LOCAL_NAMESPACE}/{validate_name(name)}"


def is_local(repo: str) -> bool:
    return repo.startswith(LOCAL_NAMESPACE + "/")


def display_name(repo: str) -> str:
    """How zoo shows a repository: ``my-bert`` for ``local/my-bert``, hub ids as they are."""
    return repo[len(LOCAL_NAMESPACE) + 1:] if is_local(repo) else repo
