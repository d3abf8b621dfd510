"""Lineage: which version a model was made from.

A version records its base (``{"name", "version", "id"}``) when it is made: ``zoo.save`` of a model that
``zoo.load`` returned records the version loaded, without the user saying so; an import records the model
card's ``base_model`` (``README.md`` front matter) or ``config.json``'s ``_name_or_path`` when that names
something the store holds (a saved name, a hub repository pulled), or a hub repository id (then with no
version: the store cannot tell which commit it was).
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from ..names import LOCAL_NAMESPACE, display_name, local_repo, validate_name, validate_repo_id

if TYPE_CHECKING:
    from .manifests import FileEntry, Version
    from .reader import StoreReader

_FRONT = re.compile(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", re.S)


def source_of(reader: "StoreReader", path: Path) -> dict[str, Any] | None:
    """The version whose snapshot ``path`` is (``$ZOO_HOME/hub/models--org--name/snapshots/<id>``), as a base
    record; None for a folder that is not a snapshot of this store."""
    try:
        path = Path(path).absolute()
        relative = path.relative_to(reader.layout.hub.absolute())
    except ValueError:
        return None
    parts = relative.parts
    if len(parts) != 3 or parts[1] != "snapshots" or not parts[0].startswith("models--"):
        return None
    repo = parts[0][len("models--"):].replace("--", "/")
    matches = [v for v in reader.versions(repo) if v.id == parts[2]]
    if not matches:
        return None
    version = matches[-1]
    return {"name": display_name(repo), "repo": repo, "version": version.name, "id": version.id}


def card_base(text: str) -> str | None:
    """The first ``base_model`` of a model card's YAML front matter (a value or the first item of a list)."""
    match = _FRONT.match(text)
    if not match:
        return None
    lines = match.group(1).splitlines()
    for i, line in enumerate(lines):
        key, sep, value = line.partition(":")
        if key.strip() != "base_model" or not sep or line[:1].isspace():
            continue
        value = value.strip().strip("'\"")
        if value:
            return value.strip("[]").split(",")[0].strip().strip("'\"") or None
        for item in lines[i + 1:]:
            item = item.strip()
            if item.startswith("- "):
                return item[2:].strip().strip("'\"") or None
            if item:
                return None
    return None


def named_base(reader: "StoreReader", name: str) -> dict[str, Any] | None:
    """``name`` as a base record: a saved name or a hub repository the store holds (its newest version), or a hub
    repository id the store does not hold (no version); None for what is neither (a path, a typo'd id)."""
    name = name.strip()
    if name.startswith("local:"):
        name = name[len("local:"):]
    try:
        repo = validate_repo_id(name) if "/" in name else local_repo(validate_name(name))
    except ValueError:
        return None
    if repo.split("/")[0] == LOCAL_NAMESPACE and "/" in name:
        return None
    versions = reader.versions(repo)
    if versions:
        return {"name": display_name(repo), "repo": repo, "version": versions[-1].name, "id": versions[-1].id}
    if "/" in name:  # a hub id the store has not pulled: the hub has it, at some commit the store cannot tell
        return {"name": repo, "repo": repo, "version": None, "id": None}
    return None


def base_of_folder(reader: "StoreReader", folder: Path) -> dict[str, Any] | None:
    """What a folder being imported says it was made from: its card's ``base_model``, else its config's
    ``_name_or_path``, when that names a model (see :func:`named_base`)."""
    candidates = []
    try:
        candidates.append(card_base((Path(folder) / "README.md").read_text(encoding="utf-8", errors="replace")[:65536]))
    except OSError:
        pass
    try:
        raw = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
        if isinstance(raw, dict) and isinstance(raw.get("_name_or_path"), str):
            candidates.append(raw["_name_or_path"])
    except (OSError, ValueError, RecursionError):
        pass
    for name in candidates:
        if name and not name.startswith((".", "/", "~")):
            base = named_base(reader, name)
            if base is not None:
                return base
    return None


def card_title(text: str) -> str | None:
    """A model card's title: its front matter's ``model_name``, else its first ``# `` heading."""
    match = _FRONT.match(text)
    if match:
        for line in match.group(1).splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "model_name" and not line[:1].isspace():
                value = value.strip().strip("'\"")
                if value:
                    return value[:256]
    body = text[match.end():] if match else text
    fenced = False
    for line in body.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and line.startswith("# "):
            return line[2:].strip()[:256] or None
    return None


