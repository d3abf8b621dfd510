"""The one module that talks to a Hugging Face hub (through huggingface_hub's HTTP session).

Settings are read at call time: ``HF_ENDPOINT`` (a mirror such as olah; a daemon's ``--upstream`` may name
several, asked in turn: :mod:`.upstreams`), ``HF_TOKEN``,
``HF_HUB_OFFLINE`` / ``ZOO_OFFLINE`` (no network at all), ``HF_HUB_ETAG_TIMEOUT`` (seconds, metadata
requests) and ``HF_HUB_DOWNLOAD_TIMEOUT`` (seconds, downloads); both default to 10, as in huggingface_hub.

A server is not trusted: every request has connect and read timeouts, every body is bounded (metadata
by :data:`META_LIMIT`, a file by the size the server listed for it), a body that stalls (less than
:data:`STALL_BYTES` in a timeout) counts as dead, pagination is capped (:data:`MAX_PAGES`, no page
twice), and file names must stay inside the snapshot. Every failure is one zoo error with one message;
the exception of the HTTP library that caused it is kept as the error's ``__context__`` (not printed).

With several upstreams, a request that could not be made (refused, reset, timed out, stalled, a 5xx answer)
goes to the next one; an answer (a 404, a 401) is the answer. A download cut short on one resumes (``Range``)
on the next, and the store checks the digest of the whole as always.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import sys
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urljoin, urlsplit, urlunsplit

from .._env import flag
from ..errors import (
    IntegrityError, InvalidNameError, OfflineError, RemoteError, RemoteNotFoundError, StoreAccessError, StoreFullError,
)
from . import upstreams
from .upstreams import DEFAULT_ENDPOINT, each as _each, none_answered as _none_answered, transient

DEFAULT_TIMEOUT = 10.0  # huggingface_hub's DEFAULT_ETAG_TIMEOUT and DEFAULT_DOWNLOAD_TIMEOUT
MAX_PAGES = 1000  # tree pages per listing (the hub sends 1000 entries a page)
MAX_FILES = 100_000  # files per listing
META_LIMIT = 16 << 20  # bytes of one metadata (or error) response
STALL_BYTES = 1024  # a body that brings less than this in one timeout period has stalled
RETRIES = 3  # resumes (with Range) after a download stalls or is cut short
_HEX40 = re.compile(r"^[0-9a-f]{40}\Z")
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")


def offline() -> bool:
    return flag("ZOO_OFFLINE", "HF_HUB_OFFLINE")


def endpoint() -> str:
    """The upstream asked first now (the one that answered last, when there are several)."""
    return upstreams.order()[0]


def _at() -> str:
    """The upstream being asked (for messages)."""
    return upstreams.asking.get() or endpoint()


def _token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


def _timeout(name: str) -> float:
    """Seconds from the variable ``name``; the default when unset, not a number or not positive."""
    try:
        value = float(os.environ.get(name, ""))
    except ValueError:
        return DEFAULT_TIMEOUT
    return value if math.isfinite(value) and value > 0 else DEFAULT_TIMEOUT


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None  # LFS files: the content's sha256, which the hub also sends as ETag
    blob_id: str  # git blob sha1: the ETag of regular files

    @property
    def etag(self) -> str:
        return self.sha256 or self.blob_id


@dataclass(frozen=True)
class RemoteRevision:
    repo: str
    revision: str
    commit: str
    files: tuple[RemoteFile, ...]
    access: str = "public"  # "private" or "gated" when the hub says so (content fetched with HF_TOKEN)
    last_modified: str | None = None


# -- errors ------------------------------------------------------------------------------------------

def _http() -> Any:
    """The HTTP library behind huggingface_hub's session (httpx, or httpx2 in huggingface_hub 2.x)."""
    from huggingface_hub.utils import get_session

    return sys.modules[type(get_session()).__module__.partition(".")[0]]


