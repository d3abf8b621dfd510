"""The registry as the Hub protocol shows it: refs (branches and tags), commits, and each file's last commit,
built from a name's versions (:class:`~zoo.store.manifests.Version`) and marks (aliases). Data only: no
store, no HTTP.

- **Refs** (``GET /api/models/{repo}/refs``): the branch ``main`` (a ``local/`` name's newest version, a hub
  repository's default branch); a tag per alias; and for ``local/`` names a tag ``vN`` per version (there
  ``vN`` is a revision clients can ask for). A hub repository's zoo versions are ``zoo:vN``, which is not a
  git ref name: they are not listed as tags (``list_repo_commits`` lists them).
- **Commits** (``GET /api/models/{repo}/commits/{rev}``): the versions up to ``rev``, newest first; each
  commit's title says which version and who made it, on which host (``v3 by alice on gpu-01``), its date is
  when, its author the user, its message the description and where it came from.
- **Last commits** (``expand=true``): a file's last commit is the oldest version from which the file has had
  the same content up to the one asked for, as ``git log -1 -- PATH`` would say if the versions were commits
  one after the other.
"""

from __future__ import annotations

from typing import Any

from ..store.manifests import Version
from ..store.marks import Marks
from .protocol import hub_time


def who(version: Version) -> str:
    """Who made ``version``: the user (or uid) it records, or that it records none."""
    if version.user:
        return version.user
    if version.uid is not None:
        return f"uid {version.uid}"
    return "unknown"


def title(version: Version) -> str:
    """A commit's title: which version, who made it, where (never the aliases: they move, a title stays)."""
    return f"{version.name} by {who(version)}" + (f" on {version.host}" if version.host else "")


def message(version: Version) -> str:
    parts = [version.description] if version.description else []
    parts.append(f"source: {version.source}")
    if version.base:
        base = version.base
        parts.append("base: " + "@".join(str(base[k]) for k in ("name", "version") if base.get(k)))
    return "\n".join(parts)


def ref(name: str, kind: str, commit: str) -> dict[str, str]:
    return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": commit}


def local_refs(versions: list[Version], marks: Marks, *, prs: bool = False) -> dict[str, Any]:
    """The refs of a ``local/`` name: ``main``, its aliases and its versions as tags."""
    by_number = {v.name: v for v in versions}
    tags = [ref(a.name, "tags", a.id) for a in sorted(marks.aliases.values(), key=lambda a: a.name)
            if a.version in by_number and by_number[a.version].id == a.id]
    tags += [ref(v.name, "tags", v.id) for v in reversed(versions)]
    out: dict[str, Any] = {"branches": [ref("main", "heads", versions[-1].id)] if versions else [],
                           "converts": [], "tags": tags}
    if prs:
        out["pullRequests"] = []
    return out


def hub_refs(main: str | None, versions: list[Version], marks: Marks, upstream: dict[str, Any] | None,
             *, shadowed: set[str] = frozenset(), prs: bool = False) -> dict[str, Any]:
    """The refs of a hub repository: the upstream's (when it answered), else ``main``; with the aliases as tags
    (an alias never takes a name the upstream has: the upstream's ref is listed, the alias left out, as are the
    aliases in ``shadowed``, names the upstream was last seen to have)."""
    branches = list(upstream.get("branches") or []) if upstream else []
    tags = list(upstream.get("tags") or []) if upstream else []
    if not upstream and main:
        branches = [ref("main", "heads", main)]
    taken = {r.get("name") for r in branches + tags if isinstance(r, dict)} | set(shadowed)
    ids = {v.name: v.id for v in versions}
    tags += [ref(a.name, "tags", a.id) for a in sorted(marks.aliases.values(), key=lambda a: a.name)
             if a.name not in taken and ids.get(a.version) == a.id]
    out: dict[str, Any] = {"branches": branches, "converts": list((upstream or {}).get("converts") or []),
                           "tags": tags}
    if prs:
        out["pullRequests"] = list((upstream or {}).get("pullRequests") or [])
    return out


def commits(versions: list[Version], upto: Version) -> list[dict[str, Any]]:
    """The versions up to ``upto``, newest first, as the Hub lists commits."""
    out = []
    for v in reversed(versions):
        if v.number > upto.number:
            continue
        out.append({"id": v.id, "title": title(v), "message": message(v),
                    "authors": [{"user": who(v), "avatar": None}], "date": hub_time(v.created)})
    return out


def last_commits(versions: list[Version], upto: Version) -> dict[str, dict[str, str]]:
    """Each file of ``upto``: the version that last changed it (``lastCommit``: id, title, date)."""
    older = [v for v in versions if v.number < upto.number]
    out = {}
    for entry in upto.files:
        since = upto
        for v in reversed(older):  # back while the file stays the same
            same = next((f for f in v.files if f.path == entry.path), None)
            if same is None or same.sha256 != entry.sha256:
                break
            since = v
        out[entry.path] = commit_stamp(since)
    return out


def commit_stamp(version: Version) -> dict[str, str]:
    return {"id": version.id, "title": title(version), "date": hub_time(version.created)}


def served_stamp(commit: str, when: str | None, version: Version | None) -> dict[str, str]:
    """The last commit zoo can name for a file of an upstream's commit (its listing does not say which commit
    changed each file): the commit served."""
    if version is not None and version.id == commit:
        return commit_stamp(version)
    return {"id": commit, "title": f"commit {commit[:12]}", "date": hub_time(when)}


def with_last_commit(entry: dict[str, Any], stamp: dict[str, str] | None) -> dict[str, Any]:
    return {**entry, "lastCommit": stamp} if stamp is not None else entry


def folder_stamp(paths: list[str], stamps: dict[str, dict[str, str]]) -> dict[str, str] | None:
    """A folder's last commit: the newest of its files'."""
    found = [stamps[p] for p in paths if p in stamps]
    return max(found, key=lambda s: s["date"]) if found else None


__all__ = ["commits", "folder_stamp", "hub_refs", "last_commits", "local_refs", "served_stamp", "title",
           "with_last_commit"]
