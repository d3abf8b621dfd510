"""The history of each name: an append-only log of its events (``history/models--org--name.jsonl``).

One JSON object per line, as :meth:`zoo.store.events.Event.as_json` writes it: versions created, aliases
moved, labels changed, versions removed or evicted, each with who and when. A line is appended with one
``write`` on a file opened ``O_APPEND`` and synced before the change's hooks run, so lines of two writers never
interleave and a crash leaves at most a torn last line. Reading is forgiving: a torn last line (a crash
mid-write) is ignored; a damaged line elsewhere is skipped and counted, and ``zoo verify`` reports it. The log
is readable by every user who may read the store, and writable by whoever may write it (as lock files are).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .. import atomic
from .disk import disk_errors
from .events import Event

if TYPE_CHECKING:
    from .layout import Layout
    from .disk import Disk

MAX_LINE = 256 * 1024  # a longer line is refused at write time (and skipped as damaged when read)


@dataclass
class History:
    """The readable events of a log, oldest first, and what could not be read."""

    events: list[Event] = field(default_factory=list)
    damaged: list[int] = field(default_factory=list)  # line numbers (1-based) that are not events
    torn: bool = False  # the last line is incomplete (a crash mid-append): ignored
    unreadable: str | None = None  # the log is there but cannot be read (not a regular file): why


_OPEN = atomic.NO_FOLLOW  # never through a symlink, never a FIFO a group member put in the log's place


def append(layout: "Layout", disk: "Disk", event: Event) -> None:
    """Add ``event`` to its name's log, durably (fsync), in one write. The log is writable by whoever may write
    the store (as lock files are), whatever their umask."""
    line = (json.dumps(event.as_json(), separators=(",", ":"), ensure_ascii=True) + "\n").encode()
    if len(line) > MAX_LINE:
        raise ValueError(f"history line of {len(line)} bytes is over {MAX_LINE}")
    path = layout.history_path(event.repo)
    mode = disk.modes()[1] & 0o666
    with disk_errors(str(layout.home)):
        disk.mkdir(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | _OPEN, mode)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(f"{path} is not a regular file; zoo verify reports it (move it away)")
            if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != mode:
                os.fchmod(fd, mode)  # the umask narrowed it: every writer of the store must append
            if st.st_size and os.pread(fd, 1, st.st_size - 1) != b"\n":
                os.write(fd, b"\n")  # the last line was torn by a crash: the new line stands on its own
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)


open_regular = atomic.read_regular  # a regular file's bytes: the log, the aliases file


def read(layout: "Layout", repo: str) -> History:
    """The events of ``repo``'s log, oldest first; a missing log is an empty history."""
    try:
        data = open_regular(layout.history_path(repo))
    except FileNotFoundError:
        return History()
    except OSError as exc:
        history = History()
        history.unreadable = f"{exc.strerror or exc}"
        return history
    return parse(data)


def parse(data: bytes) -> History:
    history = History()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:  # no newline after the last line: torn by a crash mid-append (or cut): ignore it
        lines.pop()
        history.torn = True
    for number, raw in enumerate(lines, 1):
        event = None
        if raw.strip() and len(raw) <= MAX_LINE:
            try:
                event = Event.from_json(json.loads(raw))
            except (ValueError, UnicodeDecodeError, RecursionError):
                event = None
        if event is None:
            history.damaged.append(number)
        else:
            history.events.append(event)
    return history


def logs(layout: "Layout") -> list[Path]:
    """Every history log in the store."""
    root = layout.history_root
    return sorted(root.glob("models--*.jsonl")) if root.is_dir() else []