def _translate(exc: Exception, what: str, setting: str) -> RemoteError:
    """One zoo error for an exception of huggingface_hub or its HTTP library."""
    from huggingface_hub import errors as hf

    if isinstance(exc, (hf.RepositoryNotFoundError, hf.RevisionNotFoundError, hf.EntryNotFoundError)):
        code = ("GatedRepo" if isinstance(exc, hf.GatedRepoError) else "RevisionNotFound"
                if isinstance(exc, hf.RevisionNotFoundError) else "EntryNotFound"
                if isinstance(exc, hf.EntryNotFoundError) else "RepoNotFound")
        return RemoteNotFoundError(
            f"{what}: not found at {_at()} ({type(exc).__name__}). Check the name and revision; "
            "private and gated repositories need HF_TOKEN", code,
        )
    if isinstance(exc, hf.HfHubHTTPError):
        return RemoteError(f"{what}: the hub at {_at()} answered {str(exc).splitlines()[0]}")
    http = _http()
    seconds = f"{_timeout(setting):g} s ({setting})"
    if isinstance(exc, http.ConnectTimeout):
        return RemoteError(f"{what}: could not connect to {_at()} within {seconds}. Check the network "
                           "or HF_ENDPOINT; set ZOO_OFFLINE=1 to use only what is cached")
    if isinstance(exc, http.TimeoutException):
        return RemoteError(f"{what}: {_at()} did not answer within {seconds}. The server is "
                           f"overloaded or broken; raise {setting} for a slow network")
    if isinstance(exc, http.RemoteProtocolError):
        return RemoteError(f"{what}: {_at()} broke the HTTP protocol ({exc}). The server or a proxy "
                           "is misbehaving; check HF_ENDPOINT")
    return RemoteError(
        f"{what}: could not reach {_at()} ({type(exc).__name__}: {exc}). Check the network or "
        "HF_ENDPOINT; set ZOO_OFFLINE=1 to use only what is cached"
    )


def _check_online(what: str) -> None:
    if offline():
        raise OfflineError(
            f"{what}: not in the cache, and offline mode is on (ZOO_OFFLINE or HF_HUB_OFFLINE). "
            "Pull it where the network is reachable (zoo pull NAME), or unset the offline switch"
        )


