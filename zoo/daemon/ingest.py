"""What the daemon reads for others: files opened once, checked and copied from the same descriptor.

A daemon that runs as root must never read a file for someone who could not read it. So it reads no
path twice: an import's files arrive as descriptors the client opened itself (:mod:`~zoo.daemon.wire`);
a drop folder's files are opened once, relative to the folder's own descriptor, with ``O_NOFOLLOW`` on
every step (:func:`open_drop_folder`); each descriptor is checked with ``fstat`` (a regular file, of the
size announced) and copied from that same descriptor into a private staging folder, which the store
then imports as its own files. A symlink swapped in after the checks, a FIFO or a device, a file that
grows without end (``/dev/zero``), or a client that goes away, stop the copy; nothing partial stays.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import stat
from pathlib import Path
from typing import Any, Callable

from ..store.disk import check_free_space
from ..store.writer import Store
from ..errors import CorruptCheckpointError, InvalidArgumentError, ZooError
from ..names import local_repo

CHUNK = 64 << 20  # bytes copied between two looks at the client
MAX_FILES = 100_000
MAX_LINKS = 8  # symlinks followed inside a drop folder, one after another


class ClientGone(ZooError):
    """The client that asked for the work closed its connection: the work stopped."""


Source = tuple[str, int, int]  # (path in the version, open file descriptor, its size)


def regular_size(fd: int, rel: str, announced: Any = None) -> int:
    """The size of the open file ``fd``, which must be a regular file of the ``announced`` size (when given)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "a directory" if stat.S_ISDIR(st.st_mode) else "a device")
        raise CorruptCheckpointError(f"{rel} is {kind}, not a regular file: an import takes files only; "
                                     "nothing was stored")
    if announced is not None:
        if not isinstance(announced, int) or isinstance(announced, bool) or announced < 0:
            raise InvalidArgumentError(f"the size announced for {rel} must be a whole number of bytes")
        if st.st_size != announced:
            raise CorruptCheckpointError(
                f"{rel} is {st.st_size} bytes, not the {announced} announced: it changed while it was imported. "
                "Import it again once it is written; nothing was stored")
    return st.st_size


def peer_gone(sock: socket.socket) -> Callable[[], bool]:
    """A test of whether the other end of ``sock`` closed it (it sends nothing while it waits for a reply)."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN | select.POLLRDHUP)

    def gone() -> bool:
        return any(ev & (select.POLLRDHUP | select.POLLHUP | select.POLLERR) for _, ev in poller.poll(0))

    return gone


def copy_from(fd: int, target: Path, size: int, rel: str, gone: Callable[[], bool] = lambda: False) -> None:
    """Exactly ``size`` bytes of the open file ``fd`` into the new file ``target``, in the kernel where it
    can (``copy_file_range``); stops when ``gone()`` says the client left. The descriptor's offset is not
    moved (it may be shared with the client)."""
    with open(target, "xb") as out:
        done = 0
        kernel = True
        while done < size:
            if gone():
                raise ClientGone(f"the client went away during the copy of {rel}: the import stopped")
            want = min(CHUNK, size - done)
            n = -1
            if kernel:
                try:
                    n = os.copy_file_range(fd, out.fileno(), want, offset_src=done)
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF):
                        raise
                    kernel = False
            if not kernel:  # not a file the kernel copies (another file system): read it here
                chunk = os.pread(fd, min(want, 1 << 22), done)
                out.write(chunk)
                n = len(chunk)
            if n == 0:
                raise CorruptCheckpointError(
                    f"{rel} ended after {done} of its {size} bytes: it was cut while it was imported. Import it "
                    "again once it is written; nothing was stored")
            done += n


def room_for(store: Store, incoming: int, what: str, repo: str) -> None:
    """Before copying ``incoming`` bytes: the quota makes room (the daemon's policy), and the disk has the
    space, else a zoo error now, before a byte is written."""
    if store.policy is not None:
        store.policy.make_room(incoming, what, repo)
    check_free_space(store.home, incoming, what=what)


def import_open(store: Store, name: str, sources: list[Source], *, source: str, stem: str,
                gone: Callable[[], bool] = lambda: False, check: Callable[[Path], str | None] | None = None,
                about: dict[str, Any] | None = None) -> Any:
    """A new version of ``name`` from open files: sizes checked against the quota and the free space
    first, each copied into a staging folder of the store's ``tmp/`` (named for this process: what a
    killed daemon leaves is removed by the next one), ``check(staging)`` (what is wrong with the copy, or
    None), then imported as the store's own files."""
    total = sum(size for _, _, size in sources)
    room_for(store, total, f"the import of {name}", local_repo(name))
    with store.staging(stem) as staging:
        for rel, fd, size in sources:
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            copy_from(fd, target, size, rel, gone)
        if check is not None and (problem := check(staging)):
            raise CorruptCheckpointError(f"{source}: {problem}; nothing was stored")
        return store.import_dir(staging, name, owned=True, source=source, **(about or {}))


