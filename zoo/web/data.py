"""What each page shows, as plain data (the JSON twin is exactly this; the HTML is this through a template).

Every function here reads the store (a :class:`~zoo.store.reader.StoreReader`: no locks, no writes) and is
called on a worker thread, never on the HTTP server's event loop. ``may(repo, access)`` says whether the
viewer may see a repository (:class:`zoo.hubserver.access.Access` decides, as for the Hub routes); what it
may not see is left out of lists and answered as absent or restricted on its own page.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from .. import atomic
from ..errors import ZooError
from ..model.compat import check_transformers_version
from ..model.weights import read_safetensors_header
from ..names import display_name, is_local
from ..store import history as histories
from ..store.events import Event
from ..store.lineage import tree
from ..store.manifests import Version
from ..store.reader import StoreReader
from ..store.search import Query, search
from .cache import Cached
from .markdown import card_html

May = Callable[[str, "str | None"], bool]
MAX_CONFIG = 1 << 20
MAX_EVENTS = 20
MAX_HISTORY = 1000  # events on a history page
_TAIL = 32 << 10  # bytes read from the end of a history log for the home page's last events


def access_of(repo: str, version: Version | None) -> str | None:
    """Who may read ``repo`` as the Hub routes decide it: ``local`` for zoo's names, else what the hub said
    when its newest version was pulled (None: not recorded, treated as restricted)."""
    return "local" if is_local(repo) else (version.access if version is not None else None)


def model_url(repo: str) -> str:
    """A name's page: ``/models/NAME`` for ``local/NAME``, ``/models/ORG/NAME`` for a hub repository."""
    return "/models/" + (display_name(repo) if is_local(repo) else repo)