def _check_repo(repo: str) -> None:
    """The hub's own rules for a repository id (stricter than zoo's: no '--', no '.git' ending)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError:
        why = "'--' and '..' are not allowed" if "--" in repo or ".." in repo else (
            "a part may not start or end with '-' or '.', nor end with '.git'")
        raise InvalidNameError(
            f"invalid hub repository id {repo!r}: {why} in a hub id. Expected 'org/name' or 'name' "
            "(letters, digits, '.', '_', '-'; at most 96)"
        ) from None


def _check_path(what: str, path: str) -> None:
    """A file path from the server must stay inside the snapshot and be a name the disk can hold."""
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
        raise RemoteError(f"{what}: the server lists a file named {path!r}, which would escape the snapshot; refused")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in path):
        raise RemoteError(f"{what}: the server lists a file named {path!r}, with a control character in "
                          "its name; refused")
    if len(path) > 1024 or any(len(p.encode()) > 255 for p in parts):
        raise RemoteError(f"{what}: the server lists a file named {path[:80]!r}… ({len(path)} characters), "
                          "too long for a file name; refused")


# -- bounded bodies ----------------------------------------------------------------------------------

class _Stalled(Exception):
    pass


class _Watch:
    """Counts what a body brings: more than ``STALL_BYTES`` per ``timeout`` seconds, or it has stalled
    (a read that brings nothing for ``timeout`` seconds is the HTTP library's read timeout)."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.start = time.monotonic()
        self.count = 0

    def add(self, n: int) -> None:
        self.count += n
        now = time.monotonic()
        if now - self.start >= self.timeout:
            if self.count < STALL_BYTES:
                raise _Stalled()
            self.start, self.count = now, 0


def _stream(url: str, setting: str, headers: dict[str, str]) -> Any:
    """A streamed GET with connect, read, write and pool timeouts of ``setting`` seconds."""
    from huggingface_hub.utils import get_session

    return get_session().stream("GET", url, headers=headers, follow_redirects=True, timeout=_timeout(setting))


def _read_small(response: Any, what: str, setting: str) -> bytes:
    """The whole body of a metadata (or error) response, at most ``META_LIMIT`` bytes."""
    watch, chunks, size = _Watch(_timeout(setting)), [], 0
    try:
        for chunk in response.iter_raw():
            size += len(chunk)
            if size > META_LIMIT:
                raise RemoteError(f"{what}: {_at()} answered {response.url} with more than "
                                  f"{META_LIMIT >> 20} MiB; refused. The server is misbehaving")
            chunks.append(chunk)
            watch.add(len(chunk))
    except _Stalled:
        raise RemoteError(f"{what}: {_at()} sent its answer too slowly (less than {STALL_BYTES} bytes "
                          f"in {_timeout(setting):g} s, {setting}); gave up") from None
    return b"".join(chunks)


def _raise_for_status(response: Any, what: str, setting: str) -> None:
    """huggingface_hub's reading of an error answer (error codes), on a bounded copy of the body."""
    from huggingface_hub.utils import hf_raise_for_status

    if response.status_code < 400:
        return
    body = _read_small(response, what, setting)
    skip = {"content-encoding", "content-length", "transfer-encoding"}
    copy = _http().Response(response.status_code, request=response.request, content=body,
                            headers=[(k, v) for k, v in response.headers.multi_items() if k.lower() not in skip])
    hf_raise_for_status(copy)
    raise RemoteError(f"{what}: the hub at {_at()} answered HTTP {response.status_code}")


def _get_json(url: str, what: str, headers: dict[str, str]) -> tuple[Any, str | None]:
    """GET a metadata answer: its JSON and the URL of its next page, if any."""
    setting = "HF_HUB_ETAG_TIMEOUT"
    try:
        with _stream(url, setting, headers) as response:
            _raise_for_status(response, what, setting)
            if response.status_code != 200:
                raise RemoteError(f"{what}: the hub at {_at()} answered HTTP {response.status_code} "
                                  f"to {response.url}, expected 200")
            body = _read_small(response, what, setting)
            link = response.links.get("next", {}).get("url")
            base = str(response.url)
    except RemoteError:
        raise
    except Exception as exc:
        raise _translate(exc, what, setting) from None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise RemoteError(f"{what}: {_at()} answered {url} with something that is not JSON; "
                          "check HF_ENDPOINT") from None
    return data, urljoin(base, link) if link else None


def get_page(path: str, what: str) -> tuple[Any, str | None]:
    """The upstream's JSON answer to ``GET path`` (a path with its query, asked of the upstreams in turn, with
    ``HF_TOKEN``), and the path of its next page: None when there is none, or it is on another host (a page
    elsewhere is not followed, nor handed to our clients)."""
    from huggingface_hub.utils import build_hf_headers

    headers = build_hf_headers(token=_token())

    def ask(base: str) -> tuple[Any, str | None]:
        data, next_url = _get_json(base + path, what, headers)
        parts = urlsplit(next_url or "")
        if next_url is None or parts[:2] != urlsplit(base)[:2]:
            return data, None
        return data, urlunsplit(("", "", parts.path, parts.query, ""))

    return _each(what, ask)


# -- metadata ----------------------------------------------------------------------------------------

def fetch_revision(repo: str, revision: str, *, known: Callable[[str], RemoteRevision | None] | None = None
                   ) -> RemoteRevision:
    """Resolve ``revision`` to a commit and list its files with sizes and digests (2 requests, one more
    per 1000 files). ``known(commit)`` may return a listing of that commit kept from before: a commit
    never changes, so it is not listed again (1 request)."""
    from huggingface_hub.utils import build_hf_headers

    what = f"{repo}@{revision}"
    _check_repo(repo)
    _check_online(what)
    headers = build_hf_headers(token=_token())
    commit, access, modified = _each(what, lambda base: _ask_commit(base, repo, revision, what, headers))
    listed = known(commit) if known is not None else None
    files = listed.files if listed is not None else _each(
        what, lambda base: _list_files(base, repo, commit, what, headers))
    return RemoteRevision(repo, revision, commit, files, access, modified)


def _ask_commit(base: str, repo: str, revision: str, what: str, headers: dict[str, str]
                ) -> tuple[str, str, str | None]:
    """The commit ``revision`` is now, who may read it (public, private or gated), and when it changed."""
    from urllib.parse import quote

    info, _ = _get_json(f"{base}/api/models/{repo}/revision/{quote(revision, safe='')}", what, headers)
    commit = info.get("sha") if isinstance(info, dict) else None
    if not isinstance(commit, str) or not _HEX40.fullmatch(commit):
        raise RemoteError(f"{what}: the hub answered commit {commit!r}, not a 40-hex id; refused")
    if _HEX40.fullmatch(revision) and commit != revision:
        raise RemoteError(f"{what}: asked for commit {revision}, the hub answered {commit}; refused")
    access = "private" if info.get("private") is True else "gated" if info.get("gated") not in (None, False) else "public"
    modified = info.get("lastModified") if isinstance(info.get("lastModified"), str) else None
    return commit, access, modified[:40] if modified else None


def _list_files(base: str, repo: str, commit: str, what: str, headers: dict[str, str]) -> tuple[RemoteFile, ...]:
    files = []
    url = f"{base}/api/models/{repo}/tree/{commit}?recursive=true&expand=false"
    for entry in _list_tree(url, what, headers, base):
        if not isinstance(entry, dict) or entry.get("type") not in ("file", "directory"):
            raise RemoteError(f"{what}: the server lists a tree entry zoo cannot read ({str(entry)[:100]}); refused")
        if entry["type"] != "file":
            continue
        path, size, blob_id, lfs = entry.get("path"), entry.get("size"), entry.get("oid"), entry.get("lfs")
        if not isinstance(path, str):
            raise RemoteError(f"{what}: the server lists a file named {path!r}, not a string; refused")
        _check_path(what, path)
        if type(size) is not int or size < 0:
            raise RemoteError(f"{what}: the server lists {path!r} with size {size!r}; refused")
        sha256 = lfs.get("oid") if isinstance(lfs, dict) else None
        if (not isinstance(blob_id, str) or not _HEX40.fullmatch(blob_id)
                or (lfs is not None and not (isinstance(sha256, str) and _HEX64.fullmatch(sha256)))):
            raise RemoteError(f"{what}: the server lists {path!r} with a malformed digest; refused")
        files.append(RemoteFile(path, size, sha256, blob_id))
    if len({f.path for f in files}) != len(files):
        raise RemoteError(f"{what}: the server lists a file twice; refused")
    paths = {f.path for f in files}
    for f in files:  # a name cannot be a file and a folder at once: no snapshot could hold both
        parts = f.path.split("/")
        folder = next((p for p in ("/".join(parts[:i]) for i in range(1, len(parts))) if p in paths), None)
        if folder is not None:
            raise RemoteError(f"{what}: the server lists {folder!r} as a file and {f.path!r} inside it as a folder; "
                              "refused (no folder on disk can hold both)")
    return tuple(sorted(files, key=lambda f: f.path))


def check_file(repo: str, commit: str, file: RemoteFile) -> None:
    """Ask (``HEAD``) whether the hub serves ``file`` of ``repo@commit`` to this client, with the listed size
    and digest: before content stored for another repository is handed out under this one's name."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    what = f"{repo}/{file.path}@{commit[:12]}"
    _check_online(what)
    headers = build_hf_headers(token=_token())
    headers["Accept-Encoding"] = "identity"
    response = _each(what, lambda base: _head(hf_hub_url(repo, file.path, revision=commit, endpoint=base), what,
                                              headers))
    etag = (response.headers.get("X-Linked-Etag") or response.headers.get("ETag") or "").strip('"').removeprefix("W/").strip('"')
    size = response.headers.get("X-Linked-Size") or response.headers.get("Content-Length")
    if etag != file.etag or str(file.size) != (size or "").strip():
        raise RemoteError(f"{what}: the hub describes this file as {etag[:12]}… of {size} bytes, its listing as "
                          f"{file.etag[:12]}… of {file.size}; refused")


def _head(url: str, what: str, headers: dict[str, str]) -> Any:
    from huggingface_hub.utils import get_session, hf_raise_for_status

    setting = "HF_HUB_ETAG_TIMEOUT"
    try:
        response = get_session().head(url, headers=headers, follow_redirects=True, timeout=_timeout(setting))
        hf_raise_for_status(response)
    except Exception as exc:
        raise _translate(exc, what, setting) from None
    if response.status_code >= 400:
        raise RemoteError(f"{what}: the hub answered HTTP {response.status_code}")
    return response


def _list_tree(url: str, what: str, headers: dict[str, str], base: str) -> list[Any]:
    """Every entry of a tree listing, following ``Link: rel=next`` pages: at most ``MAX_PAGES``, none
    twice, the token only sent to the host of the upstream ``base``."""
    entries: list[Any] = []
    seen: set[str] = set()
    origin = urlsplit(base)[:2]
    while url is not None:
        if url in seen:
            raise RemoteError(f"{what}: the hub's file listing links back to a page it already sent "
                              f"({url}); the server is misbehaving")
        if len(seen) >= MAX_PAGES:
            raise RemoteError(f"{what}: the hub's file listing goes on past {MAX_PAGES} pages; gave up. "
                              "The server is misbehaving")
        if urlsplit(url).scheme not in ("http", "https"):
            raise RemoteError(f"{what}: the hub's file listing links to {url!r}, not an http(s) URL; refused")
        seen.add(url)
        page_headers = headers if urlsplit(url)[:2] == origin else {
            k: v for k, v in headers.items() if k.lower() != "authorization"}
        page, url = _get_json(url, what, page_headers)
        if not isinstance(page, list):
            raise RemoteError(f"{what}: the hub's file listing is not a list; check HF_ENDPOINT")
        entries.extend(page)
        if len(entries) > MAX_FILES:
            raise RemoteError(f"{what}: the hub lists more than {MAX_FILES} files; refused")
    return entries


# -- downloads ---------------------------------------------------------------------------------------

class _Interrupted(Exception):
    """A body that stalled or ended early; the partial file is kept and can be resumed."""


def download(repo: str, commit: str, file: RemoteFile, dest: Path, on_bytes: Callable[[int], None]) -> None:
    """GET one file into ``dest``, resuming from its current size where the server honours Range.

    Never writes more than ``file.size`` bytes: a server that sends more is an ``IntegrityError`` and the
    partial file is removed. A body that stalls or is cut short is resumed ``RETRIES`` times (on the next
    upstream, when there are several), then a ``RemoteError``; the partial file is kept for the next pull.
    """
    what = f"{repo}/{file.path}@{commit[:12]}"
    _check_online(what)
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    headers = build_hf_headers(token=_token())
    headers["Accept-Encoding"] = "identity"  # sizes and resume offsets are of the raw bytes
    reported = [0]

    def progress(position: int) -> None:
        if position > reported[0]:
            on_bytes(position - reported[0])
            reported[0] = position

    failures: list[tuple[str, str]] = []  # (upstream, why), each time one could not be asked or was cut off
    interrupted = 0
    while interrupted <= RETRIES:
        offset = dest.stat().st_size if dest.exists() else 0
        if offset > file.size:  # never resumable
            dest.unlink()
            offset = 0
        if offset == file.size and dest.exists():
            progress(offset)
            return
        order = upstreams.order()
        base = next((u for u in order if u not in {b for b, _ in failures}), order[0])  # one not tried yet first
        token = upstreams.asking.set(base)
        try:
            _download_once(hf_hub_url(repo, file.path, revision=commit, endpoint=base), what, file, dest, offset,
                           headers, progress)
            upstreams.answered(base)
            return
        except _Interrupted as exc:
            interrupted += 1
            failures.append((base, str(exc)))
            upstreams.failed(base, exc)
        except RemoteError as exc:
            if not transient(exc):
                upstreams.answered(base)
                raise
            failures.append((base, str(exc)))
            upstreams.failed(base, str(exc).removeprefix(f"{what}: "))
            if set(order) <= {b for b, _ in failures}:  # each one failed at least once
                raise _none_answered(what, failures, exc)
        finally:
            upstreams.asking.reset(token)
    tried = list(dict.fromkeys(b for b, _ in failures))
    where = f" (from {', '.join(tried)})" if len(tried) > 1 else ""
    kept = "the partial file is kept and the next pull resumes" if dest.exists() else "nothing was stored"
    raise RemoteError(f"{what}: {failures[-1][1]}, {RETRIES + 1} times{where}; {kept}. Check the network, or raise "
                      "HF_HUB_DOWNLOAD_TIMEOUT for a slow one")


def _download_once(url: str, what: str, file: RemoteFile, dest: Path, offset: int, headers: dict[str, str],
                   progress: Callable[[int], None]) -> None:
    setting = "HF_HUB_DOWNLOAD_TIMEOUT"
    http = _http()
    headers = dict(headers)
    if offset:
        headers["Range"] = f"bytes={offset}-"
    position = 0
    try:
        with _stream(url, setting, headers) as response:
            _raise_for_status(response, what, setting)
            if response.status_code == 206 and offset:
                first = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
                if not first or int(first.group(1)) != offset:
                    raise RemoteError(f"{what}: asked for the bytes from {offset}, the server answered the range "
                                      f"{response.headers.get('Content-Range')!r}; refused")
                position = offset
            elif response.status_code != 200:
                raise RemoteError(f"{what}: the hub at {_at()} answered HTTP {response.status_code}, "
                                  "expected 200 or 206")
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and position + int(length) > file.size:
                _too_long(what, file, dest)
            f = open(dest, "ab" if position else "wb")  # an OSError here is the local disk's: see _local
            watch = _Watch(_timeout(setting))
            with f:
                progress(position)
                try:
                    for chunk in response.iter_raw():
                        if position + len(chunk) > file.size:
                            f.close()
                            _too_long(what, file, dest)
                        f.write(chunk)
                        position += len(chunk)
                        progress(position)
                        watch.add(len(chunk))
                except _Stalled:
                    raise _Interrupted(f"the download stalled at {position} of {file.size} bytes (less than "
                                       f"{STALL_BYTES} bytes in {_timeout(setting):g} s, {setting})") from None
                except http.TimeoutException:
                    raise _Interrupted(f"the download stalled at {position} of {file.size} bytes (nothing in "
                                       f"{_timeout(setting):g} s, {setting})") from None
                except (http.RemoteProtocolError, http.NetworkError):
                    raise _Interrupted(f"the body was cut short at {position} of {file.size} bytes") from None
            if position < file.size:
                raise _Interrupted(f"the body was cut short at {position} of {file.size} bytes")
    except (RemoteError, IntegrityError, _Interrupted):
        raise
    except OSError as exc:  # writing the partial file (the HTTP library's own errors are not OSErrors)
        raise _local(exc, what, dest) from None
    except (http.ReadTimeout, http.WriteTimeout, http.PoolTimeout):  # a busy server, or a mirror still fetching
        raise _Interrupted(f"{_at()} did not answer within {_timeout(setting):g} s ({setting})") from None
    except http.RemoteProtocolError:
        raise _Interrupted(f"{_at()} closed the connection without answering") from None
    except Exception as exc:
        raise _translate(exc, what, setting) from None


def _local(exc: OSError, what: str, dest: Path) -> Exception:
    """A download that failed on this machine's disk, said as such (it was reported as an unreachable hub)."""
    kept = "the partial file is kept and the next pull resumes it" if dest.exists() else "nothing was kept"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreFullError(f"{what}: no space left on the device of {dest.parent} ({exc.strerror}); {kept}. "
                              "Free space on that disk (zoo gc, zoo rm NAME@vN) or point ZOO_HOME at a larger disk")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StoreAccessError(f"{what}: cannot write {dest} ({exc.strerror}); {kept}. Check the permissions "
                                "of ZOO_HOME, or use a store of your own with ZOO_HOME=DIR")
    return StoreAccessError(f"{what}: cannot write {dest} ({exc.strerror or exc}); {kept}")


def _too_long(what: str, file: RemoteFile, dest: Path) -> None:
    try:
        dest.unlink()
    except FileNotFoundError:
        pass
    raise IntegrityError(f"{what}: the server sent more than the {file.size} bytes it lists for this file; "
                         "stopped there and removed the partial file. The server or a proxy is misbehaving; "
                         "nothing was stored")
