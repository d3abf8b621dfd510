"""One way to write files that no reader ever sees half-written, and to name temporaries.

Every temporary is named ``<host>.<pid>.<random>.<stem><suffix>`` (in the store's ``tmp/``, or as a
dot-file beside its target in a user's folder), so that whoever finds one can tell whose it is
(:func:`owner_alive`): gc removes those of dead processes, a pull resumes a dead process's download.
Files are moved into place with ``os.replace`` (atomic), or with an exclusive ``os.link`` where a
second writer must not overwrite the first.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import stat
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


def write_text(path: Path, text: str, *, tmp_dir: Path | None = None, mode: int | None = None,
               durable: bool = False) -> None:
    """Write ``path`` whole or not at all: a temporary (in ``tmp_dir``, or beside it), then a rename.
    ``durable``: the bytes and the rename are synced to the disk before this returns (a power cut keeps it)."""
    tmp = temp_name(tmp_dir, path.name) if tmp_dir is not None else temp_beside(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        sync_dir(path.parent)


def sync_dir(folder: Path) -> None:
    """Sync a folder's entries (a rename or link into it) to the disk; best-effort where a file system cannot."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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


def _started_after(pid: int, when: float) -> bool:
    """Whether process ``pid`` started after ``when`` (wall clock): then it cannot have made a file last
    changed at ``when``, and holds the pid of the file's owner that is gone (pid reuse). False if unknown."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return False
    return boot + ticks / os.sysconf("SC_CLK_TCK") > when + 2  # btime is whole seconds


def owner_alive(path: Path, *, startup: bool = False) -> bool:
    """Whether the process that named the temporary ``path`` may still be using it. Another host's
    processes cannot be asked: its files count as live for a day. ``startup=True``: this process has
    made no temporary yet, so one named with its pid is a dead predecessor's (pid reuse in a container)."""
    parts = path.name.lstrip(".").split(".")
    try:
        host, pid = parts[0], int(parts[1])
    except (IndexError, ValueError):
        return False
    try:
        changed = path.lstat().st_ctime
    except OSError:
        return False
    if host != HOST:
        return time.time() - changed < STALE_FOREIGN
    if pid == os.getpid():
        return not startup
    return _pid_alive(pid) and not _started_after(pid, changed)


def tree_bytes(path: Path) -> int:
    """The bytes that removing ``path`` (a file, or a folder with everything in it) frees: each regular
    file counted once per inode, and only where no link outside ``path`` keeps it (a file also stored
    in objects/ frees nothing)."""
    try:
        st = path.lstat()
    except OSError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size if stat.S_ISREG(st.st_mode) and st.st_nlink <= 1 else 0
    inodes: dict[tuple[int, int], list[int]] = {}  # inode -> [size, its links, its links inside path]
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                fst = os.lstat(os.path.join(root, name))
                if stat.S_ISREG(fst.st_mode):
                    inodes.setdefault((fst.st_dev, fst.st_ino), [fst.st_size, fst.st_nlink, 0])[2] += 1
    return sum(size for size, nlink, inside in inodes.values() if inside >= nlink)


def dead_temporaries(tmp_dir: Path, *, keep: tuple[str, ...] = (), startup: bool = False) -> list[tuple[Path, int]]:
    """(temporary, bytes its removal frees) for every entry of ``tmp_dir`` whose owner is gone, except
    names ending in ``keep`` (``.part``: partial downloads that the next pull resumes)."""
    out = []
    try:
        entries = sorted(tmp_dir.iterdir())
    except OSError:
        return out
    for entry in entries:
        if entry.name.endswith(keep) if keep else False:
            continue
        if not owner_alive(entry, startup=startup):
            out.append((entry, tree_bytes(entry)))
    return out


def remove_tree(path: Path) -> None:
    """Remove a temporary file or folder (never following a symlink out of it)."""
    try:
        if stat.S_ISDIR(path.lstat().st_mode):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


def remove_dead_temporaries(tmp_dir: Path, *, keep: tuple[str, ...] = (), startup: bool = False) -> tuple[int, int]:
    """Remove what processes that are gone left in ``tmp_dir`` (see :func:`dead_temporaries`): a starting
    daemon and ``zoo gc`` call it. Returns (entries removed, bytes freed)."""
    found = dead_temporaries(tmp_dir, keep=keep, startup=startup)
    for path, _ in found:
        with contextlib.suppress(OSError):
            remove_tree(path)
    return len(found), sum(size for _, size in found)


# Never through a symlink, never a FIFO or device someone put in a file's place: a regular file or nothing.
NO_FOLLOW = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def read_regular(path: Path, *, limit: int | None = None, tail: int | None = None) -> bytes:
    """The bytes of ``path`` if it is a regular file (not followed through a symlink, never blocking on a FIFO):
    all of them, the first ``limit`` or the last ``tail``. ``FileNotFoundError`` if absent, an ``OSError`` naming
    it if it is something else."""
    try:
        fd = os.open(path, os.O_RDONLY | NO_FOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "a symbolic link, not a regular file", str(path)) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if tail is not None:
            os.lseek(fd, max(st.st_size - tail, 0), os.SEEK_SET)
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(limit if limit is not None else tail if tail is not None else -1)
    finally:
        os.close(fd)