def about(reader: "StoreReader", version: "Version") -> dict[str, Any]:
    """What the registry knows of a stored version (``zoo info NAME``): description, labels, model card title,
    aliases, base, who made it, on which host, when."""
    marks = reader.marks(version.repo)
    title = None
    if any(e.path == "README.md" for e in version.files):
        try:
            with open(reader.snapshot(version) / "README.md", "rb") as f:
                title = card_title(f.read(65536).decode("utf-8", errors="replace"))
        except OSError:
            pass
    return {
        "name": display_name(version.repo), "repo": version.repo, "version": version.name, "id": version.id,
        "description": version.description, "labels": dict(marks.labels.get(version.name, {})),
        "card_title": title, "aliases": marks.aliases_of(version.name), "base": version.base,
        "user": version.user, "uid": version.uid, "host": version.host, "created": version.created,
        "source": version.source,
    }


# -- what a version shares with its base: the sha256 of each tensor's bytes --------------------------------

RECORD_FORMAT = 1
_CHUNK = 1 << 20
_computed: dict[str, dict[str, list]] = {}  # sha256 -> tensor digests this process could not record


def _is_safetensors(entry: "FileEntry") -> bool:
    return entry.path.endswith(".safetensors")


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _read_record(reader: "StoreReader", sha256: str) -> dict[str, list] | None:
    try:
        raw = json.loads(reader.layout.tensors_path(sha256).read_text(encoding="utf-8"))
        tensors = raw["tensors"]
        if raw.get("format") != RECORD_FORMAT or raw.get("sha256") != sha256 or not isinstance(tensors, dict):
            return None
        if all(isinstance(t, list) and len(t) == 2 and isinstance(t[0], str) and type(t[1]) is int
               for t in tensors.values()):
            return tensors
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        pass
    return None


def tensor_digests(reader: "StoreReader", sha256: str) -> dict[str, list]:
    """``{tensor name: [sha256 of its bytes, bytes]}`` of the safetensors object ``sha256``, from its record
    (``tensors/<sha256>.json``: content-addressed, so valid for as long as the object exists), else computed in
    one read of the file, which also re-hashes the whole file: a record is written only for bytes whose sha256
    is the object's name. A reader that may not write the store (another user's) keeps it in memory.
    Raises :class:`~zoo.errors.CorruptCheckpointError` (a damaged header) or
    :class:`~zoo.errors.IntegrityError` (the bytes are not the object's), naming the file."""
    import hashlib

    from ..errors import IntegrityError
    from ..model.weights import read_safetensors_header

    known = _computed.get(sha256) or _read_record(reader, sha256)
    if known is not None:
        return known
    path = reader.object_path(sha256)
    header = read_safetensors_header(path)  # checked against the file's size; raises for a damaged one
    whole = hashlib.sha256()
    tensors: dict[str, list] = {}
    with open(path, "rb") as f:
        start = min((t.start for t in header.tensors.values()), default=f.seek(0, 2))
        f.seek(0)
        whole.update(f.read(start))
        for name, info in sorted(header.tensors.items(), key=lambda item: item[1].start):
            h, left = hashlib.sha256(), info.end - info.start
            while left > 0:
                chunk = f.read(min(_CHUNK, left))
                if not chunk:
                    break
                h.update(chunk)
                whole.update(chunk)
                left -= len(chunk)
            tensors[name] = [h.hexdigest(), info.end - info.start]
        whole.update(f.read())
    if whole.hexdigest() != sha256:
        raise IntegrityError(f"{path}: its bytes no longer have the sha256 it is stored under (changed on disk); "
                             "zoo verify quarantines it and the next pull or import brings it again")
    record = json.dumps({"format": RECORD_FORMAT, "sha256": sha256, "tensors": tensors}, separators=(",", ":"))
    try:
        reader.disk.write_text(reader.layout.tensors_path(sha256), record)
    except OSError:  # another user's store: this reader keeps it in memory, for this process
        if len(_computed) >= 1024:
            _computed.clear()
        _computed[sha256] = tensors
    return tensors


@dataclass
class Shares:
    """What a version's safetensors weights share with its base's: tensors whose bytes are identical (the same
    sha256), counted and in bytes; ``again``: the shared bytes it stores in files of its own (not a file of the
    base, which the store already holds once). ``note``: why it could not be told (then the counts are 0)."""

    tensors: int = 0
    of_tensors: int = 0
    unchanged: int = 0  # of ``tensors``: under the same name in the base (the others match a tensor of another name)
    bytes: int = 0
    of_bytes: int = 0
    again: int = 0
    whole_files: int = 0
    note: str | None = None

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _where(version: "Version", entry: "FileEntry") -> str:
    return f"{display_name(version.repo)}@{version.name} {entry.path}"


