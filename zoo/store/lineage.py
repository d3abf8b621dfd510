"""Lineage: which version a model was made from.

A version records its base (``{"name", "version", "id"}``) when it is made: ``zoo.save`` of a model that
``zoo.load`` returned records the version loaded, without the user saying so; an import records the model
card's ``base_model`` (``README.md`` front matter) or ``config.json``'s ``_name_or_path`` when that names
something the store holds (a saved name, a hub repository pulled), or a hub repository id (then with no
version: the store cannot tell which commit it was).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..names import LOCAL_NAMESPACE, display_name, local_repo, validate_name, validate_repo_id

if TYPE_CHECKING:
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
