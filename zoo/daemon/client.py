"""The client side of the daemon: a store that reads the disk itself and asks the daemon to write.

:class:`DaemonStore` reads the store as any reader does (:class:`~zoo.store.reader.StoreReader`) and
implements the writer interface (:class:`~zoo.store.protocol.CacheWriter`) by sending each call over the
daemon's socket, returning what :class:`~zoo.store.writer.Store` returns (versions, plans). Reads stay local:
a warm ``ensure`` is still a few ``stat`` calls, no request, and works while the daemon is down.
Imports send the open files, never paths. Imports only the standard library (no torch).
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .. import errors
from ..store.ingest import import_source
from ..store.manifests import Version
from ..store.marks import Alias
from ..store.maintenance import Plan
from ..store.reader import StoreReader
from ..names import is_local, validate_name
from . import wire
from .server import socket_path

if TYPE_CHECKING:
    from ..store.writer import Store


class DaemonUnavailableError(errors.CacheError, ConnectionError):
    """The store is served by a daemon that does not answer."""


class DaemonStore(StoreReader):
    """The store as its daemon's clients see it: read directly (:class:`StoreReader`), written through the
    daemon (the :class:`~zoo.store.protocol.CacheWriter` interface, each call one request), with the same
    typed results as :class:`~zoo.store.writer.Store` (versions, plans)."""

    def __init__(self, home: str | os.PathLike[str] | None = None, *, sock: Path | None = None,
                 quiet: bool | None = None) -> None:
        super().__init__(home)
        self.quiet = quiet
        self.sock = sock or socket_path(self.home)

    # -- the wire ------------------------------------------------------------------------------------

    def call(self, op: str, fds: list[int] = (), **args: Any) -> Any:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                conn.connect(str(self.sock))
            except OSError as exc:
                raise self._unavailable(exc) from None
            wire.send(conn, {"op": op, "args": args}, list(fds))
            reader = wire.Reader(conn)
            bar = None
            try:
                while True:
                    try:
                        message = reader.line()
                    except wire.ProtocolError as exc:
                        raise DaemonUnavailableError(
                            f"the zoo daemon of {self.home} went away during {op} ({exc}); what it was doing "
                            "resumes when it restarts: try again then"
                        ) from None
                    if "progress" in message:
                        bar = self._progress(bar, message["progress"])
                        continue
                    if "error" in message:
                        raise _error(message["error"])
                    return message.get("ok")
            finally:
                if bar is not None:
                    bar.close()
                reader.close_fds()
        finally:
            conn.close()

    def _unavailable(self, exc: OSError) -> errors.ZooError:
        """Why the daemon's socket did not take the connection, in words that say what to do."""
        if isinstance(exc, PermissionError):
            return errors.StoreAccessError(_outsider(self.home, self.sock))
        if isinstance(exc, ConnectionRefusedError):
            return DaemonUnavailableError(
                f"the zoo daemon of {self.home} does not answer at {self.sock}: nobody listens on that socket, "
                "which a daemon that is gone left behind (killed, or crashed). Start it (systemctl start zoo, "
                f"or zoo daemon), which takes the socket over; or, to write the store without a daemon, remove "
                f"the socket: rm {self.sock}"
            )
        return DaemonUnavailableError(
            f"the zoo daemon of {self.home} does not answer at {self.sock} ({exc.strerror or exc}). Start it "
            "(systemctl start zoo, or zoo daemon), or ask its administrator"
        )

    def _progress(self, bar: Any, p: dict[str, Any]) -> Any:
        from ..store import progress

        if bar is None:
            bar = progress.bar(int(p.get("total") or 0), f"{p.get('desc', '')} (zoo daemon)", self.quiet)
            bar.seen = 0
        done = int(p.get("done") or 0)
        bar.update(max(0, done - bar.seen))
        bar.seen = done
        return bar

    # -- the writer interface, forwarded ---------------------------------------------------------------

    def ensure(self, repo: str, revision: str | None = None) -> Version:
        wanted = revision or (None if is_local(repo) else "main")
        version = self.find(repo, wanted)
        if version is not None and not self.missing_files(version):
            return version  # warm: no request, as in direct mode
        if version is None:
            self.check_absent(repo, wanted)
        return Version.read(Path(self.call("ensure", repo=repo, revision=revision)))

    def pull(self, repo: str, revision: str = "main", *, all_files: bool = False) -> Version:
        return Version.read(Path(self.call("pull", repo=repo, revision=revision, all_files=all_files)))

    @contextlib.contextmanager
    def staging(self, stem: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix=f"zoo-{stem}-") as folder:
            yield Path(folder)

    def import_dir(self, directory: str | os.PathLike[str], name: str, *, link: bool = False,
                   source: str | None = None, owned: bool = False, description: str | None = None,
                   labels: dict[str, str] | None = None, base: dict[str, Any] | None = None) -> Version:
        from ..store import lineage, marks

        validate_name(name)
        labels = marks.check_labels(labels) if labels else None
        directory, files = import_source(directory)
        if base is None:  # the client reads the card: the daemon sees only the files' descriptors
            base = lineage.base_of_folder(self, directory)
        opened = []
        try:
            for _, real, _ in files:
                opened.append(os.open(real, os.O_RDONLY | os.O_CLOEXEC))
            manifest = self.call("import", fds=opened, name=name, source=source or f"import:{directory}",
                                 files=[{"path": rel, "size": size} for rel, _, size in files],
                                 description=description, labels=labels, base=base)
        finally:
            for fd in opened:
                os.close(fd)
        return Version.read(Path(manifest))

    def remove(self, repo: str, revision: str | None = None, *, dry_run: bool = False) -> Plan:
        return _plan(self.call("remove", repo=repo, revision=revision, dry_run=dry_run))

    def gc(self, *, dry_run: bool = False, grace: float | None = None) -> Plan:
        return _plan(self.call("gc", dry_run=dry_run))

    def verify(self, repo: str | None = None) -> list[tuple[Version, Any, str]]:
        out = []
        for manifest, path, problem in self.call("verify", repo=repo):
            version = Version.read(Path(manifest))
            out.append((version, next(e for e in version.files if e.path == path), problem))
        return out

    def status(self) -> dict[str, Any]:
        return self.call("status")

    def pin(self, repo: str, revision: str | None = None) -> Version:
        return Version.read(Path(self.call("pin", repo=repo, revision=revision)))

    def tag(self, repo: str, alias: str, revision: str | None = None) -> Alias:
        return Alias.from_json(alias, self.call("tag", repo=repo, alias=alias, revision=revision))

    def untag(self, repo: str, alias: str) -> Alias:
        return Alias.from_json(alias, self.call("untag", repo=repo, alias=alias))

    def label(self, repo: str, revision: str | None, labels: dict[str, str], remove: Any = ()) -> Version:
        return Version.read(Path(self.call("label", repo=repo, revision=revision, labels=labels, remove=list(remove))))

    def unpin(self, repo: str, revision: str | None = None) -> list[str]:
        return self.call("unpin", repo=repo, revision=revision)

    def note_use(self, version: Version) -> None:
        """Tell the daemon of the use without waiting for it (the client cannot write the store), and hold
        the lease file the daemon made for the version."""
        from ..store.records import hold_lease

        with contextlib.suppress(OSError):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.setblocking(False)
                conn.connect(str(self.sock))
                wire.send(conn, {"op": "used", "args": {"repo": version.repo, "version": version.name}})
        hold_lease(self, version)