def shares(reader: "StoreReader", version: "Version", base: "Version") -> Shares:
    """What ``version`` shares with ``base``: a file of both (the same sha256) is shared whole, without hashing;
    the other safetensors files are compared tensor by tensor (:func:`tensor_digests`)."""
    from ..errors import ZooError
    from ..model.weights import read_safetensors_header

    out = Shares()
    base_files = {e.sha256 for e in base.files}
    mine = sorted({e.sha256: e for e in version.files if _is_safetensors(e)}.values(), key=lambda e: e.path)
    if not mine:
        out.note = f"{display_name(version.repo)}@{version.name} has no safetensors weights to compare"
        return out
    base_digests: dict[str, str] | None = None  # tensor name -> sha256 of its bytes, in the base
    known: set[str] = set()
    where = ""
    try:
        for entry in mine:
            where = _where(version, entry)
            if entry.sha256 in base_files:
                sizes = [t.end - t.start for t in read_safetensors_header(reader.object_path(entry.sha256)).tensors.values()]
                out.tensors, out.of_tensors = out.tensors + len(sizes), out.of_tensors + len(sizes)
                out.unchanged += len(sizes)
                out.bytes, out.of_bytes = out.bytes + sum(sizes), out.of_bytes + sum(sizes)
                out.whole_files += 1
                continue
            if base_digests is None:
                base_digests = {}
                for other in (e for e in base.files if _is_safetensors(e)):
                    where = _where(base, other)
                    base_digests.update((n, d) for n, (d, _) in tensor_digests(reader, other.sha256).items())
                known = set(base_digests.values())
                where = _where(version, entry)
            for name, (digest, size) in tensor_digests(reader, entry.sha256).items():
                out.of_tensors += 1
                out.of_bytes += size
                if digest in known:
                    out.tensors += 1
                    out.unchanged += base_digests.get(name) == digest
                    out.bytes += size
                    out.again += size
    except (ZooError, OSError) as exc:
        return Shares(note=f"{where}: {_first_line(exc)}")
    return out


# -- the tree -------------------------------------------------------------------------------------------------

MAX_DEPTH = 32  # a lineage deeper than this is cut (a chain of saves that long is a loop or an accident)


class _Scan:
    """A reader whose manifests are read once per name for one answer (a store of thousands of versions)."""

    def __init__(self, reader: "StoreReader") -> None:
        self._reader = reader
        self._versions: dict[str, list] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)

    def versions(self, repo: str) -> "list[Version]":
        if repo not in self._versions:
            self._versions[repo] = self._reader.versions(repo)
        return self._versions[repo]

    def iter_versions(self) -> "Iterator[Version]":
        for repo in self._reader.repos():
            yield from self.versions(repo)


def stored_base(reader: "StoreReader", base: dict[str, Any] | None) -> "Version | None":
    """The stored version a base record names (by its content id, else its version), or None."""
    if not isinstance(base, dict):
        return None
    repo = base.get("repo") or base.get("name")
    if not isinstance(repo, str):
        return None
    try:
        repo = repo if "/" in repo else local_repo(validate_name(repo))
        versions = reader.versions(repo)
    except ValueError:
        return None
    by_id = [v for v in versions if base.get("id") and v.id == base.get("id")]
    if by_id:
        return next((v for v in by_id if v.name == base.get("version")), by_id[-1])
    if base.get("id") is None and base.get("version"):  # a record without an id: its version number
        return next((v for v in versions if v.name == base.get("version")), None)
    return None


def _node(reader: "StoreReader", version: "Version", cache: dict | None) -> dict[str, Any]:
    base = stored_base(reader, version.base)
    key = (version.manifest, base.manifest if base else None)
    if base is not None and cache is not None and key not in cache:
        cache[key] = shares(reader, version, base).as_json()
    return {"name": display_name(version.repo), "repo": version.repo, "version": version.name, "id": version.id,
            "stored": True, "aliases": reader.marks(version.repo).aliases_of(version.name),
            "base": version.base, "shares": cache.get(key) if cache is not None else None}


def _base_node(record: dict[str, Any]) -> dict[str, Any]:
    """A base the store does not hold: a hub id it has not pulled, or a version removed since."""
    repo = record.get("repo") or record.get("name")
    return {"name": record.get("name") or repo, "repo": repo, "version": record.get("version"),
            "id": record.get("id"), "stored": False, "aliases": [], "base": None, "shares": None}


