"""One way to write files that no reader ever sees half-written, and to name temporaries.

Every temporary is named ``<host>.<pid>.<random>.<stem><suffix>`` (in the store's ``tmp/``, or as a
dot-file beside its target in a user's folder), so that whoever finds one can tell whose it is
(:func:`owner_alive`): gc removes those of dead processes, a pull resumes a dead process's download.
Files are moved into place with ``os.replace`` (atomic), or with an exclusive ``os.link`` where a
second writer must not overwrite the first.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

HOST = socket.gethostname().replace(".", "_") or "localhost"
STALE_FOREIGN = 24 * 3600  # a temporary of another host is taken as abandoned after this long


def temp_name(directory: Path, stem: str, suffix: str = ".tmp") -> Path:
    """``directory/<host>.<pid>.<random>.<stem><suffix>``: unique, and says who owns it."""
    return directory / f"{HOST}.{os.getpid()}.{uuid.uuid4().hex[:12]}.{stem}{suffix}"


def temp_beside(path: Path) -> Path:
    """A hidden temporary beside ``path`` (``.<host>.<pid>.<random>.<name>.tmp``), for files written
    in a user's folder, where the final rename must stay on one file system."""
    return path.with_name("." + temp_name(Path(), path.name).name)


def write_text(path: Path, text: str, *, tmp_dir: Path | None = None, mode: int | None = None) -> None:
    """Write ``path`` whole or not at all: a temporary (in ``tmp_dir``, or beside it), then a rename."""
    tmp = temp_name(tmp_dir, path.name) if tmp_dir is not None else temp_beside(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def symlink(target_text: str, path: Path) -> None:
    """Make ``path`` a symlink to ``target_text``, replacing what is there in one rename."""
    tmp = temp_beside(path)
    os.symlink(target_text, tmp)
    os.replace(tmp, path)


def link_exclusive(src: Path, dest: Path) -> bool:
    """Hard-link ``src`` as ``dest`` unless ``dest`` exists (then the first writer's copy stays).
    Returns False when ``dest`` was already there."""
    try:
        os.link(src, dest)
        return True
    except FileExistsError:
        return False


def link_or_copy(src: Path, dest: Path) -> bool:
    """Hard-link ``src`` to the new name ``dest``; copy where the kernel refuses the link (another
    file system, or ``fs.protected_hardlinks`` and another user's file). Returns True if linked."""
    try:
        os.link(src, dest)
        return True
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK, errno.ENOTSUP):
            raise
    shutil.copy2(src, dest)  # with its mtime: a stat check of the copy matches the original's
    return False


FICLONE = 0x40049409  # linux/fs.h: share the source's blocks, copy-on-write (btrfs, XFS, bcachefs...)


def clone(src: Path, dest: Path) -> bool:
    """Make ``dest`` a copy-on-write clone of ``src`` (no data written, no space used; later writes to
    either file never reach the other). False where the file system cannot (ext4, another device)."""
    import fcntl

    try:
        with open(src, "rb") as fin, open(dest, "xb") as fout:
            fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
        return True
    except OSError:
        dest.unlink(missing_ok=True)
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_alive(path: Path) -> bool:
    """Whether the process that named the temporary ``path`` may still be using it. Another host's
    processes cannot be asked: its files count as live for a day."""
    parts = path.name.lstrip(".").split(".")
    try:
        host, pid = parts[0], int(parts[1])
    except (IndexError, ValueError):
        return False
    if host != HOST:
        try:
            return time.time() - path.lstat().st_mtime < STALE_FOREIGN
        except OSError:
            return False
    return pid == os.getpid() or _pid_alive(pid)
