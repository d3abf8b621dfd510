"""Search: the names a store holds whose versions match a query (``zoo ls --label task=ner``, ``zoo.search``).

One row per name: the **newest version that matches every filter** given, and how many of its versions match
(without filters, every version matches: the row is the name's newest version and its count, as plain
``zoo ls`` always showed). The filters all apply to the same version:

- ``model_type``: the version's ``config.json`` says it (``bert``);
- ``labels``: the version carries each ``key=value`` (all of them);
- ``alias``: the name's alias of that name points at the version;
- ``base``: the version records that base, as ``zoo.save`` of a loaded model and imports record it
  (:mod:`zoo.store.lineage`): a saved name (``my-bert``, ``local:my-bert``), a hub repository (``org/name``,
  ``hf:name``, or a plugin's short name, which the door looks up), with ``@vN`` or ``@<id>`` for one version of it;
- ``since``: the version was created at or after that time;
- ``user``: the version was made by that user (a name or a numeric uid).

A reader: no locks, no writes, no index and no cache, so it shows what the manifests and marks say now. One pass
over ``versions/``: a name's marks file (aliases and labels) is read first, so a filter on an alias or a label
reads only the manifests of the versions it names; otherwise each manifest is read once, found by
``os.scandir`` (10,000 versions in about 0.3 s on a 2-core machine: ``benchmarks/registry.py``). An unreadable
manifest is skipped with the :class:`~zoo.errors.CacheWarning` every scan gives.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import MISSING, dataclass, field, fields
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, NamedTuple

from ..errors import InvalidArgumentError
from ..names import LOCAL_NAMESPACE, display_name, validate_name, validate_repo_id, version_number
from .manifests import FileEntry, Version, read_or_warn
from .marks import Marks, check_alias, check_label_key
from .marks import read as read_marks

if TYPE_CHECKING:
    from .reader import StoreReader

_MANIFEST = re.compile(r"^v([0-9]{1,9})\.json\Z")
_RELATIVE = re.compile(r"^([0-9]{1,5})([dhm])\Z")
_HEX = re.compile(r"^[0-9a-f]{7,40}\Z")


@dataclass(frozen=True)
class Query:
    """What to look for; every field given must match the same version. Make one with :func:`query`."""

    model_type: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    alias: str | None = None
    base: tuple[frozenset[str], str | None] | None = None  # (the repositories it may be, revision)
    since: datetime | None = None  # aware
    user: str | None = None


@dataclass(frozen=True)
class Row:
    """One name in a search: its newest version that matched, and how many of its versions matched."""

    name: str  # as zoo shows it: my-bert for local/my-bert, org/name for a hub repository
    repo: str
    version: str  # v7: the newest version that matches
    id: str  # its commit or content id
    versions: int  # how many versions of the name match (all of them without filters)
    created: str  # ISO 8601, UTC
    size: int  # bytes of the version's files
    model_type: str | None
    user: str | None  # who made the version (None: made before zoo recorded it)
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)  # the version's labels
    aliases: Mapping[str, str] = field(default_factory=dict, hash=False)  # the name's aliases: alias -> vN
    base: Mapping[str, Any] | None = field(default=None, hash=False)  # {"name", "repo", "version", "id"}
    description: str | None = None
    last_used: float | None = None  # Unix time of the name's last load, None: never

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "repo": self.repo, "version": self.version, "id": self.id,
                "versions": self.versions, "created": self.created, "size": self.size,
                "model_type": self.model_type, "user": self.user, "labels": dict(self.labels),
                "aliases": dict(self.aliases), "base": dict(self.base) if self.base is not None else None,
                "description": self.description, "last_used": self.last_used}


def query(*, model_type: str | None = None, labels: Mapping[str, Any] | Iterable[str] | None = None,
          alias: str | None = None, base: str | None = None, base_repos: Iterable[str] = (),
          since: str | datetime | date | None = None, user: str | int | None = None) -> Query:
    """A checked :class:`Query`; bad input is an :class:`~zoo.errors.InvalidArgumentError` (or
    ``InvalidNameError``) naming what to write. ``labels``: ``{"task": "ner"}`` or ``["task=ner"]``.
    ``since``: an ISO date (``2026-12-01``: midnight, local time) or date and time (``2026-12-01T14:00``,
    local time unless it gives an offset), a ``datetime``/``date``, or ``7d`` / ``12h`` / ``30m`` ago.
    ``base_repos``: more repositories that ``base`` is known to name (a plugin's short name: the door's)."""
    pairs = []
    if isinstance(labels, Mapping):
        items = [(k, v) for k, v in labels.items()]
    else:
        items = []
        for pair in labels or ():
            key, sep, value = str(pair).partition("=")
            if not sep:
                raise InvalidArgumentError(f"--label {_shown(pair)}: write key=value, e.g. --label task=ner")
            items.append((key, value))
    for key, value in items:
        pairs.append((check_label_key(key), str(value)))
    if model_type is not None and (not isinstance(model_type, str) or not model_type):
        raise InvalidArgumentError(f"model type {_shown(model_type)}: expected a model_type such as bert")
    if alias is not None:
        check_alias(alias)
    if user is not None and (not isinstance(user, (str, int)) or isinstance(user, bool) or str(user) == ""):
        raise InvalidArgumentError(f"user {_shown(user)}: expected a user name or a numeric uid")
    return Query(model_type=model_type, labels=tuple(pairs), alias=alias,
                 base=_base(base, base_repos) if base is not None else None,
                 since=parse_since(since) if since is not None else None,
                 user=str(user) if user is not None else None)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 64 else text[:60] + "...'"


def parse_since(value: str | datetime | date) -> datetime:
    """An aware datetime from what ``--since`` takes (see :func:`query`)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.astimezone()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day).astimezone()
    if isinstance(value, str):
        text = value.strip()
        relative = _RELATIVE.match(text)
        if relative:
            unit = {"d": "days", "h": "hours", "m": "minutes"}[relative.group(2)]
            return datetime.now(timezone.utc) - timedelta(**{unit: int(relative.group(1))})
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.astimezone()
    raise InvalidArgumentError(f"--since {_shown(value)}: expected an ISO date (2026-12-01) or date and time "
                               "(2026-12-01T14:30, local time unless an offset is given), or 7d, 12h, 30m ago")


