"""The metadata routes of the Hub protocol: model info, tree, paths-info, refs, commits and ``/api/zoo``
(files are :mod:`.server`'s). Every route that names a repository resolves it through the catalog and the
access check first, so a client without the right token gets the same 401/404 on each.

- ``refs``: a ``local/`` name's branch ``main``, its aliases and versions as tags (:mod:`.registry`); the
  upstream zoo daemon's answer for its own ``local/`` names; a hub repository's refs as its upstream lists
  them (``main`` alone when the upstream cannot say), with the aliases zoo gave it as tags.
- ``commits``: a ``local/`` name's versions up to the revision, newest first; for a hub repository (and the
  upstream's ``local/`` names), the upstream's commits, or zoo's stored versions when it cannot say.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..errors import OfflineError, RemoteError
from . import protocol, registry, tier
from .catalog import Snapshot
from .protocol import HubError

if TYPE_CHECKING:
    from .server import HubServer

MAX_PATHS = 1000  # paths in one paths-info request (aiohttp reads at most 1000 form fields)


def _true(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1")


class Answers:
    def __init__(self, server: "HubServer") -> None:
        self.server = server
        self.catalog = server.catalog

    async def answer(self, request: web.Request, req: protocol.Request) -> web.Response:
        if req.kind == "zoo":
            return web.json_response(tier.identity())
        snap = await self.server._snapshot(request, req.repo, req.revision)
        if req.kind == "info":
            blobs = request.query.get("blobs", "").lower() == "true"
            return web.json_response(protocol.model_info(
                snap.repo, snap.commit, list(snap.files.values()), blobs=blobs, access=snap.access or "gated",
                last_modified=snap.last_modified))
        if req.kind == "tree":
            return await self._tree(request, req, snap)
        if req.kind == "refs":
            return web.json_response(await self._in_pool(self._refs, snap, "include_prs" in request.query))
        if req.kind == "commits":
            return await self._commits(request, snap)
        return await self._paths_info(request, snap)

    async def _in_pool(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.server.pool, fn, *args)

    # -- last commits (expand=true) ----------------------------------------------------------------

    def _stamps(self, snap: Snapshot) -> dict[str, dict[str, str]]:
        """Each file's ``lastCommit``: from the versions of a name this store holds; the upstream zoo daemon's
        for its ``local/`` names; else the commit served. Blocking (once per snapshot)."""
        def build() -> dict[str, dict[str, str]]:
            if snap.version is not None and snap.remote is None:
                return registry.last_commits(self.catalog.versions(snap.repo), snap.version)
            stamp = registry.served_stamp(snap.commit, snap.last_modified, snap.version)
            stamps = {path: stamp for path in snap.files}
            if self.catalog.upstream_local(snap):
                stamps.update(self._upstream_stamps(snap))
            return stamps

        return snap.memo("stamps", build)

    def _upstream_stamps(self, snap: Snapshot) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        path: str | None = f"/api/models/{snap.repo}/tree/{snap.commit}?recursive=true&expand=true"
        for _ in range(100):  # pages of 1000 entries: a name of 100,000 files
            if path is None:
                break
            try:
                page, path = tier.get_page(path, f"{snap.repo} tree")
            except (RemoteError, OfflineError):
                break  # the commit served stands in
            for e in page if isinstance(page, list) else []:
                last = e.get("lastCommit") if isinstance(e, dict) else None
                if isinstance(last, dict) and isinstance(e.get("path"), str) and isinstance(last.get("id"), str):
                    out[e["path"]] = {"id": last["id"], "title": str(last.get("title") or ""),
                                      "date": protocol.hub_time(last.get("date") if isinstance(last.get("date"), str)
                                                                else None)}
        return out

    async def _expanded(self, snap: Snapshot, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        stamps = await self._in_pool(self._stamps, snap)
        folders = snap.memo("folders", lambda: protocol.folders(list(snap.files.values())))
        out = []
        for e in entries:
            stamp = stamps.get(e["path"]) if e["type"] == "file" else registry.folder_stamp(folders.get(e["path"], []),
                                                                                          stamps)
            out.append(registry.with_last_commit(e, stamp))
        return out

    # -- tree and paths-info -----------------------------------------------------------------------

    async def _tree(self, request: web.Request, req: protocol.Request, snap: Snapshot) -> web.Response:
        recursive = _true(request.query.get("recursive", ""))
        entries = snap.memo(("tree", req.path, recursive),
                            lambda: protocol.tree(list(snap.files.values()), req.path, recursive))
        if req.path and not entries:
            raise protocol.entry_not_found(snap.repo, req.revision or "main", req.path)
        start = self._cursor(request)
        size = self.server.settings.page_size
        page = entries[start:start + size]
        if _true(request.query.get("expand", "")):
            page = await self._expanded(snap, page)
        return web.json_response(page, headers=self._next(request, start + size, len(entries)))

    def _cursor(self, request: web.Request) -> int:
        try:
            return max(int(request.query.get("cursor", "0")), 0)
        except ValueError:
            raise protocol.bad_request("invalid cursor") from None

    def _next(self, request: web.Request, following: int, total: int) -> dict[str, str]:
        if following >= total:
            return {}
        return {"Link": f'<{request.url.update_query(cursor=str(following))}>; rel="next"'}

    async def _paths_info(self, request: web.Request, snap: Snapshot) -> web.Response:
        timeout = self.server.settings.header_timeout
        try:  # a body that trickles in holds nothing up for long
            if (request.content_type or "").endswith("json"):
                body = await asyncio.wait_for(request.json(), timeout)
                paths = body.get("paths") if isinstance(body, dict) else None
                expand = _true(body.get("expand")) if isinstance(body, dict) else False
            else:
                form = await asyncio.wait_for(request.post(), timeout)
                paths, expand = form.getall("paths", []), _true(form.get("expand", ""))
        except asyncio.TimeoutError:
            raise HubError(408, None, "the request body did not arrive in time") from None
        except (ValueError, UnicodeDecodeError):
            raise protocol.bad_request("paths-info takes a form or JSON body with 'paths'") from None
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths) or len(paths) > MAX_PATHS:
            raise protocol.bad_request(f"paths-info takes a list of at most {MAX_PATHS} paths")
        folders = snap.memo("folders", lambda: protocol.folders(list(snap.files.values())))
        out = []
        for path in dict.fromkeys(p.strip("/") for p in paths):
            if path in snap.files:
                out.append(snap.files[path].entry())
            elif path in folders:
                out.append(protocol.directory_entry(path, folders[path]))
        return web.json_response(await self._expanded(snap, out) if expand else out)

    # -- refs and commits --------------------------------------------------------------------------

    def _refs(self, snap: Snapshot, prs: bool) -> dict[str, Any]:
        catalog, repo = self.catalog, snap.repo
        if catalog.upstream_local(snap):
            return self._upstream(f"/api/models/{repo}/refs" + ("?include_prs=1" if prs else ""), repo, "refs")
        versions, marks = catalog.versions(repo), catalog.marks(repo)
        if snap.access == "local":
            return registry.local_refs(versions, marks, prs=prs)
        try:
            upstream = tier.get_json(f"/api/models/{repo}/refs" + ("?include_prs=1" if prs else ""), f"{repo} refs")
        except (RemoteError, OfflineError):
            upstream = None  # a mirror that has no such route, or no upstream: what zoo knows
        if not isinstance(upstream, dict):
            upstream = None
        shadowed = set() if upstream else {a for a in marks.aliases if catalog.upstream_has(repo, a)}
        return registry.hub_refs(snap.commit, versions, marks, upstream, shadowed=shadowed, prs=prs)

    def _upstream(self, path: str, repo: str, what: str) -> Any:
        try:
            return tier.get_json(path, f"{repo} {what}")
        except (RemoteError, OfflineError) as exc:
            raise HubError(502, None, f"{repo}: the upstream zoo daemon did not answer its {what} ({exc})") from None

    async def _commits(self, request: web.Request, snap: Snapshot) -> web.Response:
        if snap.access != "local" or self.catalog.upstream_local(snap):
            forwarded = await self._in_pool(self._forward_commits, request, snap)
            if forwarded is not None:
                return forwarded
        versions = self.catalog.versions(snap.repo)
        if snap.version is not None:
            items = registry.commits(versions, snap.version)
        else:
            items = [{"id": snap.commit, "title": f"commit {snap.commit[:12]}", "message": "", "authors": [],
                      "date": protocol.hub_time(snap.last_modified)}]
        start = self._cursor(request)
        size = self.server.settings.page_size
        return web.json_response(items[start:start + size], headers=self._next(request, start + size, len(items)))

    def _forward_commits(self, request: web.Request, snap: Snapshot) -> web.Response | None:
        """The upstream's commits of ``snap``'s commit (this page; the next page's link points here); None
        when it cannot say (a mirror without the route, offline): then zoo's stored versions are listed."""
        query = f"?{request.query_string}" if request.query_string else ""
        try:
            data, following = tier.get_page(f"/api/models/{snap.repo}/commits/{snap.commit}{query}",
                                            f"{snap.repo} commits")
        except (RemoteError, OfflineError) as exc:
            if self.catalog.upstream_local(snap):
                raise HubError(502, None, f"{snap.repo}: the upstream zoo daemon did not list its commits ({exc})")
            return None
        if not isinstance(data, list):
            return None
        data = [c for c in map(_commit, data) if c is not None]
        headers = {}
        if following is not None:
            path, _, qs = following.partition("?")
            if path == f"/api/models/{snap.repo}/commits/{snap.commit}":
                headers["Link"] = f'<{request.url.with_path(path).with_query(qs)}>; rel="next"'
        return web.json_response(data, headers=headers)


def _commit(item: Any) -> dict[str, Any] | None:
    """An upstream's commit as huggingface_hub reads it (some mirrors name authors ``name``, not ``user``);
    None for one without a commit id."""
    if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not protocol.is_commit(item["id"]):
        return None
    authors = [a for a in item.get("authors") or [] if isinstance(a, dict)]
    return {**item, "title": str(item.get("title") or "").strip(), "message": str(item.get("message") or ""),
            "date": protocol.hub_time(item.get("date") if isinstance(item.get("date"), str) else None),
            "authors": [{**a, "user": str(a.get("user") or a.get("name") or "unknown")} for a in authors]}
