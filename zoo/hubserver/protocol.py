"""The Hugging Face Hub's HTTP protocol, as data: what a request asks for, and the JSON and headers of the
answers that huggingface_hub, transformers and ``hf download`` read. No HTTP library here, no store.

What clients call (huggingface_hub 2.x):

- ``GET /api/models/{repo}[/revision/{rev}]`` -> ``sha``, ``siblings`` (``?blobs=true``: sizes, blob ids, lfs);
- ``GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=..`` -> entries, pages linked by ``Link: rel="next"``;
- ``POST /api/models/{repo}/paths-info/{rev}`` (form or JSON ``paths``) -> the entries of those paths;
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` -> ``X-Repo-Commit``, ``ETag`` (sha256 of an LFS file, git
  blob sha1 of others), ``X-Linked-Etag``/``X-Linked-Size``, ``Content-Length``, ``Accept-Ranges``; 206/416.
- ``HEAD``/``GET /{repo}/raw/{rev}/{path}`` -> the git blob: a small file's bytes, an LFS file's pointer text
  (``@huggingface/hub``'s ``fileExists`` and ``downloadFile({raw: true})``);
- ``GET /api/models/{repo}/refs`` -> ``branches``, ``tags``, ``converts`` (``pullRequests`` with ``include_prs``);
- ``GET /api/models/{repo}/commits/{rev}`` -> commits newest first (``id``, ``title``, ``message``, ``authors``,
  ``date``), pages linked by ``Link: rel="next"``;
- ``expand=true`` on ``tree`` and ``paths-info`` adds each entry's ``lastCommit`` (``id``, ``title``, ``date``);
- ``GET /api/zoo`` -> ``{"server": "zoo", ...}``: how a zoo daemon knows its upstream is one (:mod:`.tier`).
- Errors: ``X-Error-Code`` ``RepoNotFound`` / ``RevisionNotFound`` / ``EntryNotFound`` / ``GatedRepo`` and
  ``X-Error-Message``, which huggingface_hub turns into its exceptions.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
_HEX40 = re.compile(r"^[0-9a-f]{40}\Z")
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")
MAX_PATH = 1024


class HubError(Exception):
    """An answer with an error code: ``status``, the hub's ``code`` (``X-Error-Code``) and a message."""

    def __init__(self, status: int, code: str | None, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.commit: str | None = None  # an absent file: the commit it is absent from

    def headers(self) -> dict[str, str]:
        out = {"X-Error-Message": _header_text(self.message)}
        if self.code:
            out["X-Error-Code"] = self.code
        if self.commit:
            out["X-Repo-Commit"] = self.commit
        return out

    def body(self) -> dict[str, str]:
        return {"error": self.message}


def repo_not_found(repo: str, why: str = "") -> HubError:
    return HubError(404, "RepoNotFound", f"Repository {repo} not found on this zoo server{why}")


def revision_not_found(repo: str, revision: str, why: str = "") -> HubError:
    return HubError(404, "RevisionNotFound", f"Invalid rev id: {revision} ({repo}){why}")


def entry_not_found(repo: str, revision: str, path: str, why: str = "") -> HubError:
    return HubError(404, "EntryNotFound", f"{path} does not exist in {repo}@{revision}{why}")


def bad_request(message: str) -> HubError:
    return HubError(400, None, message)


def _header_text(text: str) -> str:
    """A header value: printable ASCII on one line."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:500]


# -- requests ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    """What a path asks for. ``kind``: info, tree, paths-info, refs, commits, zoo, resolve or raw."""

    kind: str
    repo: str
    revision: str | None = None
    path: str = ""


def _segments(raw_path: str) -> list[str]:
    """The path's segments, each percent-decoded on its own (so ``%2F`` stays inside a segment and an
    encoded ``..`` is seen as ``..``). Empty, ``.`` and ``..`` segments, NULs and control characters are
    refused."""
    parts = raw_path.split("?", 1)[0].split("/")[1:]
    out = []
    for part in parts:
        text = unquote(part, errors="strict")
        if text in ("", ".", "..") or any(ord(c) < 32 or c == "\x7f" for c in text) or "\\" in text:
            raise bad_request(f"invalid path segment {part[:80]!r}")
        out.append(text)
    return out


def parse(raw_path: str, method: str) -> Request:
    """The request a raw (still percent-encoded) path names; :class:`HubError` when it names none."""
    if len(raw_path) > 4 * MAX_PATH:
        raise bad_request("path too long")
    if raw_path.split("?", 1)[0] in ("", "/"):
        raise HubError(404, None, "a zoo server: set HF_ENDPOINT to this address (it answers /api/models/... "
                                  "and /REPO/resolve/...)")
    try:
        parts = _segments(raw_path.split("?", 1)[0].rstrip("/") if raw_path.count("/") > 1 else raw_path)
    except UnicodeDecodeError:
        raise bad_request("the path is not UTF-8") from None
    if parts[:1] in (["datasets"], ["spaces"]) or parts[:2] in (["api", "datasets"], ["api", "spaces"]):
        raise HubError(404, "RepoNotFound", "this zoo server serves models only")
    if parts == ["api", "zoo"] and method in ("GET", "HEAD"):
        return Request("zoo", "")
    if parts[:2] == ["api", "models"]:
        rest = parts[2:]
        if len(rest) in (2, 3) and rest[-1] == "refs" and method in ("GET", "HEAD"):
            return Request("refs", "/".join(rest[:-1]), None)
        for marker, kind in (("revision", "info"), ("tree", "tree"), ("paths-info", "paths-info"),
                             ("commits", "commits")):
            for n in (1, 2):  # repo ids have one or two parts
                if len(rest) > n and rest[n] == marker:
                    revision = rest[n + 1] if len(rest) > n + 1 else None
                    if revision is None or (kind != "tree" and len(rest) > n + 2):
                        raise bad_request(f"expected /api/models/REPO/{marker}/REVISION")
                    if (method == "POST") != (kind == "paths-info"):
                        raise HubError(405, None, "paths-info is a POST; everything else GET or HEAD "
                                                  "(this zoo server is read-only)")
                    return Request(kind, "/".join(rest[:n]), revision, "/".join(rest[n + 2:]))
        if 1 <= len(rest) <= 2 and method in ("GET", "HEAD"):
            return Request("info", "/".join(rest), None)
        raise HubError(404, None, "no such API route on this zoo server")
    if parts[:1] == ["models"]:  # /models/REPO/resolve/... is accepted too
        parts = parts[1:]
    for n in (1, 2):
        if len(parts) > n + 2 and parts[n] in ("resolve", "raw"):
            if method not in ("GET", "HEAD"):
                raise HubError(405, None, "files are read-only here: GET or HEAD")
            path = "/".join(parts[n + 2:])
            if len(path) > MAX_PATH:
                raise bad_request("file path too long")
            return Request(parts[n], "/".join(parts[:n]), parts[n + 1], path)
    raise HubError(404, None, "not a route of this zoo server (it answers /api/models/... and /REPO/resolve/...)")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """``Range: bytes=a-b`` -> (start, end exclusive); None when absent or not one byte range (the whole
    file is sent, as RFC 9110 allows); ``"unsatisfiable"`` for a range that starts past the end. Numbers
    of any length are read (one of 5,000 digits is past the end of every file, not an error)."""
    if not header:
        return None
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not match or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if not first:  # a suffix: the last N bytes
        n = _position(last)
        if n == 0:
            return "unsatisfiable"
        return max(size - n, 0), size
    start = _position(first)
    end = min(_position(last) + 1, size) if last else size
    if last and _position(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, end


def _position(digits: str) -> int:
    """A byte position of a Range header; past 2**63 (beyond any file) as 2**63, so that a number of
    thousands of digits is neither converted (Python refuses over 4,300) nor an error."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 19 else 1 << 63


