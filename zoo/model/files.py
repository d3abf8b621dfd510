"""Small checks of checkpoint files shared by the readers of each format: open only regular files
(a FIFO or device never blocks a load), and say what an entry is when it is not a file."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from ..errors import CorruptCheckpointError


def short(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def entry_problem(path: Path) -> str | None:
    """What keeps ``path`` from being read as a regular file, in words; None when it is one (or absent).
    Uses ``stat`` only: never opens the entry, so a FIFO cannot block."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            return f"{path.name} is a symlink to {os.readlink(path)}, which does not exist (dangling symlink)"
        return None
    except OSError as exc:
        return f"{path.name} cannot be read ({exc.strerror or exc})"
    if stat.S_ISREG(st.st_mode):
        return None
    kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode)
            else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode)
            or stat.S_ISBLK(st.st_mode) else "not a regular file")
    return f"{path.name} is {kind}, not a file"


def open_regular(path: Path) -> BinaryIO:
    """Open ``path`` for reading only if it is a regular file; a FIFO or device is refused without blocking."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CorruptCheckpointError(
                f"{path}: {entry_problem(path) or 'not a regular file'}. Replace it with the weights file "
                "(download or save the checkpoint again)"
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