def _plan(data: dict[str, Any]) -> Plan:
    """The plan the daemon carried out (or made, for a dry run), as :meth:`Store.remove` returns it."""
    return Plan(data["description"], files=[Path(p) for p in data["files"]], dirs=[Path(p) for p in data["dirs"]],
                freed=int(data["freed"]))


def _error(data: Any) -> Exception:
    kind = data.get("type") if isinstance(data, dict) else None
    message = data.get("message") if isinstance(data, dict) else str(data)
    cls = getattr(errors, kind, None) if isinstance(kind, str) else None
    if not (isinstance(cls, type) and issubclass(cls, errors.ZooError)):
        cls = errors.ZooError
    return cls(f"{message} (from the zoo daemon)")


def _outsider(home: Path, sock: Path) -> str:
    """What a user who may not connect to the daemon's socket is told: whose group admits, whom to ask."""
    import grp
    import pwd

    try:
        st = sock.stat()
        group = grp.getgrgid(st.st_gid).gr_name
        owner = pwd.getpwuid(st.st_uid).pw_name
    except (OSError, KeyError):
        return (f"you may not use the zoo daemon of {home} (permission denied on its socket {sock}): ask its "
                "administrator to add you to the group it serves, or use a store of your own with ZOO_HOME=DIR")
    try:
        me = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        me = str(os.getuid())
    shared = st.st_mode & 0o060 == 0o060
    who = (f"it serves the members of the group {group!r}, and you ({me}) are not in it: ask {owner} (or an "
           f"administrator) to add you (usermod -aG {group} {me}), then log in again" if shared else
           f"it serves only its own user {owner!r}: ask {owner} to start it with --group GROUP to share it")
    return f"you may not use the zoo daemon of {home} ({sock}): {who}; or use a store of your own with ZOO_HOME=DIR"


def open_store(home: str | os.PathLike[str] | None = None, *, quiet: bool | None = None) -> "Store | DaemonStore":
    """The store as this process should write it: through the daemon when one serves it (its socket is
    there, or ``ZOO_DAEMON`` names one), else directly."""
    from ..store.layout import default_home
    from ..store.writer import Store

    home_path = Path(home).expanduser() if home is not None else default_home()
    sock = socket_path(home_path)
    try:
        served = bool(os.environ.get("ZOO_DAEMON")) or sock.exists()
    except OSError:  # a store this user may not even look into: direct mode says so clearly
        served = False
    return DaemonStore(home_path, sock=sock, quiet=quiet) if served else Store(home_path, quiet=quiet)