def home(reader: StoreReader, q: Query, text: str, may: May, status: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for row in reader.search(q) if isinstance(reader, Cached) else search(reader, q):
        access = "local" if is_local(row.repo) else _hub_access(reader, row.repo, row.version)
        if not may(row.repo, access):
            continue
        if text and text.lower() not in row.name.lower() and text.lower() not in (row.description or "").lower():
            continue
        rows.append({**row.as_json(), "url": model_url(row.repo), "access": access})
    quota = status.get("quota")
    if quota:
        quota = {**quota, "pinned": [p for p in quota.get("pinned", []) if _visible_spec(reader, p, may)]}
    jobs = [j for j in status.get("jobs", []) if _visible_job(reader, j, may)]
    return {"names": rows, "count": len(rows), "total_size": sum(r["size"] for r in rows),
            "quota": quota, "jobs": jobs, "events": last_events(reader, may),
            "pulls_in_flight": status.get("http", {}).get("pulls_in_flight", 0) if jobs else 0}


def _hub_access(reader: StoreReader, repo: str, version: str) -> str | None:
    try:
        return access_of(repo, reader.find(repo, version))
    except (ZooError, OSError, ValueError):
        return None


def _visible_spec(reader: StoreReader, spec: str, may: May) -> bool:
    repo = spec.rpartition("@")[0] or spec
    return may(repo, "local" if is_local(repo) else _hub_access(reader, repo, spec.rpartition("@")[2]))


def _visible_job(reader: StoreReader, job: dict[str, Any], may: May) -> bool:
    """A job names its repository first (``pull org/name main``); one the viewer may not read is left out."""
    words = str(job.get("what", "")).split()
    if not words:
        return False
    repo = words[0]
    if is_local(repo):
        return may(repo, "local")
    versions = _versions(reader, repo)
    return may(repo, versions[-1].access if versions else None)


def _versions(reader: StoreReader, repo: str) -> list[Version]:
    try:
        return reader.versions(repo)
    except (ZooError, OSError, ValueError):
        return []


def last_events(reader: StoreReader, may: May, limit: int = MAX_EVENTS) -> list[dict[str, Any]]:
    """The newest events of the store's histories: the most recently written logs, read from their ends."""
    root = reader.layout.history_root
    try:
        logs = [(e.stat().st_mtime, e.path) for e in os.scandir(root) if e.name.endswith(".jsonl") and e.is_file()]
    except OSError:
        return []
    events: list[Event] = []
    for _, path in sorted(logs, reverse=True)[:limit]:
        try:
            data = atomic.read_regular(Path(path), tail=_TAIL + 1)
        except OSError:
            continue
        if len(data) > _TAIL:  # the log is longer: start after the first line end (one byte before the window)
            data = data[data.find(b"\n") + 1:]
        events += histories.parse(data).events
    shown: list[dict[str, Any]] = []
    cache: dict[str, bool] = {}
    for event in sorted(events, key=lambda e: e.when, reverse=True):
        if event.repo not in cache:
            versions = [] if is_local(event.repo) else _versions(reader, event.repo)
            cache[event.repo] = may(event.repo, access_of(event.repo, versions[-1] if versions else None))
        if cache[event.repo]:
            shown.append({**event.as_json(), "url": model_url(event.repo)})
        if len(shown) >= limit:
            break
    return shown


def model(reader: StoreReader, repo: str, versions: list[Version], endpoint: str, may: May) -> dict[str, Any]:
    """A name's page: its versions, the newest's card, config, files and weights, its lineage, snippets."""
    marks = reader.marks(repo)
    newest = versions[-1]
    folder = reader.snapshot(newest)
    rows = [_version_row(v, marks) for v in reversed(versions)]
    card = _read_text(folder / "README.md", 256 * 1024) if any(e.path == "README.md" for e in newest.files) else None
    name = display_name(repo)
    alias = sorted(marks.aliases)[0] if marks.aliases else newest.name
    local = f"local/{name}" if is_local(repo) else repo
    return {
        "name": name, "repo": repo, "url": model_url(repo), "newest": newest.name, "versions": rows,
        "aliases": {a.name: a.version for a in sorted(marks.aliases.values(), key=lambda a: a.name)},
        "card_html": card_html(card) if card is not None else None,
        "config": config_summary(folder, newest), "files": [{"path": e.path, "size": e.size} for e in newest.files],
        "weights": weights(folder, newest), "lineage": lineage(reader, repo, may),
        "snippets": {
            "zoo": f'import zoo\nmodel = zoo.load("{name}@{alias}")',
            "transformers": f'# HF_ENDPOINT={endpoint}\nfrom transformers import AutoModel\n'
                            f'model = AutoModel.from_pretrained("{local}", revision="{alias}")',
            "shell": f"HF_ENDPOINT={endpoint} huggingface-cli download {local} --revision {alias}",
        },
    }


def _version_row(v: Version, marks: Any) -> dict[str, Any]:
    return {"version": v.name, "number": v.number, "id": v.id, "created": v.created, "user": v.user,
            "host": v.host, "size": v.total_size, "source": v.source, "revision": v.revision,
            "aliases": marks.aliases_of(v.name), "labels": dict(marks.labels.get(v.name, {})),
            "description": v.description, "base": v.base, "model_type": v.model_type}


def version(reader: StoreReader, repo: str, v: Version) -> dict[str, Any]:
    """A version's page: what its manifest records, its files with their digests."""
    marks = reader.marks(repo)
    return {"name": display_name(repo), "repo": repo, "url": model_url(repo), **_version_row(v, marks),
            "access": v.access, "transformers_version": v.transformers_version,
            "architectures": list(v.architectures),
            "files": [{"path": e.path, "size": e.size, "sha256": e.sha256, "etag": e.etag} for e in v.files]}


def history(reader: StoreReader, repo: str) -> dict[str, Any]:
    """A name's events, newest first: the newest ``MAX_HISTORY`` of them (``zoo history NAME`` prints all)."""
    h = reader.history(repo)
    return {"name": display_name(repo), "repo": repo, "url": model_url(repo), "total": len(h.events),
            "events": [e.as_json() for e in h.events[:-MAX_HISTORY - 1:-1]], "damaged_lines": h.damaged[:100],
            "damaged": len(h.damaged), "torn": h.torn, "unreadable": getattr(h, "unreadable", None)}


def _read_text(path: os.PathLike[str], limit: int) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return None


def config_summary(folder: Any, v: Version) -> dict[str, Any] | None:
    text = _read_text(folder / "config.json", MAX_CONFIG)
    try:
        raw = json.loads(text) if text is not None else None
    except ValueError:
        raw = None
    if not isinstance(raw, dict):
        return None

    def first(*keys: str) -> Any:
        for key in keys:
            if isinstance(raw.get(key), (int, str)) and not isinstance(raw.get(key), bool):
                return raw[key]
        return None

    advice = check_transformers_version(raw.get("transformers_version"))
    archs = raw.get("architectures")
    return {"model_type": first("model_type"),
            "architectures": [a for a in archs if isinstance(a, str)] if isinstance(archs, list) else [],
            "hidden_size": first("hidden_size", "n_embd", "d_model"),
            "layers": first("num_hidden_layers", "n_layer", "num_layers"),
            "vocab_size": first("vocab_size"), "transformers_version": first("transformers_version"),
            "advice": advice.message, "advice_status": advice.status}


def weights(folder: Any, v: Version) -> dict[str, Any] | None:
    """Tensor count, parameter count (floating-point elements) and bytes per dtype, from the safetensors
    headers only (a few KB of each file; no tensor is read)."""
    files = [e for e in v.files if e.path.endswith(".safetensors")]
    if not files:
        return None
    tensors = parameters = 0
    dtypes: dict[str, int] = {}
    problems = []
    for entry in files:
        try:
            header = read_safetensors_header(folder / entry.path)
        except (ZooError, OSError) as exc:
            problems.append(f"{entry.path}: {str(exc).splitlines()[0][:200]}")
            continue
        for info in header.tensors.values():
            tensors += 1
            dtypes[info.dtype] = dtypes.get(info.dtype, 0) + (info.end - info.start)
            if info.dtype.startswith(("F", "BF")):
                parameters += info.numel
    return {"tensors": tensors, "parameters": parameters, "dtypes": dict(sorted(dtypes.items())),
            "problems": problems}


def lineage(reader: StoreReader, repo: str, may: May) -> dict[str, Any] | None:
    """Bases above (nearest first) and what was made from the name below, each with its page's address; a
    name the viewer may not read is left out (with what was made from it)."""
    try:
        t = tree(reader, repo, with_shares=False)  # shares hash whole files and record them: not on a page
    except (ZooError, OSError):
        return None

    def seen(n: dict[str, Any]) -> bool:
        repo_of = n.get("repo")
        if not isinstance(repo_of, str):
            return False
        if is_local(repo_of):
            return may(repo_of, "local")
        if not n.get("stored"):
            return True  # a hub id a card or config named, not in the store: nothing of it is served here
        versions = _versions(reader, repo_of)
        return may(repo_of, versions[-1].access if versions else None)

    def node(n: dict[str, Any]) -> dict[str, Any]:
        repo_of = n.get("repo")
        return {"name": n.get("name"), "version": n.get("version"), "stored": n.get("stored"),
                "url": model_url(repo_of) if n.get("stored") and isinstance(repo_of, str) else None,
                "repo": repo_of, "derived": [node(c) for c in n.get("derived", []) if seen(c)]}

    bases = []
    for b in t.get("bases", []):
        if not seen(b):
            break  # what is above a hidden base is not shown either
        bases.append(node(b))
    return {"bases": bases, "derived": [node(c) for c in t.get("derived", []) if seen(c)]}
