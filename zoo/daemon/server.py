"""``zoo daemon``: the one writer of a shared store, serving many users over a unix socket.

- Clients find it through ``$ZOO_HOME/daemon.sock`` (or ``ZOO_DAEMON=PATH``) and ask it to write:
  make a name present, import, save, remove, gc, verify. They read the store directly, so warm loads
  cost no request and keep working while the daemon restarts.
- Who asks is known from the socket (``SO_PEERCRED``: pid, uid) and logged. The socket is group-owned,
  mode 0660; a user outside ``--group`` is refused. Imports arrive as open files passed over the socket,
  so the daemon reads only what the client itself could open (no confused deputy, even as root).
- One download however many ask (requests for a name and revision share one job, which outlives its client).
- SIGTERM/SIGINT: stop accepting, exit 0; a download in flight stays in ``tmp/``, resumed by the next daemon.
"""

from __future__ import annotations

import contextlib
import contextvars
import grp
import logging
import os
import pwd
import signal
import socket
import socketserver
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..store.disk import check_free_space
from ..store.events import Actor, acting_as
from ..store.writer import Store
from ..errors import InvalidArgumentError, ProtectedError, ZooError
from ..names import validate_name
from . import wire
from .central import CentralSync  # the bucket's versions brought in, this store's sent (--object-store)
from .startup import prepare_home, remove_leftovers, require_extras, socket_in_use

log = logging.getLogger("zoo.daemon")
SOCKET_NAME = "daemon.sock"
REQUEST_TIMEOUT = 60.0  # seconds a client may take to send its request, or to read a reply


def socket_path(store_home: Path) -> Path:
    return Path(os.environ["ZOO_DAEMON"]) if os.environ.get("ZOO_DAEMON") else store_home / SOCKET_NAME


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int

    @property
    def user(self) -> str:
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return str(self.uid)

    def groups(self) -> set[int]:
        """The peer process's groups, supplementary ones included (from /proc, as the kernel has them)."""
        found = {self.gid}
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("Groups:"):
                    found |= {int(g) for g in line.split()[1:]}
        return found


def peer_of(sock: socket.socket) -> Peer:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return Peer(*struct.unpack("3i", raw))


@dataclass
class Job:
    """One piece of work, shared by every client that asked for it."""

    key: tuple
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None
    desc: str = ""
    total: int = 0
    progress: int = 0
    waiting: int = 0
    started: float = field(default_factory=time.time)

    def snapshot(self) -> dict[str, Any]:
        return {"desc": self.desc, "done": self.progress, "total": self.total}


class _JobBar:
    """The progress bar the store draws while a job runs: it updates the job, which waiting clients read."""

    def __init__(self, job: Job, total: int, desc: str) -> None:
        self.job = job
        job.total, job.desc, job.progress = total, desc, 0

    def update(self, n: int = 1) -> None:
        self.job.progress += n

    def __enter__(self) -> "_JobBar":
        return self

    def __exit__(self, *exc: Any) -> None: ...


