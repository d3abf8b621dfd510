"""Aliases and labels: the marks a team puts on versions (``marks/models--org--name.json``).

- An **alias** (``prod``, ``champion``) points at one version of a name; tagging again moves it. The file is
  replaced whole by an atomic rename, so a load that reads it meanwhile gets the old or the new version, never a
  mix. Each alias records who set it first (``owner``: through the daemon only they, root and the admin group may
  move it) and who moved it last, and when.
- **Labels** are ``key=value`` pairs on a version (``task=ner``, ``team=search``).

Names of aliases are checked here (:func:`check_alias`): an alias never looks like something else a revision
can be (a zoo version ``v3``, a commit or content id, ``main``/``HEAD``, or a branch or tag the upstream is
known to have), so it never shadows a name the upstream gives.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import atomic
from ..errors import CacheWarning, IntegrityError, InvalidNameError
from ..names import version_number
from .events import Actor

if TYPE_CHECKING:
    from .disk import Disk
    from .layout import Layout

_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}\Z")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_HEX = re.compile(r"^[0-9a-fA-F]{7,}\Z")
RESERVED = ("main", "HEAD", "latest", "newest")
MAX_LABEL_VALUE = 256
MAX_LABELS = 64
MAX_ALIASES = 256


@dataclass(frozen=True)
class Alias:
    name: str
    version: str  # v7
    id: str  # the version's commit or content id, so an alias never follows a number to other content
    owner: Actor  # who set it first: through the daemon, only they (or root, or an admin) may move it
    by: Actor  # who set it last
    when: str  # ISO 8601, UTC

    def as_json(self) -> dict[str, Any]:
        return {"version": self.version, "id": self.id, "owner": self.owner.as_json(), "by": self.by.as_json(),
                "when": self.when}

    @classmethod
    def from_json(cls, name: str, raw: Any) -> "Alias":
        owner, by = Actor.from_json(raw.get("owner")), Actor.from_json(raw.get("by"))
        if owner is None or by is None or version_number(raw.get("version")) is None:
            raise ValueError(f"alias {name!r} is not a zoo alias record")
        return cls(name, raw["version"], str(raw["id"]), owner, by, str(raw.get("when", "")))


@dataclass(frozen=True)
class Marks:
    """A name's aliases and its versions' labels, as one file holds them."""

    aliases: dict[str, Alias] = field(default_factory=dict)
    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # "v3" -> {key: value}

    def aliases_of(self, version: str) -> list[str]:
        return sorted(a.name for a in self.aliases.values() if a.version == version)

    def to_json(self) -> str:
        return json.dumps({"aliases": {k: a.as_json() for k, a in sorted(self.aliases.items())},
                           "labels": {v: dict(sorted(l.items())) for v, l in sorted(self.labels.items()) if l}},
                          indent=2, ensure_ascii=False)


def read_file(path: Path) -> Marks:
    """The marks in ``path``, strictly: ``FileNotFoundError`` when there is none; ``ValueError``/``OSError`` naming
    what is wrong when it is not a zoo marks file (or not a regular file: a symlink or FIFO is never followed)."""
    from .history import open_regular

    data = json.loads(open_regular(path).decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    aliases = {}
    for name, raw in (data.get("aliases") or {}).items():
        aliases[name] = Alias.from_json(name, raw)
    labels = {v: {str(k): str(x) for k, x in l.items()} for v, l in (data.get("labels") or {}).items()
              if version_number(v) is not None and isinstance(l, dict)}
    return Marks(aliases, labels)


def read(layout: "Layout", repo: str, *, strict: bool = False) -> Marks:
    """The marks of ``repo``; none when there is no file. An unreadable file is a :class:`CacheWarning` naming it
    (no alias resolves until it is fixed; a plain name still loads). ``strict`` (every writer: tag, untag, label,
    removal, eviction): an :class:`IntegrityError` instead, so that nothing is decided, or written over, from
    marks that could not be read."""
    path = layout.marks_path(repo)
    try:
        return read_file(path)
    except FileNotFoundError:
        return Marks()
    except (OSError, ValueError, AttributeError, TypeError, RecursionError) as exc:
        problem = (f"{path} is not a readable zoo aliases file ({type(exc).__name__}: {exc}); zoo writes it "
                   "atomically, so something else changed it. Restore it from a backup, or move it away and tag "
                   "and label again")
        if strict:
            raise IntegrityError(problem + "; nothing was changed") from None
        warnings.warn(problem + "; the aliases and labels of that name are ignored until then", CacheWarning,
                      stacklevel=3)
        return Marks()


def write(layout: "Layout", disk: "Disk", repo: str, marks: Marks) -> None:
    """Replace ``repo``'s marks whole (atomic rename). Callers hold the name's lock."""
    path = layout.marks_path(repo)
    if not marks.aliases and not any(marks.labels.values()):
        path.unlink(missing_ok=True)
        atomic.sync_dir(path.parent)
        return
    disk.write_text(path, marks.to_json() + "\n", durable=True)  # synced before the change is recorded


def check_alias(alias: str, *, upstream_ref: str | None = None) -> str:
    """``alias`` if it may be an alias; else an :class:`InvalidNameError` naming the rule it breaks.
    ``upstream_ref``: the commit the upstream's branch or tag of that name is known to point at."""
    shown = repr(alias) if isinstance(alias, str) and len(alias) <= 64 else "that alias"
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias) or ".." in alias:
        raise InvalidNameError(f"invalid alias {shown}: an alias starts with a letter and has at most 64 letters, "
                               "digits, '.', '_' and '-' (no '/', no '..'), e.g. prod or champion")
    if version_number(alias.lower()) is not None:  # V3 too: a look-alike of v3
        raise InvalidNameError(f"invalid alias {shown}: it looks like zoo's version {alias}; choose a word, e.g. "
                               "prod or stable")
    if _HEX.fullmatch(alias):
        raise InvalidNameError(f"invalid alias {shown}: it could be read as a commit or content id (7 or more hex "
                               "digits); choose a word with other letters")
    if alias.lower() in {r.lower() for r in RESERVED}:  # Main, HEAD, head...
        raise InvalidNameError(f"invalid alias {shown}: {', '.join(RESERVED)} are reserved (main is the newest "
                               "version of a saved name, the default branch of a hub repository)")
    if upstream_ref is not None:
        raise InvalidNameError(f"invalid alias {shown}: the upstream has a branch or tag {alias!r} (last seen at "
                               f"commit {upstream_ref[:12]}); an alias never shadows an upstream's ref: choose "
                               "another word")
    return alias