def tree(reader: "StoreReader", repo: str, spec: str | None = None, *, with_shares: bool = True) -> dict[str, Any]:
    """``zoo lineage``: the version ``repo@spec`` names (the newest without one), its bases above (nearest
    first: each version's recorded ``base``, followed upward), and below, every version saved or imported from
    a version of ``repo`` (with what those were made from, and so on), each with its aliases and what it shares
    with its base (:func:`shares`). A name the store does not hold but versions were made from (a hub base
    never pulled) is the root with ``stored: False``: what was made from it is still found."""
    from ..errors import UnknownNameError

    version = reader.find(repo, spec)
    reader = _Scan(reader)  # type: ignore[assignment]
    children: dict[str, list] = {}
    for other in reader.iter_versions():
        if isinstance(other.base, dict):
            named = other.base.get("repo") or other.base.get("name")
            if isinstance(named, str):
                children.setdefault(named if "/" in named else f"{LOCAL_NAMESPACE}/{named}", []).append(other)
    if version is None and (spec or repo not in children):
        name = display_name(repo)
        raise UnknownNameError(f"{name}@{spec}: no such version of {name} in the store {reader.home} (zoo versions "
                               f"{name} lists them)" if spec else f"{name} is not in the store {reader.home}, and "
                               "no version there was made from it (zoo ls lists the names)")
    cache: dict | None = {} if with_shares else None  # without: nothing hashed, nothing recorded (the web page)
    bases: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    if version is None:
        root = _base_node({"name": display_name(repo), "repo": repo, "version": None, "id": None})
    else:
        root, record = _node(reader, version, cache), version.base
        seen.add((version.repo, version.id))
        while isinstance(record, dict) and len(bases) < MAX_DEPTH:
            found = stored_base(reader, record)
            if found is None:
                bases.append(_base_node(record))
                break
            if (found.repo, found.id) in seen:
                break
            seen.add((found.repo, found.id))
            bases.append(_node(reader, found, cache))
            record = found.base

    def below(of: "Version | None", depth: int) -> list[dict[str, Any]]:
        out = []
        for child in children.get(of.repo if of else repo, []):
            made_from = stored_base(reader, child.base)
            if (child.repo, child.id) in seen or (of is not None and made_from != of) or depth >= MAX_DEPTH:
                continue
            seen.add((child.repo, child.id))
            node = _node(reader, child, cache)
            at = child.base.get("version")
            node["from"] = f"{display_name(made_from.repo)}@{made_from.name}" if made_from else \
                display_name(repo) + (f"@{at}" if isinstance(at, str) else "")
            node["derived"] = below(child, depth + 1)
            out.append(node)
        return out

    root["bases"] = bases
    root["derived"] = below(None, 0)
    return root


# -- zoo du: what tensor-level dedupe against the base would save ---------------------------------------------

@dataclass
class Restored:
    """Bytes of tensors that versions store again: tensors of a version's safetensors files whose bytes are
    identical to a tensor of its stored base, in files that are not the base's (a file of both is stored once).
    Each stored object is counted once, however many versions hold it. What storing each tensor once would
    save; ``notes``: versions that could not be compared, and why."""

    bytes: int = 0
    tensors: int = 0
    files: int = 0
    versions: int = 0
    notes: list[str] = field(default_factory=list)


def restored(reader: "StoreReader") -> Restored:
    """:class:`Restored` over the whole store (from ``tensors/`` records; computed once per object). An object
    that cannot be read is named once in ``notes``, with a version and file that hold it."""
    from ..errors import ZooError

    out = Restored()
    reader = _Scan(reader)  # type: ignore[assignment]
    bad: dict[str, str] = {}  # object -> its problem, noted once

    def digests_of(version: "Version", entry: "FileEntry") -> dict[str, list] | None:
        if entry.sha256 in bad:
            return None
        try:
            return tensor_digests(reader, entry.sha256)
        except (ZooError, OSError) as exc:
            bad[entry.sha256] = f"{_where(version, entry)}: {_first_line(exc)}"
            return None

    against: dict[str, tuple[set[str], "Version", "FileEntry"]] = {}  # object -> base digests, who holds it
    digests: dict[str, set[str] | None] = {}  # base version's manifest -> its tensor digests (None: unreadable)
    for version in reader.iter_versions():
        base = stored_base(reader, version.base)
        if base is None:
            continue
        base_files = {e.sha256 for e in base.files}
        own = [e for e in version.files if _is_safetensors(e) and e.sha256 not in base_files]
        key = str(base.manifest)
        if own and key not in digests:
            found = [digests_of(base, e) for e in base.files if _is_safetensors(e)]
            digests[key] = None if None in found else {d for f in found if f for d, _ in f.values()}
        if not own or digests[key] is None:
            continue
        out.versions += 1
        for entry in own:
            against.setdefault(entry.sha256, (set(), version, entry))[0].update(digests[key] or ())
    for wanted, version, entry in against.values():
        sizes = [size for digest, size in (digests_of(version, entry) or {}).values() if digest in wanted]
        if sizes:
            out.files += 1
            out.tensors += len(sizes)
            out.bytes += sum(sizes)
    out.notes = list(bad.values())
    return out