# -- drop folders ---------------------------------------------------------------------------------

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO swapped in never blocks


def open_drop_folder(folder: Path) -> list[Source]:
    """Every file of the drop folder ``folder`` (hidden ones skipped), opened once: relative to the
    descriptor of its folder, never following a symlink on the way (a symlink inside the folder to a
    file inside it is opened by the same rules, at most :data:`MAX_LINKS` in a row). The caller closes
    the descriptors. Raises :class:`CorruptCheckpointError` for anything else: a symlink that leaves the
    folder, a FIFO, a socket or a device, an entry swapped while it was opened."""
    out: list[Source] = []
    root = _open(None, str(folder), _DIR, str(folder))
    try:
        try:
            _walk(root, root, (), out, str(folder))
        except OSError as exc:  # an entry removed or replaced while the folder was read
            raise CorruptCheckpointError(f"{folder} changed while it was read ({exc.strerror}); nothing was "
                                         "stored") from None
    except BaseException:
        for _, fd, _ in out:
            os.close(fd)
        raise
    finally:
        os.close(root)
    return out


def _open(dir_fd: int | None, name: str, flags: int, shown: str) -> int:
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise CorruptCheckpointError(f"{shown} was replaced by a symlink while it was read; zoo never follows "
                                         "it. Copy the file in instead; nothing was stored") from None
        raise CorruptCheckpointError(f"{shown} cannot be read ({exc.strerror}); nothing was stored") from None


def _walk(root: int, dir_fd: int, parts: tuple[str, ...], out: list[Source], top: str) -> None:
    for name in sorted(os.listdir(dir_fd)):
        if name.startswith("."):
            continue  # the marker, editors' and tools' files: never part of a version
        if len(out) >= MAX_FILES:
            raise CorruptCheckpointError(f"{top} holds more than {MAX_FILES} files; a drop folder holds one checkpoint")
        rel = "/".join((*parts, name))
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            sub = _open(dir_fd, name, _DIR, rel)
            try:
                _walk(root, sub, (*parts, name), out, top)
            finally:
                os.close(sub)
        elif stat.S_ISLNK(st.st_mode):
            fd = _follow(root, parts, os.readlink(name, dir_fd=dir_fd), rel, top)
            if fd is not None:
                out.append((rel, fd, _checked(fd, rel)))
        elif stat.S_ISREG(st.st_mode):
            fd = _open(dir_fd, name, _FILE, rel)
            out.append((rel, fd, _checked(fd, rel)))
        else:
            raise CorruptCheckpointError(f"{rel} is not a regular file (a FIFO, socket or device); refused")


def _checked(fd: int, rel: str) -> int:
    try:
        return regular_size(fd, rel)
    except BaseException:
        os.close(fd)
        raise


def _follow(root: int, parts: tuple[str, ...], target: str, rel: str, top: str, hops: int = 0) -> int | None:
    """The file a symlink inside the folder names, opened step by step from the folder's descriptor
    (None for a symlink to a folder: not part of a version, as for imports)."""
    outside = CorruptCheckpointError(f"{rel} is a symlink to {target}, outside the drop folder {top}; zoo never "
                                     "follows it. Copy the file in instead; nothing was stored")
    if hops >= MAX_LINKS:
        raise outside
    if os.path.isabs(target):  # an absolute path into the folder itself (as the watcher accepts it)
        norm, real = os.path.normpath(target), os.path.realpath(top)
        if not norm.startswith(real.rstrip("/") + "/"):
            raise outside
        target, parts = norm[len(real.rstrip("/")) + 1:], ()
    steps: list[str] = list(parts)
    for piece in target.split("/"):
        if piece in ("", "."):
            continue
        if piece == "..":
            if not steps:
                raise outside
            steps.pop()
        else:
            steps.append(piece)
    if not steps:
        return None
    fd = os.dup(root)
    try:
        for i, piece in enumerate(steps):
            st = os.stat(piece, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                return _follow(root, tuple(steps[:i]), os.path.join(os.readlink(piece, dir_fd=fd),
                                                                   *steps[i + 1:]), rel, top, hops + 1)
            last = i == len(steps) - 1
            if stat.S_ISDIR(st.st_mode):
                nxt = _open(fd, piece, _DIR, rel)
                os.close(fd)
                fd = nxt
                if last:
                    return None
            elif last and stat.S_ISREG(st.st_mode):
                return _open(fd, piece, _FILE, rel)
            else:
                raise CorruptCheckpointError(f"{rel} is a symlink to {target}, which is not a regular file; refused")
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return None


def import_drop(store: Store, name: str, folder: Path) -> Any:
    """A drop folder (anyone in the group may write it) as a version: every file opened once, without
    following a symlink out of the folder, and the copy checked as the folder was."""
    from .watch import check_complete

    sources = open_drop_folder(folder)
    try:
        return import_open(store, name, sources, stem="drop", source=f"drop:{folder}", check=check_complete)
    finally:
        for _, fd, _ in sources:
            with contextlib.suppress(OSError):
                os.close(fd)