def _base(value: str, extra: Iterable[str]) -> tuple[frozenset[str], str | None]:
    """The repositories ``value`` may name (``NAME``: the saved name, and ``extra``; ``local:NAME``; ``org/name``
    or ``hf:ID``: that hub repository), and the revision asked for (``@vN``, ``@<id>``), as names are read
    everywhere (:mod:`zoo.resolve`)."""
    if not isinstance(value, str) or not value:
        raise InvalidArgumentError(f"--base {_shown(value)}: expected a name such as my-bert or org/name")
    head, _, revision = value.partition("@")
    if revision and version_number(revision) is None and not _HEX.match(revision.lower()):
        raise InvalidArgumentError(f"--base {_shown(value)}: after '@' write a version (v3) or a commit or content "
                                   "id (7 or more hex digits)")
    prefix, sep, rest = head.partition(":")
    try:
        if sep and prefix == "hf":
            repos = {validate_repo_id(rest)}
        elif sep and prefix == "local":
            repos = {f"{LOCAL_NAMESPACE}/{validate_name(rest)}"}
        elif sep:
            raise ValueError(prefix)
        elif "/" in head:
            repos = {validate_repo_id(head)}
        else:
            repos = {f"{LOCAL_NAMESPACE}/{validate_name(head)}", *extra}
    except ValueError:
        raise InvalidArgumentError(f"--base {_shown(value)}: expected a name such as my-bert, local:my-bert, "
                                   "org/name or hf:name, optionally with @vN") from None
    if revision and version_number(revision) is None:
        revision = revision.lower()  # an id: matched as a prefix of the recorded one
    return frozenset(repos), revision or None


def search(reader: "StoreReader", q: Query = Query(), *, folders: Iterable[str] | None = None) -> list[Row]:
    """The names of ``reader``'s store with a version matching ``q``, one :class:`Row` each, in the order
    ``zoo ls`` lists names. ``folders``: only the names of these versions folders (``models--local--my-bert``:
    a caller that keeps the rows of names unchanged since, as the web page does)."""
    reader.disk.check_readable()
    layout = reader.layout
    try:
        only = set(folders) if folders is not None else None
        folders = sorted((e.name, e.path) for e in os.scandir(layout.versions_root) if e.name.startswith("models--")
                         and (only is None or e.name in only))
    except FileNotFoundError:
        return []
    try:  # which names have marks: one listing instead of a failed open per name
        marked = {e.name[:-5] for e in os.scandir(layout.marks_root) if e.name.endswith(".json")}
    except FileNotFoundError:
        marked = set()
    used = str(layout.used_root)
    rows = []
    for folder_name, path in folders:
        repo = _repo_of(folder_name)
        if repo is None:
            continue
        marks = read_marks(layout, repo) if folder_name in marked else Marks()
        found = _match(repo, path, marks, q)
        if found is None:
            continue
        newest, count = found
        try:
            last_used: float | None = os.stat(os.path.join(used, folder_name)).st_mtime
        except OSError:
            last_used = None
        rows.append(Row(name=display_name(repo), repo=repo, version=f"v{newest.number}", id=newest.id,
                        versions=count, created=newest.created, size=newest.total_size,
                        model_type=newest.model_type, user=newest.user,
                        labels=dict(marks.labels.get(f"v{newest.number}", {})),
                        aliases={a.name: a.version for a in sorted(marks.aliases.values(), key=lambda a: a.name)},
                        base=dict(newest.base) if newest.base else None, description=newest.description,
                        last_used=last_used))
    return rows