class Daemon:
    """The one writer of a shared store. Its policy (the quota, progress streamed to the client that asked)
    is given to the store it makes (:class:`~zoo.store.protocol.WritePolicy`: :meth:`make_room`,
    :meth:`bar`); the store itself is used through its public methods only."""

    def __init__(self, home: Path, sock_path: Path, *, group: str | None = None,
                 max_size: int | None = None, watch: list[Path] = (), quiet_period: float = 10.0,
                 poll: float | None = None, http: Any = None, tokens: Path | None = None,
                 revalidate: float = 60.0, orphan_grace: float = 600.0, scrub: float | None = None,
                 admins: str | None = None, webhook: Any = None, objectstore: str | None = None) -> None:
        require_extras(watch=bool(watch), http=http is not None, objectstore=objectstore)
        self.store = store = Store(home, quiet=True, policy=self, events=webhook.dispatcher() if webhook else None,
                                   objectstore=objectstore)  # the central tier in a bucket (zoo.daemon.central)
        self.orphan_grace = orphan_grace
        self.drops = None
        if watch:
            from .watch import DropFolders

            self.drops = DropFolders(list(watch), self._ingest_drop, quiet=quiet_period, poll=poll,
                                     on_problem=self._drop_problem)
        self.max_size = max_size
        self.sock_path = sock_path
        self.group_gid = _group_id(group) if group else None
        self.admins = admins  # a group whose members may move any alias and remove any version
        self.admins_gid = _group_id(admins) if admins else None
        self.private = tokens is not None  # gated content: no local user outside the group reads the store
        self.started = time.time()
        self.jobs: dict[tuple, Job] = {}
        self.jobs_lock = threading.Lock()
        self.clients = 0
        self.current = threading.local()
        self.server: socketserver.ThreadingUnixStreamServer | None = None
        self.extras: list[Callable[[], dict[str, Any]]] = []  # status sections (watched folders, quota)
        self.http = None
        if http is not None:  # the hub protocol for other machines (zoo.hubserver)
            from ..hubserver import make_server

            self.http = make_server(store, http, run_job=self.run_shared, tokens=tokens, revalidate=revalidate)
            self.extras.append(self.http.status)
        from .scrub import Scrubber, scrub_rate  # bit rot a stat cannot see, found at a bounded rate

        self.scrubber = Scrubber(store, scrub if scrub is not None else scrub_rate(), on_damage=self._scrubbed_damage)
        self.background = [self.scrubber, *([CentralSync(store)] if store.central is not None else [])]
        self.extras += [b.status for b in self.background] + ([webhook.status] if webhook is not None else [])

    def _scrubbed_damage(self, etags: list[str]) -> None:
        if self.http is not None:  # a client that got those bytes and resumes is sent the whole file
            for etag in etags:
                self.http.pull.taint(etag)

    # -- jobs ------------------------------------------------------------------------------------

    def make_room(self, incoming: int, what: str, repo: str) -> None:
        """Before a write of ``incoming`` bytes: evict under the quota (never ``repo``, whose lock the writer
        holds), else check the disk's free space."""
        if self.max_size is None:
            check_free_space(self.store.home, incoming, what=what)
            return
        from . import evict

        for last in (False, True):
            try:
                evict.make_room(self.store, max_size=self.max_size, incoming=incoming, what=what,
                                busy=frozenset({repo}))
                return
            except evict.QuotaError:
                # Files fetched for other machines that no version lists yet (a repository's extra files, a
                # snapshot never finished) are not versions, so eviction cannot see them: collect those older
                # than orphan_grace (10 minutes), then try once more.
                if last or not self.store.gc(grace=self.orphan_grace).freed:
                    raise

    def may_change(self, owner: Actor | None, doing: str) -> None:
        """An alias is moved or removed, or a version removed, only by who made it, root, or an admin."""
        actor = Actor.current()  # a uid means one user on one host only (versions come from other machines too)
        if actor.uid == 0 or (owner is not None and owner.uid == actor.uid and owner.host in ("", actor.host)):
            return
        if self.admins_gid is not None and self._in_group(actor, self.admins_gid):
            return
        who = [owner.user if owner else None, "root", f"members of the group {self.admins!r}" if self.admins else None]
        fix = "" if self.admins else " (the daemon has no admin group: start it with --admins GROUP to name one)"
        raise ProtectedError(f"{actor.user} may not {doing}: only {', '.join(w for w in who if w)} may{fix}; "
                             "nothing was changed")

    @staticmethod
    def _in_group(actor: Actor, gid: int) -> bool:
        try:
            entry = pwd.getpwuid(actor.uid)
        except KeyError:
            return False
        return entry.pw_gid == gid or entry.pw_name in grp.getgrgid(gid).gr_mem

    def bar(self, total: int, desc: str) -> Any:
        job = getattr(self.current, "job", None)
        if job is None:
            from ..store import progress

            return progress.bar(total, desc, True)
        return _JobBar(job, total, desc)

    def run_shared(self, key: tuple, work: Callable[[], Any]) -> Job:
        """The job for ``key``: the one in flight if there is one, else a new one started in its own thread
        (so that it finishes even if every client that asked goes away)."""
        with self.jobs_lock:
            job = self.jobs.get(key)
            if job is not None:
                job.waiting += 1
                return job
            job = self.jobs[key] = Job(key, waiting=1)

        context = contextvars.copy_context()  # the job's changes are recorded as the client's who started it

        def run() -> None:
            self.current.job = job
            try:
                job.result = work()
            except BaseException as exc:  # handed to every waiting client
                job.error = exc
            finally:
                with self.jobs_lock:
                    self.jobs.pop(key, None)
                job.done.set()

        threading.Thread(target=context.run, args=(run,), name=f"zoo-job-{key[0]}", daemon=True).start()
        return job

    # -- requests --------------------------------------------------------------------------------

    def authorise(self, peer: Peer) -> str | None:
        """Why ``peer`` may not use the daemon, or None."""
        if peer.uid in (0, os.getuid()):
            return None
        if self.group_gid is not None and self.group_gid in peer.groups():
            return None
        group = grp.getgrgid(self.group_gid).gr_name if self.group_gid is not None else None
        return (f"user {peer.user} may not use the zoo daemon of {self.store.home}: "
                + (f"ask an administrator to add you to the group {group!r}" if group else
                   "it serves only its own user (start it with --group GROUP to share it)"))

    def handle(self, request: dict[str, Any], reader: wire.Reader, peer: Peer,
               send: Callable[[dict[str, Any]], None]) -> Any:
        op, args = request.get("op"), request.get("args") or {}
        if not isinstance(args, dict):
            raise InvalidArgumentError("args must be an object")
        (log.debug if op == "used" else log.info)(
            "%s (uid %d, pid %d): %s %s", peer.user, peer.uid, peer.pid, op if str(op).isidentifier() else repr(op),
            " ".join(f"{k}={v}" if f"{k}{v}".isprintable() else repr(f"{k}={v}"[:200])  # one line, whatever sent
                     for k, v in args.items() if k != "files"))
        with acting_as(Actor.of_uid(peer.uid, peer.user)):  # records and events name the client, not the daemon
            return self._handle(op, args, reader, peer, send)

    def _handle(self, op: Any, args: dict[str, Any], reader: wire.Reader, peer: Peer,
                send: Callable[[dict[str, Any]], None]) -> Any:
        store = self.store
        if op == "used":  # a client loaded a version: its last use, for LRU eviction
            from ..store.records import record_use

            record_use(store, _text(args, "repo"), _text(args, "version"))
            return None
        if op == "ensure":
            repo, revision = _text(args, "repo"), _text(args, "revision", optional=True)
            return self._made(self._wait(("ensure", repo, revision), lambda: store.ensure(repo, revision), send))
        if op in ("pin", "unpin"):
            repo, revision = _text(args, "repo"), _text(args, "revision", optional=True)
            return str(store.pin(repo, revision).manifest) if op == "pin" else store.unpin(repo, revision)
        if op in ("tag", "untag"):
            repo, alias = _text(args, "repo"), _text(args, "alias")
            done = store.tag(repo, alias, _text(args, "revision", optional=True)) if op == "tag" else store.untag(repo, alias)
            return done.as_json()
        if op == "label":
            labels, remove = args.get("labels") or {}, args.get("remove") or []
            if not isinstance(labels, dict) or not isinstance(remove, list):
                raise InvalidArgumentError("label takes labels (an object) and remove (a list)")
            return str(store.label(_text(args, "repo"), _text(args, "revision", optional=True), labels,
                                   [str(k) for k in remove]).manifest)
        if op == "pull":
            repo, revision = _text(args, "repo"), _text(args, "revision") or "main"
            all_files = bool(args.get("all_files"))
            return self._made(self._wait(("pull", repo, revision, all_files),
                                         lambda: store.pull(repo, revision, all_files=all_files), send))
        if op == "import":
            return self._import(args, reader, peer, send)
        if op == "remove":
            plan = store.remove(_text(args, "repo"), _text(args, "revision", optional=True),
                                dry_run=bool(args.get("dry_run")))
            return _plan(plan)
        if op == "gc":
            return _plan(store.gc(dry_run=bool(args.get("dry_run"))))
        if op == "verify":
            repo = _text(args, "repo", optional=True)
            problems = self._wait(("verify", repo), lambda: store.verify(repo), send)
            return [[str(v.manifest), e.path, problem] for v, e, problem in problems]
        if op == "status":
            return self.status()
        raise InvalidArgumentError(f"unknown request {op!r}")

    def _wait(self, key: tuple, work: Callable[[], Any], send: Callable[[dict[str, Any]], None]) -> Any:
        job = self.run_shared(key, work)
        while not job.done.wait(0.5):
            send({"progress": job.snapshot()})
        if job.error is not None:
            raise job.error
        return job.result

    def _import(self, args: dict[str, Any], reader: wire.Reader, peer: Peer,
                send: Callable[[dict[str, Any]], None]) -> str:
        """An import from the files the client opened and passed (checked and copied from those very
        descriptors: :mod:`zoo.daemon.ingest`)."""
        from .ingest import ClientGone, import_open, peer_gone, regular_size

        name = validate_name(_text(args, "name"))
        files = args.get("files")
        if not isinstance(files, list) or not files or len(files) > 100_000:
            raise InvalidArgumentError("an import names its files: a non-empty list")
        fds = reader.take_fds(len(files))
        try:
            sources = []
            for entry, fd in zip(files, fds):
                rel = _relative_path(entry).as_posix()
                sources.append((rel, fd, regular_size(fd, rel, entry.get("size"))))
            source = args.get("source") if isinstance(args.get("source"), str) else None
            about = {"description": args.get("description") if isinstance(args.get("description"), str) else None,
                     "labels": args.get("labels") if isinstance(args.get("labels"), dict) else None,
                     "base": args.get("base") if isinstance(args.get("base"), dict) else None}
            version = import_open(self.store, name, sources, stem=f"import-{peer.uid}",
                                  source=f"{source or 'import'} (uid {peer.uid} {peer.user})",
                                  gone=peer_gone(reader.sock), about=about)
        except ClientGone as exc:
            log.warning("%s (uid %d, pid %d): %s; nothing was kept", peer.user, peer.uid, peer.pid, exc)
            raise
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        return self._made(version)

    def _made(self, version: Any) -> str:
        """A version a client will load: its lease file exists (a reader who cannot write the store holds it)."""
        from ..store.records import ensure_lease_file

        with contextlib.suppress(OSError):
            ensure_lease_file(self.store, version)
        return str(version.manifest)

    def _ingest_drop(self, name: str, folder: Path) -> None:
        """A drop folder became complete: a new version of ``name`` (none when the content is known)."""
        from .ingest import import_drop

        try:
            maker = Actor.of_uid(folder.stat().st_uid)  # who filled the drop folder
        except OSError:
            maker = None
        with acting_as(maker):
            job = self.run_shared(("drop", name, str(folder)), lambda: import_drop(self.store, name, folder))
        job.done.wait()
        if job.error is not None:
            raise job.error
        log.info("drop folder %s: %s %s (content id %s)", folder, name, job.result.name, job.result.id[:12])
        self._made(job.result)

    @staticmethod
    def _drop_problem(name: str, folder: Path, reason: str) -> None:
        log.warning("drop folder %s: %s", folder, reason)

    def status(self) -> dict[str, Any]:
        with self.jobs_lock:
            jobs = [{"op": j.key[0], "what": " ".join(str(k) for k in j.key[1:] if k is not None),
                     "waiting": j.waiting, **j.snapshot()} for j in self.jobs.values()]
        out: dict[str, Any] = {
            "pid": os.getpid(), "store": str(self.store.home), "socket": str(self.sock_path),
            "uptime": time.time() - self.started, "clients": self.clients, "jobs": jobs,
        }
        if self.drops is not None:
            out["watched"] = self.drops.watched()
            out["drop_folders"] = [f for f in self.drops.status() if f.get("state") != "ingested"]
        if self.max_size is not None:
            from ..store.maintenance import usage
            from ..store.records import pins

            out["quota"] = {"max_size": self.max_size, "used": usage(self.store).physical,
                            "pinned": sorted(f"{r}@{v}" for r, v in pins(self.store))}
        for extra in self.extras:
            out.update(extra())
        return out

    # -- serving ---------------------------------------------------------------------------------

    def serve(self, *, ready: Callable[[], None] | None = None) -> int:
        prepare_home(self.store.home, self.group_gid, private=self.private)
        self.store.disk.prepare()
        self.sock_path.parent.mkdir(parents=True, exist_ok=True)
        if socket_in_use(self.sock_path):
            raise InvalidArgumentError(
                f"a zoo daemon already serves {self.sock_path} (it answers there): stop it first "
                "(systemctl stop zoo, or kill its pid from zoo daemon status), or give this one another --socket")
        with contextlib.suppress(FileNotFoundError):
            self.sock_path.unlink()  # a socket left by a daemon that is gone (killed, crashed): nobody listens
        remove_leftovers(self.store)
        daemon = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                daemon.serve_connection(self.request)

        server = socketserver.ThreadingUnixStreamServer(str(self.sock_path), Handler, bind_and_activate=False)
        server.daemon_threads = True
        old_umask = os.umask(0o177)
        try:
            server.server_bind()
        finally:
            os.umask(old_umask)
        started = False
        try:
            if self.group_gid is not None:
                os.chown(self.sock_path, -1, self.group_gid)
                os.chmod(self.sock_path, 0o660)
            server.server_activate()
            self.server = server

            def stop(signum: int, frame: Any) -> None:
                log.info("signal %d: no new requests; work in flight stays resumable", signum)
                threading.Thread(target=server.shutdown, daemon=True).start()

            signal.signal(signal.SIGTERM, stop)
            signal.signal(signal.SIGINT, stop)

            def reload(signum: int, frame: Any) -> None:  # SIGHUP (systemctl reload): read the tokens file again
                if self.http is not None:
                    self.http.access.reload()
                else:
                    log.info("signal %d: nothing to read again (no --tokens)", signum)

            signal.signal(signal.SIGHUP, reload)
            if self.http is not None:
                try:
                    self.http.start()
                except OSError as exc:
                    raise InvalidArgumentError(
                        f"cannot listen on {self.http.settings.host}:{self.http.settings.port}: "
                        f"{exc.strerror or exc}; choose another --http address") from None
            log.info("serving %s on %s (pid %d)", self.store.home, self.sock_path, os.getpid())
            if self.drops is not None:
                self.drops.start()  # scans every watched folder first: what arrived while down is not missed
            for job in self.background:
                job.start()
            started = True
        finally:
            if not started:  # whatever stopped the start leaves no socket behind (clients would wait on it)
                if self.http is not None:
                    with contextlib.suppress(Exception):
                        self.http.stop()
                server.server_close()
                with contextlib.suppress(FileNotFoundError):
                    self.sock_path.unlink()
        if ready:
            ready()
        try:
            server.serve_forever(poll_interval=0.5)
        finally:
            for job in self.background:
                job.stop()
            if self.drops is not None:
                self.drops.stop()
            if self.http is not None:
                self.http.stop()
            server.server_close()
            with contextlib.suppress(FileNotFoundError):
                self.sock_path.unlink()
        log.info("stopped")
        return 0

    def serve_connection(self, sock: socket.socket) -> None:
        peer = peer_of(sock)
        reader = wire.Reader(sock)
        sock.settimeout(REQUEST_TIMEOUT)  # a client that connects and sends nothing is let go
        self.clients += 1

        def send(message: dict[str, Any]) -> None:
            wire.send(sock, message)

        try:
            refusal = self.authorise(peer)
            try:
                request = reader.line()
            except wire.ConnectionClosed:
                raise
            except wire.ProtocolError as exc:
                if refusal:
                    request = {}
                else:
                    log.warning("%s (uid %d, pid %d): not a request, answered with an error: %s",
                                peer.user, peer.uid, peer.pid, exc)
                    send({"error": {"type": "InvalidArgumentError", "message": (
                        f"not a zoo daemon request ({exc}): a request is one line of JSON, "
                        '{"op": OPERATION, "args": {...}}; zoo\'s own client (zoo.daemon.client.DaemonStore) '
                        "writes them")}})
                    return
            if refusal:
                log.warning("refused %s (uid %d, pid %d): %s", peer.user, peer.uid, peer.pid, refusal)
                send({"error": {"type": "StoreAccessError", "message": refusal}})
                return
            try:
                result = self.handle(request, reader, peer, send)
                if request.get("op") != "used":  # a use record is sent and forgotten: its client is gone
                    send({"ok": result})
            except ZooError as exc:
                send({"error": {"type": type(exc).__name__, "message": str(exc)}})
            except OSError as exc:
                send({"error": {"type": "CacheError", "message": f"{exc.strerror or exc}: {exc.filename or ''}"}})
            except Exception as exc:  # a bug of ours: the client gets a clear error, the daemon keeps serving
                log.exception("request %r failed", request.get("op"))
                send({"error": {"type": "ZooError", "message": f"the daemon failed: {type(exc).__name__}: {exc}"}})
        except (wire.ProtocolError, OSError) as exc:
            log.info("%s (pid %d): connection ended: %s", peer.user, peer.pid, exc)
        finally:
            reader.close_fds()
            self.clients -= 1


def _group_id(group: str) -> int:
    try:
        return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise InvalidArgumentError(f"no such group {group!r}; create it (groupadd {group}) or pass another") from None


def _text(args: dict[str, Any], key: str, *, optional: bool = False) -> str | None:
    value = args.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidArgumentError(f"{key!r} must be a non-empty string")
    return value


def _relative_path(entry: Any) -> Path:
    path = entry.get("path") if isinstance(entry, dict) else None
    parts = path.split("/") if isinstance(path, str) else []
    if not parts or any(p in ("", ".", "..") or "\0" in p or p.startswith(".") for p in parts):
        raise InvalidArgumentError(f"an import names the file {path!r}, which is not a plain relative path")
    return Path(*parts)


def _plan(plan: Any) -> dict[str, Any]:
    """A removal or gc plan as a reply: its paths are the store's, which the client reads too."""
    return {"description": plan.description, "freed": plan.freed, "files": [str(p) for p in plan.files],
            "dirs": [str(p) for p in plan.dirs]}


__all__ = ["Daemon", "Peer", "SOCKET_NAME", "require_extras", "socket_path"]