# -- answers -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServedFile:
    """A file as the protocol shows it."""

    path: str
    size: int
    sha256: str | None  # known for LFS files and for every stored file
    etag: str  # the hub's ETag: sha256 for LFS files, the git blob sha1 for the others
    mtime_ns: int = 0  # of the stored object when last checked (0: not stored as part of a version)

    @property
    def lfs(self) -> bool:
        return bool(_HEX64.match(self.etag))

    @property
    def blob_id(self) -> str:
        """The git blob id: of the pointer for an LFS file, of the content for others."""
        if not self.lfs:
            return self.etag
        pointer = LFS_POINTER.format(sha256=self.etag, size=self.size).encode()
        return hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest()

    def entry(self) -> dict[str, Any]:
        """Its entry in a tree listing or paths-info."""
        out: dict[str, Any] = {"type": "file", "oid": self.blob_id, "size": self.size, "path": self.path}
        if self.lfs:
            pointer = LFS_POINTER.format(sha256=self.etag, size=self.size)
            out["lfs"] = {"oid": self.etag, "size": self.size, "pointerSize": len(pointer)}
        return out

    def sibling(self, blobs: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"rfilename": self.path}
        if blobs:
            out.update(size=self.size, blobId=self.blob_id)
            if self.lfs:
                pointer = LFS_POINTER.format(sha256=self.etag, size=self.size)
                out["lfs"] = {"sha256": self.etag, "size": self.size, "pointerSize": len(pointer)}
        return out