def _repo_of(folder_name: str) -> str | None:
    try:
        return validate_repo_id(folder_name[len("models--"):].replace("--", "/"))
    except ValueError:
        return None


def _match(repo: str, folder: str, marks: Marks, q: Query) -> "tuple[_Summary, int] | None":
    """The newest version of ``repo`` that matches ``q`` and how many match, or None."""
    try:
        manifests = {int(m.group(1)): e.path for e in os.scandir(folder) if (m := _MANIFEST.match(e.name))}
    except (FileNotFoundError, NotADirectoryError):
        return None
    wanted = _numbers_marked(marks, q)
    if wanted is not None:
        manifests = {n: p for n, p in manifests.items() if n in wanted}
    newest, count = None, 0
    for number in sorted(manifests, reverse=True):
        version = _summary(manifests[number])
        if version is None or version.repo != repo or (wanted is not None and version.number not in wanted):
            continue
        if q.alias is not None and marks.aliases[q.alias].id != version.id:
            continue  # the alias records the content it names: a number reused after a removal is not it
        if _matches(version, q):
            newest = version if newest is None or version.number > newest.number else newest
            count += 1
    return (newest, count) if newest is not None else None


def _numbers_marked(marks: Marks, q: Query) -> set[int] | None:
    """The version numbers that the marks allow (an alias, labels), or None when the query asks neither."""
    wanted: set[int] | None = None
    if q.alias is not None:
        alias = marks.aliases.get(q.alias)
        wanted = {version_number(alias.version) or 0} if alias is not None else set()
    if q.labels:
        labelled = {version_number(v) or 0 for v, labels in marks.labels.items()
                    if all(labels.get(k) == value for k, value in q.labels)}
        wanted = labelled if wanted is None else wanted & labelled
    return wanted


def _matches(version: "_Summary", q: Query) -> bool:
    if q.model_type is not None and version.model_type != q.model_type:
        return False
    if q.user is not None and version.user != q.user and str(version.uid) != q.user:
        return False
    if q.since is not None:
        try:
            created = datetime.fromisoformat(version.created)
        except (TypeError, ValueError):
            return False  # a time that cannot be read is not known to be since anything
        if (created if created.tzinfo else created.replace(tzinfo=timezone.utc)) < q.since:
            return False
    if q.base is not None:
        repos, revision = q.base
        base = version.base or {}
        name = str(base.get("name") or "")
        if (base.get("repo") or (name if "/" in name else f"{LOCAL_NAMESPACE}/{name}")) not in repos:
            return False
        if revision is not None and base.get("version") != revision and not str(base.get("id") or "").startswith(revision):
            return False
    return True


class _Summary(NamedTuple):
    """What a search uses of a manifest: the fields of :class:`~zoo.store.manifests.Version` it reads."""

    repo: str
    number: int
    id: str
    created: str
    total_size: int
    model_type: Any
    user: str | None
    uid: int | None
    base: dict[str, Any] | None
    description: str | None


_FILE_FIELDS = frozenset(f.name for f in fields(FileEntry))
_FILE_REQUIRED = frozenset(f.name for f in fields(FileEntry) if f.default is MISSING)


def _summary(path: str) -> _Summary | None:
    """A manifest as a search needs it, read without building its :class:`Version` (this is most of what
    ``zoo ls`` costs on a large store). The fast path takes only a manifest that :meth:`Version.read` takes as
    it stands (the same keys, the same file entries); anything else goes through :meth:`Version.read` itself,
    which reads it or is warned of and skipped, as every scan of the store does."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
        if type(data) is not dict or type(data["files"]) is not list or not all(
                type(e) is dict and _FILE_REQUIRED <= e.keys() <= _FILE_FIELDS for e in data["files"]):
            raise ValueError("not as zoo writes it")
        data["source"]
        tuple(data.get("architectures") or ())
        user, uid, base, description = data.get("user"), data.get("uid"), data.get("base"), data.get("description")
        return _Summary(data["repo"], int(data["number"]), data["id"], data["created"], data["total_size"],
                        data.get("model_type"), user[:256] if isinstance(user, str) else None,
                        uid if isinstance(uid, int) else None, base if isinstance(base, dict) else None,
                        description[:4096] if isinstance(description, str) else None)
    except FileNotFoundError:
        return None  # removed meanwhile (zoo rm)
    except (ValueError, KeyError, TypeError, OSError, RecursionError):
        version = _read(path)
        if version is None:
            return None
        return _Summary(version.repo, version.number, version.id, version.created, version.total_size,
                        version.model_type, version.user, version.uid, version.base, version.description)


def _read(path: str) -> Version | None:
    """A manifest read as every scan reads it (warned of when it cannot be read)."""
    return read_or_warn(Path(path), stacklevel=5)
