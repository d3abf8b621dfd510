"""The one module that talks to a Hugging Face hub (through huggingface_hub).

Settings are read at call time: ``HF_ENDPOINT`` (a mirror such as olah), ``HF_TOKEN``, and
``HF_HUB_OFFLINE`` / ``ZOO_OFFLINE`` (no network at all).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .._env import flag
from ..errors import OfflineError, RemoteError, RemoteNotFoundError

DEFAULT_ENDPOINT = "https://huggingface.co"
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")





def offline() -> bool:
    return flag("ZOO_OFFLINE", "HF_HUB_OFFLINE")


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or DEFAULT_ENDPOINT


def _token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


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


def _translate(exc: Exception, what: str) -> RemoteError:
    from huggingface_hub import errors as hf

    if isinstance(exc, (hf.RepositoryNotFoundError, hf.RevisionNotFoundError, hf.EntryNotFoundError)):
        return RemoteNotFoundError(
            f"{what}: not found at {endpoint()} ({type(exc).__name__}). Check the name and revision; "
            "private and gated repositories need HF_TOKEN"
        )
    if isinstance(exc, hf.HfHubHTTPError):
        return RemoteError(f"{what}: the hub at {endpoint()} answered {str(exc).splitlines()[0]}")
    return RemoteError(
        f"{what}: could not reach {endpoint()} ({type(exc).__name__}: {exc}). Check the network or "
        "HF_ENDPOINT; set ZOO_OFFLINE=1 to use only what is cached"
    )


def _check_online(what: str) -> None:
    if offline():
        raise OfflineError(
            f"{what}: not in the cache, and offline mode is on (ZOO_OFFLINE or HF_HUB_OFFLINE). "
            "Pull it where the network is reachable (zoo pull NAME), or unset the offline switch"
        )


def _check_path(what: str, path: str) -> None:
    """A file path from the server must stay inside the snapshot: no '..', no absolute paths."""
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
        raise RemoteError(f"{what}: the server lists a file named {path!r}, which would escape the snapshot; refused")


def fetch_revision(repo: str, revision: str) -> RemoteRevision:
    """Resolve ``revision`` to a commit and list its files with sizes and digests (2-3 requests)."""
    what = f"{repo}@{revision}"
    _check_online(what)
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(endpoint=endpoint(), token=_token())
    try:
        info = api.model_info(repo, revision=revision)
        commit = info.sha
        entries = list(api.list_repo_tree(repo, revision=commit, recursive=True))
    except Exception as exc:  # huggingface_hub raises many types; all become RemoteError
        raise _translate(exc, what) from exc
    if not isinstance(commit, str) or not _HEX40.match(commit):
        raise RemoteError(f"{what}: the hub answered commit {commit!r}, not a 40-hex id; refused")
    files = []
    for entry in entries:
        if isinstance(entry, RepoFile):
            _check_path(what, entry.path)
            lfs = entry.lfs
            if not _HEX40.match(entry.blob_id or "") or (lfs and not _HEX64.match(lfs.sha256 or "")):
                raise RemoteError(f"{what}: the server lists {entry.path!r} with a malformed digest; refused")
            files.append(RemoteFile(entry.path, int(entry.size), lfs.sha256 if lfs else None, entry.blob_id))
    return RemoteRevision(repo, revision, commit, tuple(sorted(files, key=lambda f: f.path)))


def download(repo: str, commit: str, file: RemoteFile, dest: Path, on_bytes: Callable[[int], None]) -> None:
    """GET one file into ``dest``, resuming from its current size where the server honours Range."""
    what = f"{repo}/{file.path}@{commit[:12]}"
    _check_online(what)
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    url = hf_hub_url(repo, file.path, revision=commit, endpoint=endpoint())
    headers = build_hf_headers(token=_token())
    headers["Accept-Encoding"] = "identity"  # sizes and resume offsets are of the raw bytes
    offset = dest.stat().st_size if dest.exists() else 0
    if 0 < offset < file.size:
        headers["Range"] = f"bytes={offset}-"
    elif offset >= file.size:
        offset = 0
    try:
        with get_session().stream("GET", url, headers=headers, follow_redirects=True, timeout=60) as response:
            hf_raise_for_status(response)
            resumed = response.status_code == 206 and offset > 0
            try:
                f = open(dest, "ab" if resumed else "wb")
            except OSError as exc:
                raise RemoteError(f"{what}: cannot write {dest}: {exc.strerror}; check the space and "
                                  "permissions of ZOO_HOME") from exc
            with f:
                if resumed:
                    on_bytes(offset)
                for chunk in response.iter_bytes(1 << 20):
                    try:
                        f.write(chunk)
                    except OSError as exc:
                        raise RemoteError(f"{what}: cannot write {dest}: {exc.strerror}; check the space "
                                          "of ZOO_HOME (the partial file is kept and the next pull resumes)") from exc
                    on_bytes(len(chunk))
    except RemoteError:
        raise
    except Exception as exc:
        raise _translate(exc, what) from exc