def check_labels(labels: Any) -> dict[str, str]:
    """``{key: value}`` if every key and value may be a label; else an :class:`InvalidNameError` naming the rule."""
    if not isinstance(labels, dict):
        raise InvalidNameError(f"labels must be a dict of key to value, e.g. {{'task': 'ner'}}, not {type(labels).__name__}")
    out = {}
    for key, value in labels.items():
        check_label_key(key)
        if not isinstance(value, (str, int, float, bool)):
            raise InvalidNameError(f"label {key}: its value must be text (or a number), not {type(value).__name__}")
        text = str(value)
        if len(text) > MAX_LABEL_VALUE or not text.isprintable():
            raise InvalidNameError(f"label {key}: its value must be printable text of at most {MAX_LABEL_VALUE} "
                                   "characters")
        out[key] = text
    if len(out) > MAX_LABELS:
        raise InvalidNameError(f"at most {MAX_LABELS} labels per version")
    return out


def check_label_key(key: Any) -> str:
    if not isinstance(key, str) or not _LABEL_KEY.fullmatch(key) or ".." in key:
        shown = repr(key) if isinstance(key, str) and len(key) <= 64 else "that key"
        raise InvalidNameError(f"invalid label key {shown}: letters, digits, '.', '_' and '-', at most 64, "
                               "starting with a letter or digit (e.g. task, team)")
    return key


def moved(marks: Marks, alias: str, version: str, id: str, who: Actor, when: str) -> Marks:
    """``marks`` with ``alias`` pointing at ``version`` (its owner kept when it already existed)."""
    old = marks.aliases.get(alias)
    if old is None and len(marks.aliases) >= MAX_ALIASES:
        raise InvalidNameError(f"a name has at most {MAX_ALIASES} aliases; remove one first (zoo untag NAME ALIAS)")
    entry = Alias(alias, version, id, old.owner if old else who, who, when)
    return replace(marks, aliases={**marks.aliases, alias: entry})


def without(marks: Marks, alias: str) -> Marks:
    return replace(marks, aliases={k: a for k, a in marks.aliases.items() if k != alias})


def relabelled(marks: Marks, version: str, set_: dict[str, str], removed: list[str]) -> Marks:
    labels = {k: v for k, v in marks.labels.get(version, {}).items() if k not in removed}
    labels.update(set_)
    if len(labels) > MAX_LABELS:
        raise InvalidNameError(f"a version has at most {MAX_LABELS} labels ({len(labels)} asked); remove some first "
                               "(zoo label NAME@vN --rm KEY)")
    return replace(marks, labels={**marks.labels, version: labels})
