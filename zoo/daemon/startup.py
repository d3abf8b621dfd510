"""What ``zoo daemon`` checks and clears before it serves: the extra it needs, a socket left by a daemon
that is gone (or one that still serves), a store closed to users outside its group, and what killed
processes left in ``tmp/``."""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import socket
import stat
from pathlib import Path

from .. import atomic
from ..store.progress import human
from ..store.writer import Store
from ..errors import StoreAccessError

log = logging.getLogger("zoo.daemon")


DAEMON_EXTRA = "pip install 'zoo-registry[daemon]'"


def require_extras(*, watch: bool = False, http: bool = False, objectstore: str | None = None) -> None:
    """Before anything is created: the third-party packages that ``--watch`` (watchdog), ``--http``
    (aiohttp) and ``--object-store`` (boto3) need are importable, else a
    :class:`~zoo.errors.MissingDependencyError` naming the extra; and the object store's address is one."""
    from .._deps import require

    if objectstore:
        from ..store.s3 import INSTALL, parse_url

        parse_url(objectstore)
        require("boto3", INSTALL, needed_by="zoo daemon --object-store")

    if watch:
        require("watchdog", DAEMON_EXTRA, needed_by="zoo daemon --watch")
        require("watchdog.observers", DAEMON_EXTRA, needed_by="zoo daemon --watch")
    if http:
        require("aiohttp", DAEMON_EXTRA, needed_by="zoo daemon --http")


def socket_in_use(path: Path) -> bool:
    """Whether a process listens on the unix socket ``path`` (False: none there, or one left by a daemon
    that is gone, which connecting to refuses)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(5)
        try:
            probe.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        except OSError:
            return True  # another error (permissions, a full backlog): someone may be there; leave it
    return True


def prepare_home(home: Path, group_gid: int | None, *, private: bool) -> None:
    """A daemon that serves a group (or gated content, --tokens) keeps everyone else out of the store:
    its files are readable by whoever may enter $ZOO_HOME, so a new store is made 2750 for the group
    (0700 without one), and one that others may enter is refused."""
    if group_gid is None and not private:
        return
    if not home.exists():
        home.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            home.mkdir(mode=0o700)
        if group_gid is not None:
            os.chown(home, -1, group_gid)
            os.chmod(home, 0o2750)
        else:
            os.chmod(home, 0o700)
        log.info("made the store %s (mode %s)", home, stat.filemode(home.stat().st_mode))
        return
    st = home.stat()
    if not st.st_mode & 0o007:
        return
    if group_gid is None:  # --tokens alone: the store may be meant for every local user
        log.warning("the store %s is open to every local user (%s): they read private and gated content "
                    "from objects/ without a token. Close it with: chmod o-rwx %s", home,
                    stat.filemode(st.st_mode), home)
        return
    raise StoreAccessError(
        f"the store {home} is open to every local user ({stat.filemode(st.st_mode)}): they could read its "
        f"content from objects/ directly, but --group {_group_name(group_gid)} serves only that group. "
        f"Close it (chmod o-rwx {home}; chgrp {_group_name(group_gid)} {home}) and start the daemon again")


def remove_leftovers(store: Store) -> None:
    """What processes that are gone left in tmp/ (a daemon killed during an import or a drop folder's
    ingest): staging folders and copies. Partial downloads stay: the next pull resumes them."""
    removed, freed = atomic.remove_dead_temporaries(store.tmp, keep=(".part",), startup=True)
    if removed:
        log.info("removed %d temporaries of processes that are gone from %s (%s)", removed, store.tmp,
                 human(freed))


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