def folders(files: list[ServedFile]) -> dict[str, list[str]]:
    """Every folder of a listing, with the paths of the files under it."""
    out: dict[str, list[str]] = {}
    for f in files:
        parts = f.path.split("/")
        for depth in range(1, len(parts)):
            out.setdefault("/".join(parts[:depth]), []).append(f.path)
    return out


def directory_entry(path: str, children: list[str]) -> dict[str, Any]:
    oid = hashlib.sha1("\n".join(sorted(children)).encode()).hexdigest()
    return {"type": "directory", "oid": oid, "size": 0, "path": path}


def model_info(repo: str, commit: str, files: list[ServedFile], *, blobs: bool, access: str,
               last_modified: str | None) -> dict[str, Any]:
    """The answer to ``/api/models/{repo}[/revision/{rev}]``."""
    return {
        "_id": commit[:24], "id": repo, "modelId": repo, "sha": commit,
        "private": access == "private", "gated": "manual" if access == "gated" else False, "disabled": False,
        "lastModified": hub_time(last_modified), "tags": [], "downloads": 0, "likes": 0,
        "library_name": "transformers", "siblings": [f.sibling(blobs) for f in files],
        **({"usedStorage": sum(f.size for f in files)} if blobs else {}),
    }


def hub_time(text: str | None) -> str:
    """An ISO 8601 time as the hub writes it (``2024-01-01T00:00:00.000Z``, what huggingface_hub parses)."""
    from datetime import datetime, timezone

    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
    except ValueError:
        when = None
    when = (when or datetime(1970, 1, 1, tzinfo=timezone.utc)).astimezone(timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def tree(files: list[ServedFile], path: str, recursive: bool) -> list[dict[str, Any]]:
    """Entries under ``path`` ("" for the root): files and directories, all levels when ``recursive``."""
    prefix = path.strip("/") + "/" if path.strip("/") else ""
    entries: dict[str, dict[str, Any]] = {}
    children: dict[str, list[str]] = {}
    for f in files:
        if not f.path.startswith(prefix):
            continue
        rest = f.path[len(prefix):].split("/")
        for depth in range(1, len(rest)):
            folder = prefix + "/".join(rest[:depth])
            children.setdefault(folder, []).append(f.path)
            if recursive or depth == 1:
                entries.setdefault(folder, {})
            if not recursive:
                break
        if recursive or len(rest) == 1:
            entries[f.path] = f.entry()
    for folder, value in entries.items():
        if not value:
            entries[folder] = directory_entry(folder, children.get(folder, []))
    return [entries[k] for k in sorted(entries)]


def file_headers(commit: str, f: ServedFile) -> dict[str, str]:
    """The headers huggingface_hub reads from ``HEAD /{repo}/resolve/...``."""
    headers = {
        "X-Repo-Commit": commit, "ETag": f'"{f.etag}"', "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
    }
    if f.lfs:
        headers["X-Linked-Etag"] = f'"{f.etag}"'
        headers["X-Linked-Size"] = str(f.size)
    return headers


def is_commit(revision: str) -> bool:
    return bool(_HEX40.match(revision))
