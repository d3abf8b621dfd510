"""The daemon's HTTP face: the Hugging Face Hub protocol over aiohttp (the one module that imports it).

It runs its own event loop in a thread of the daemon process. Files go out with ``sendfile`` from the page
cache in bounded chunks, each with a deadline (a client that stops reading is cut off, and holds nothing
else up); a file still arriving from the upstream is sent as it arrives. Every client address may hold at
most ``max_per_client`` connections; a connection that sends no request within ``header_timeout`` seconds,
or idles longer than ``keepalive`` seconds between requests, is closed. Header lines are bounded (8 KiB),
and a body is read only for ``paths-info`` (at most 1 MiB). Nothing is writable: every other method is 405.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from ..store import hub, upstreams
from ..store.manifests import FileEntry
from ..errors import RemoteError, RemoteNotFoundError, ZooError
from ..names import is_local
from . import protocol
from .access import Access
from .answers import Answers
from .catalog import Catalog, Snapshot, served_remote_file
from .limits import Guard, ParserErrors, raise_fd_limit
from .protocol import HubError, ServedFile
from .pullthrough import PullThrough, Transfer
from .verify import Check, Verifier

log = logging.getLogger("zoo.daemon")
# Bytes per sendfile call; each must go out within send_timeout. asyncio hands the whole count to one
# os.sendfile, which copies it on the event loop's thread: 4 MiB calls held a HEAD behind 32 downloads for
# 64 ms (p99), 256 KiB calls for about 5 ms at the same throughput (benchmarks/hubserver.py).
CHUNK = 256 << 10
MAX_BODY = 1 << 20  # a paths-info request


@dataclass
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8090
    send_timeout: float = 60.0  # seconds a client may take to accept each CHUNK of a file
    header_timeout: float = 30.0  # seconds from connecting to a request (and for a paths-info body)
    keepalive: float = 30.0  # seconds an idle connection is kept between requests
    max_per_client: int = 128  # connections one client address may hold
    page_size: int = 1000  # entries of a tree listing per page, as the hub sends them


class HubServer:
    def __init__(self, catalog: Catalog, pull: PullThrough, access: Access, settings: HttpSettings) -> None:
        self.catalog, self.pull, self.access, self.settings = catalog, pull, access, settings
        self.store = catalog.store
        self.pool = concurrent.futures.ThreadPoolExecutor(32, thread_name_prefix="zoo-http")
        self.verifier = Verifier(self.pool, self._quarantine)  # a stored file's first serve checks its digest
        self.loop: asyncio.AbstractEventLoop | None = None
        self.address: tuple[str, int] | None = None
        self.counts: Counter[str] = Counter()
        self.bytes_sent = 0
        self._per_client: Counter[str] = Counter()
        self._used: dict[tuple[str, str], float] = {}
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self.answers = Answers(self)
        self.pages: Any = None  # the web page (zoo.web, set by the daemon): the paths its ``claims`` says are its

    # -- life --------------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind and serve in a thread; returns once listening (raises what binding raised)."""
        raise_fd_limit()
        self._thread = threading.Thread(target=self._main, name="zoo-http", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
        self.pool.shutdown(wait=False, cancel_futures=True)

    def status(self) -> dict[str, Any]:
        host, port = self.address or (self.settings.host, self.settings.port)
        return {"http": {"address": f"http://{_netloc(host, port)}", "requests": dict(self.counts),
                         "bytes_sent": self.bytes_sent, "pulls_in_flight": self.pull.in_flight(),
                         "connections": sum(self._per_client.values()), **self.verifier.status()},
                "upstreams": upstreams.status()}

    def _main(self) -> None:
        logging.getLogger("aiohttp.server").addFilter(ParserErrors(self.counts))
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:
            if not self._ready.is_set():
                self._error = exc
                self._ready.set()
            else:
                log.exception("the HTTP server stopped")
        finally:
            self.loop.close()

    async def _serve(self) -> None:
        s = self.settings
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=s.keepalive, max_line_size=8190,
                               max_field_size=8190, handle_signals=False)
        await runner.setup()
        loop = asyncio.get_running_loop()
        try:
            listener = await loop.create_server(self._protocol_factory(runner.server), s.host, s.port,
                                                reuse_address=True, backlog=1024)
        except BaseException:
            await runner.cleanup()
            raise
        self.address = listener.sockets[0].getsockname()[:2]
        self._stop = asyncio.Event()
        self._ready.set()
        log.info("serving the hub protocol on http://%s", _netloc(*self.address))
        try:
            await self._stop.wait()
        finally:
            listener.close()
            await runner.shutdown()
            await runner.cleanup()

    def _protocol_factory(self, server: Any) -> Any:
        """aiohttp's connection handler, behind a :class:`Guard`."""

        def factory() -> Guard:
            return Guard(server(), self)

        return factory

    # -- requests ----------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        guard = request.transport.get_protocol() if request.transport is not None else None
        if isinstance(guard, Guard):
            guard.served = True
        started = time.monotonic()
        if self.pages is not None and self.pages.claims(request.raw_path):
            response = await self._page(request)
            self.counts[str(response.status)] += 1
            return response
        try:
            if request.method not in ("GET", "HEAD", "POST"):
                raise HubError(405, None, "this zoo server is read-only: GET and HEAD (and POST paths-info)")
            req = protocol.parse(request.raw_path, request.method)
            if req.kind == "resolve":
                response = await self._resolve(request, req)
            elif req.kind == "raw":
                response = await self._raw(request, req)
            else:
                response = await self.answers.answer(request, req)
        except HubError as exc:
            response = web.json_response(exc.body(), status=exc.status, headers=exc.headers())
        except ZooError as exc:
            log.warning("%s %s: %s", request.method, request.raw_path[:200], exc)
            error = HubError(500, None, f"{type(exc).__name__}: {exc}")
            response = web.json_response(error.body(), status=500, headers=error.headers())
        self.counts[str(response.status)] += 1
        if response.status >= 400 or request.method == "GET" and "/resolve/" in request.raw_path:
            log.info("%s %s %s -> %d (%.1f ms)", request.remote, request.method, request.raw_path[:300],
                     response.status, (time.monotonic() - started) * 1000)
        return response

    async def _page(self, request: web.Request) -> web.StreamResponse:
        """A page of zoo.web: answered on a worker thread (it reads the store), never on the event loop, so a
        page never holds up a download. Only its login form has a body (at most 4 KiB)."""
        body = b""
        if request.method == "POST":
            if (request.content_length or 0) > 4096:
                return web.Response(status=413, text="a login form is at most 4 KiB")
            try:
                body = await asyncio.wait_for(request.content.read(4097), self.settings.header_timeout)
            except asyncio.TimeoutError:
                return web.Response(status=408, text="the form did not arrive in time")
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            reply = await asyncio.get_running_loop().run_in_executor(
                self.pool, self.pages.answer, request.method, request.raw_path, headers, body)
        except Exception:  # a defect of the page: logged, answered without a traceback
            log.exception("%s %s: the page failed", request.method, request.raw_path[:200])
            return web.Response(status=500, text="the page failed; the daemon's log says why")
        return web.Response(status=reply.status, body=reply.body, headers=reply.headers)

    async def _snapshot(self, request: web.Request, repo: str, revision: str | None) -> Snapshot:
        try:
            snap = self.catalog.cached(repo, revision)
            if snap is None:
                snap = await asyncio.get_running_loop().run_in_executor(self.pool, self.catalog.resolve, repo, revision)
        except HubError as exc:
            if exc.status == 404 and is_local(repo):  # who may not read a name learns nothing of its revisions
                self.access.check(repo, "local", request.headers.get("Authorization"))
            raise
        self.access.check(repo, snap.access, request.headers.get("Authorization"))
        return snap

    # -- files -------------------------------------------------------------------------------------

    async def _raw(self, request: web.Request, req: protocol.Request) -> web.StreamResponse:
        """The git blob of a file: a small file's bytes (as ``resolve``), an LFS file's pointer text."""
        snap = await self._snapshot(request, req.repo, req.revision)
        f = snap.files.get(req.path)
        if f is None or not f.lfs:
            return await self._resolve(request, req)
        body = protocol.LFS_POINTER.format(sha256=f.etag, size=f.size).encode()
        headers = {"X-Repo-Commit": snap.commit, "ETag": f'"{f.blob_id}"', "Accept-Ranges": "bytes",
                   "Content-Type": "text/plain; charset=utf-8"}
        span = protocol.parse_range(request.headers.get("Range"), len(body))
        if span == "unsatisfiable":
            return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{len(body)}"})
        if isinstance(span, tuple):
            headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{len(body)}"
            body = body[span[0]:span[1]]
        return web.Response(status=206 if isinstance(span, tuple) else 200, body=body, headers=headers)  # HEAD: no body

    async def _resolve(self, request: web.Request, req: protocol.Request) -> web.StreamResponse:
        snap = await self._snapshot(request, req.repo, req.revision)
        f = snap.files.get(req.path)
        if f is None:
            offline = self.catalog.offline() and snap.access != "local"
            error = protocol.entry_not_found(snap.repo, req.revision or "main", req.path, " (or not stored: this "
                                             "zoo server is offline and serves only what it stores)" if offline else "")
            error.commit = snap.commit  # huggingface_hub then remembers the file is absent in this commit
            raise error
        where = self.catalog.content(snap, f)
        if where == "repair" and snap.version is not None and request.method == "GET":
            # changed on disk since it was checked: the store looks at it (and fetches it again if damaged)
            await asyncio.get_running_loop().run_in_executor(self.pool, self._repair, snap)
            snap = await self._snapshot(request, req.repo, req.revision)
            f = snap.files[req.path]
            where = self.catalog.content(snap, f)
        if where == "repair":
            where = None
        loop = asyncio.get_running_loop()
        if request.method == "GET" and (where == "confirm" or where is None and self.pull.joining_from_elsewhere(snap, f)):
            # the store's dedupe must not hand one repository's files out under another's name (one of them
            # may be gated): the upstream says whether it serves this repository that file, then it is ours
            await loop.run_in_executor(self.pool, self._confirm, snap, f, where == "confirm")
            where = self.catalog.content(snap, f)
        if where == "confirm":  # a HEAD: the metadata only
            where = None
        if where is None and request.method == "GET" and self.catalog.offline():
            error = protocol.entry_not_found(snap.repo, req.revision or "main", req.path,
                                             " (not stored, and this zoo server is offline)")
            error.commit = snap.commit
            raise error
        if where is None and request.method == "GET" and snap.remote is None and self.store.central is None:
            raise HubError(502, None, f"{snap.repo}/{f.path}: not stored, and the upstream's listing is unknown")
        headers = protocol.file_headers(snap.commit, f)
        span = protocol.parse_range(request.headers.get("Range"), f.size)
        if span is not None and self.pull.tainted(f.etag):
            span = None  # a client may hold bytes of a failed download: it gets the whole file (see PullThrough)
        if span == "unsatisfiable":
            return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{f.size}"})
        start, end = span if isinstance(span, tuple) else (0, f.size)
        transfer = None
        if where is None and request.method == "GET" and end > start:
            transfer = self.pull.transfer(snap, f)
            if not await self._started(request, transfer):  # one that fails at once is an error status, not a cut body
                return web.Response(status=499)  # nobody is listening
        response = web.StreamResponse(status=206 if isinstance(span, tuple) else 200, headers=headers)
        if isinstance(span, tuple):
            response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{f.size}"
            self.counts["ranges"] += 1
        response.content_length = end - start
        await response.prepare(request)
        if request.method == "HEAD" or end == start:
            await response.write_eof()
            return response
        try:
            if isinstance(where, Path):
                with open(where, "rb") as fobj:
                    check = self.verifier.check(fobj, f)
                    if check is None:  # checked by this process, unchanged since
                        await self._send(request, fobj, start, end - start)
                    else:
                        await self._send_checked(request, fobj, check, start, end)
            else:
                assert transfer is not None
                await self._send_arriving(request, transfer, start, end)
            await response.write_eof()
            self._note_use(snap)
        except (ConnectionError, asyncio.TimeoutError, OSError) as exc:
            log.info("%s GET %s: cut off after %s (%s)", request.remote, request.raw_path[:200],
                     type(exc).__name__, exc)
            if request.transport is not None:
                request.transport.abort()
        return response

    async def _started(self, request: web.Request, transfer: Transfer) -> bool:
        """Wait until ``transfer`` writes its file or ends (True); one that failed becomes the answer; False
        when the client went away meanwhile."""
        loop = asyncio.get_running_loop()
        moved = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(moved.set)

        transfer.listen(wake)
        try:
            while transfer.part is None and not transfer.done:
                moved.clear()
                if request.transport is None or request.transport.is_closing():
                    return False  # the client went away; the download goes on for the others
                await _wait(moved, 1.0)
        finally:
            transfer.unlisten(wake)
        error = transfer.error
        if error is None:
            return True
        if isinstance(error, HubError):
            raise error
        if isinstance(error, RemoteNotFoundError):
            raise _refused(transfer.snap.repo, transfer.file.path, error)
        name = type(error).__name__
        status = 507 if name in ("QuotaError", "StoreFullError") else 502
        raise HubError(status, None, f"{transfer.snap.repo}/{transfer.file.path}: the pull from the upstream "
                                     f"failed ({name}: {error})")

    def _note_use(self, snap: Snapshot) -> None:
        """A version served to another machine is in use: quota eviction (least recently used first) must
        see it, as it sees local loads. Recorded at most once a minute per version."""
        if snap.version is None:
            return
        key = (snap.repo, snap.version.name)
        now = time.monotonic()
        if now - self._used.get(key, -120.0) < 60:
            return
        self._used[key] = now
        from ..store.records import record_use

        self.pool.submit(record_use, self.store, snap.repo, snap.version.name)

    def _confirm(self, snap: Snapshot, f: ServedFile, stored: bool) -> None:
        """The upstream serves ``snap.repo`` the file ``f`` (else the answer is its refusal); content stored
        for another repository then becomes this one's too."""
        try:
            hub.check_file(snap.repo, snap.commit, served_remote_file(f))
        except RemoteNotFoundError as exc:
            raise _refused(snap.repo, f.path, exc) from None
        except RemoteError as exc:
            raise HubError(502, None, f"{snap.repo}/{f.path}: could not ask the upstream ({exc})") from None
        if stored and f.sha256:
            entry = FileEntry(f.path, f.sha256, f.size, f.etag)
            self.store.link_file(snap.repo, entry)
            if snap.remote is not None and not is_local(snap.repo) and self.store.adopt(snap.remote, [entry],
                                                            refs=self.catalog.refs_to(snap.repo, snap.commit)):
                self.catalog.forget(snap.repo)

    def _quarantine(self, f: ServedFile) -> None:
        """A stored file failed its digest when served: quarantined the way ``zoo verify`` does it (every
        repository whose versions list it is verified), and its etag tainted (a client that got some of its
        bytes and resumes with ``Range`` is sent the whole file). The next request fetches it again."""
        self.pull.taint(f.etag)
        repos = sorted({v.repo for v in self.store.iter_versions() if any(e.etag == f.etag for e in v.files)})
        for repo in repos:
            for version, entry, problem in self.store.verify(repo):
                log.warning("%s %s/%s: %s", repo, version.name, entry.path, problem)
            self.catalog.forget(repo)
        if not repos:
            log.warning("%s: damaged, and no version lists it (a file fetched for a version not complete yet): it "
                        "stays until zoo gc collects it; every request for it is cut off", f.path)

    def _repair(self, snap: Snapshot) -> None:
        assert snap.version is not None
        self.store.ensure(snap.repo, snap.version.name)
        self.catalog.forget(snap.repo)

    async def _send(self, request: web.Request, fobj: Any, offset: int, count: int) -> None:
        """``count`` bytes of ``fobj`` from ``offset`` with sendfile, a chunk at a time, each within the
        send deadline."""
        loop = asyncio.get_running_loop()
        while count > 0:
            transport = request.transport
            if transport is None or transport.is_closing():
                raise ConnectionResetError("the client went away")
            n = min(CHUNK, count)
            await asyncio.wait_for(loop.sendfile(transport, fobj, offset, n), self.settings.send_timeout)
            offset, count = offset + n, count - n
            self.bytes_sent += n

    async def _send_checked(self, request: web.Request, fobj: Any, check: Check, start: int, end: int) -> None:
        """Bytes ``start:end`` of a stored file while its digest is checked: what the hash has passed goes
        out, the response's last byte only once the whole file matched; a file that failed cuts the
        connection (after it was quarantined, so a retry gets good bytes)."""
        loop = asyncio.get_running_loop()
        moved = asyncio.Event()

        def wake() -> None:
            if not moved.is_set():
                loop.call_soon_threadsafe(moved.set)

        check.listen(wake)
        pos = start
        try:
            while pos < end:
                moved.clear()
                if check.done and not check.ok:
                    raise ConnectionResetError("the stored file failed its digest")
                ready = end if check.done else min(check.hashed, end - 1)
                if ready > pos:
                    await self._send(request, fobj, pos, ready - pos)
                    pos = ready
                    continue
                await _wait(moved, 1.0)
        finally:
            check.unlisten(wake)

    async def _send_arriving(self, request: web.Request, transfer: Transfer, start: int, end: int) -> None:
        """Bytes ``start:end`` of a file being downloaded, as they arrive. The file's last byte goes out
        only after its digest is checked; a failed download cuts the connection."""
        loop = asyncio.get_running_loop()
        moved = asyncio.Event()

        def wake() -> None:
            if not moved.is_set():  # one wake-up per turn of the loop, however many chunks arrived
                loop.call_soon_threadsafe(moved.set)

        transfer.listen(wake)
        pos, fobj, attempt, verified = start, None, 0, False
        try:
            while pos < end:
                moved.clear()
                if transfer.error is not None:  # (the pull-through taints what was streamed)
                    raise ConnectionResetError(f"the upstream download failed: {transfer.error}")
                if transfer.done and transfer.entry is not None:
                    if pos > start and attempt != transfer.attempt:  # what was sent came from a failed try
                        raise ConnectionResetError("the upstream download started again")
                    if not verified:  # the rest from the stored object, never from a partial file
                        if fobj is not None:
                            fobj.close()
                        fobj, verified = open(self.store.object_path(transfer.entry.sha256), "rb"), True
                    ready = end
                elif transfer.part is not None:
                    if transfer.attempt != attempt:
                        if pos > start:
                            raise ConnectionResetError("the upstream download started again")
                        if fobj is not None:
                            fobj.close()
                        try:
                            fobj = open(transfer.part, "rb")
                        except FileNotFoundError:
                            fobj = None
                            await _wait(moved, 0.2)
                            continue
                        attempt = transfer.attempt
                    # the response's last byte waits for the digest: no answer ends on unverified bytes
                    ready = min(os.fstat(fobj.fileno()).st_size, end - 1)
                else:
                    ready = pos
                if ready > pos:
                    if not verified:
                        transfer.streamed = True  # before the bytes go: a failure after this taints them
                    await self._send(request, fobj, pos, ready - pos)
                    pos = ready
                    continue
                await _wait(moved, 1.0)
        finally:
            transfer.unlisten(wake)
            if fobj is not None:
                fobj.close()


def _refused(repo: str, path: str, exc: RemoteNotFoundError) -> HubError:
    """The upstream does not serve ``repo`` the file ``path``: its answer, passed on."""
    return HubError(401 if exc.code == "GatedRepo" else 404, exc.code or "EntryNotFound",
                    f"{repo}/{path}: the upstream does not serve it ({exc})")


async def _wait(event: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except asyncio.TimeoutError:
        pass


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (loopback) or ``[v6]:PORT``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ZooError(f"--http takes HOST:PORT (e.g. 127.0.0.1:8090 or 0.0.0.0:8090), not {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)
