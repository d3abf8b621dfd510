"""The store's folders on disk: their modes, their creation, their locks, and what a failed write means.

Every file and folder the store makes gets its mode from ``$ZOO_HOME`` (files its read bits, folders its
mode), never from a source file or the umask, so a store shared through a group stays shared. A write
that fails for want of space or permission becomes one of zoo's errors naming the store and the fix
(:func:`disk_errors`). Locks are best-effort (:mod:`zoo.store.locks`): correctness comes from
temporaries and atomic renames (:mod:`zoo.atomic`).
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import shutil
import stat
from pathlib import Path
from typing import Any, Iterator

from ..errors import StoreAccessError, StoreFullError
from .. import atomic
from . import progress
from .layout import Layout, repo_folder
from .locks import locked

FREE_MARGIN = 64 * 2**20  # bytes a pull leaves free on the disk, beyond what it brings


@contextlib.contextmanager
def disk_errors(where: str) -> Iterator[None]:
    """OSErrors of writing into the store become zoo errors that name the store, not the source."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StoreFullError(
                f"no space left on the device of {where} ({exc.strerror}); nothing partial was kept. Free space "
                "(zoo gc, zoo rm NAME@vN) or point ZOO_HOME at a larger disk"
            ) from None
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise StoreAccessError(
                f"cannot write to {where} ({exc.strerror}: {exc.filename}). The store belongs to another user "
                "or is read-only: ask its owner to pull it (or to add you to the store's group), or use a store "
                "of your own with ZOO_HOME=DIR"
            ) from None
        raise


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def check_free_space(home: Path, incoming: int, *, what: str = "", margin: int = FREE_MARGIN) -> None:
    """Raise :class:`~zoo.errors.StoreFullError` when the disk of the store at ``home`` has less free space
    than ``incoming`` bytes plus ``margin``."""
    where = home
    while not where.exists() and where != where.parent:
        where = where.parent
    disk = shutil.disk_usage(where)
    if disk.free >= incoming + margin:
        return
    human = progress.human
    request = f"{what} ({human(incoming)})" if what else human(incoming)
    raise StoreFullError(
        f"not enough free disk space for {request}: the disk of {home} has {human(disk.free)} free of "
        f"{human(disk.total)}, and {human(incoming + margin)} is needed (with a {human(margin)} margin); "
        f"nothing was downloaded. Free space on that disk (zoo gc, zoo rm NAME@vN), lower the quota "
        f"(zoo daemon --max-size SIZE) so that eviction makes room, or move the store to a larger disk",
    )


class Disk:
    """The folders of one store, as this process may use them."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.home = layout.home
        self._modes: tuple[int, int] | None = None
        self._readable = False

    def modes(self) -> tuple[int, int]:
        """(file mode, folder mode): files get the read bits of $ZOO_HOME, folders its mode."""
        if self._modes is None:
            home_mode = self.home.stat().st_mode & 0o7777
            self._modes = (home_mode & 0o444, home_mode | 0o700)
        return self._modes

    def prepare(self) -> None:
        """Before any write: the store's folders exist, and this user may write them (else a
        :class:`StoreAccessError` that says whose store it is and what to do)."""
        with disk_errors(str(self.home)):
            self.home.mkdir(parents=True, exist_ok=True)
            self.check_readable()
            for d in self.layout.writable_dirs():
                self._check_writable(d)
                self.mkdir(d)

    def mkdir(self, path: Path) -> None:
        """A folder, and each missing parent, with the store's mode (umask does not narrow a group store)."""
        missing = []
        while not path.is_dir() and path != self.home:
            missing.append(path)
            path = path.parent
        for folder in reversed(missing):
            with contextlib.suppress(FileExistsError):
                folder.mkdir()
            with contextlib.suppress(OSError):
                os.chmod(folder, self.modes()[1])

    def check_readable(self) -> None:
        """A store that exists but that this user may not read is an error that says so, not an empty store."""
        if self._readable:
            return
        try:
            self.home.stat()
        except FileNotFoundError:
            return  # no store yet: nothing cached
        except OSError:
            raise self.denied("read", self.home) from None
        if not os.access(self.home, os.R_OK | os.X_OK):
            raise self.denied("read", self.home)
        self._readable = True

    def _check_writable(self, folder: Path) -> None:
        """``folder`` (or the nearest of its parents that exists, where it is to be made) is writable by us."""
        while not folder.exists() and folder != self.home:
            folder = folder.parent
        if not os.access(folder, os.W_OK | os.X_OK):
            raise self.denied("write to", folder)

    def denied(self, doing: str, path: Path) -> StoreAccessError:
        """The error for a store this user may not read or write: whose it is, and what to do."""
        try:
            st = self.home.stat()
        except OSError:
            return StoreAccessError(f"cannot {doing} the store {self.home} (permission denied on {path}): "
                                    "use a store of your own with ZOO_HOME=DIR")
        group, owner = group_name(st.st_gid), user_name(st.st_uid)
        member = st.st_uid == os.getuid() or st.st_gid == os.getgid() or st.st_gid in os.getgroups()
        if not member and st.st_mode & (0o060 if doing == "write to" else 0o050):
            fix = (f"it is shared with the group {group}, which you are not in: ask {owner} to add you to it "
                   "(then log in again)")
        elif doing == "read":
            fix = f"ask {owner} to make it readable for the group {group} (chmod -R g+rX)"
        else:
            fix = (f"it is read-only for you: ask {owner} to pull or save the model there (or to make it "
                   f"writable for the group {group}: chmod -R g+w)")
        where = "" if path == self.home else f"; permission denied on {path}"
        return StoreAccessError(
            f"cannot {doing} the store {self.home} ({stat.filemode(st.st_mode)} {owner}:{group}{where}): {fix}, "
            "or use a store of your own with ZOO_HOME=DIR"
        )

    def seal(self, path: Path) -> None:
        """A stored file: read-only, readable by whoever may read the store."""
        os.chmod(path, self.modes()[0])

    def write_text(self, path: Path, text: str, *, durable: bool = False) -> None:
        """A small record of the store (a ref, a manifest, a listing), written whole or not at all; ``durable``:
        synced to the disk before this returns."""
        self.mkdir(path.parent)
        atomic.write_text(path, text, tmp_dir=self.layout.tmp, mode=self.modes()[0], durable=durable)

    def tmp_name(self, stem: str, suffix: str = ".tmp") -> Path:
        return atomic.temp_name(self.layout.tmp, stem, suffix)

    @contextlib.contextmanager
    def lock(self, key: str, what: str) -> Iterator[None]:
        """Lock files are writable by whoever may write the store (its folder mode, less the x bits)."""
        with contextlib.ExitStack() as stack:
            with disk_errors(str(self.home)):
                stack.enter_context(locked(self.layout.lock_path(key), what=what, mode=self.modes()[1] & 0o666))
            yield

    def name_lock(self, repo: str) -> Any:
        """The lock that pulls, imports, repairs and removals of ``repo`` hold."""
        return self.lock(repo_folder(repo), f"the name {repo!r}")
