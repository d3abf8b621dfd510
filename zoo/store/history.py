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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .disk import disk_errors
from .events import Event

if TYPE_CHECKING:
    from .layout import Layout
    from .disk import Disk

MAX_LINE = 64 * 1024  # a longer line is refused at write time (and skipped as damaged when read)


@dataclass
class History:
    """The readable events of a log, oldest first, and what could not be read."""

    events: list[Event] = field(default_factory=list)
    damaged: list[int] = field(default_factory=list)  # line numbers (1-based) that are not events
    torn: bool = False  # the last line is incomplete (a crash mid-append): ignored


def append(layout: "Layout", disk: "Disk", event: Event) -> None:
    """Add ``event`` to its name's log, durably (fsync), in one write."""
    line = (json.dumps(event.as_json(), separators=(",", ":"), ensure_ascii=False) + "\n").encode()
    if len(line) > MAX_LINE:
        raise ValueError(f"history line of {len(line)} bytes is over {MAX_LINE}")
    path = layout.history_path(event.repo)
    with disk_errors(str(layout.home)):
        disk.mkdir(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, disk.modes()[1] & 0o666)
        try:
            if os.fstat(fd).st_size:
                _end_torn_line(fd, path)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)


def _end_torn_line(fd: int, path: Path) -> None:
    """A log whose last line was torn by a crash gets a newline first, so the new line stands on its own."""
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) != b"\n":
            os.write(fd, b"\n")


def read(layout: "Layout", repo: str) -> History:
    """The events of ``repo``'s log, oldest first; a missing log is an empty history."""
    try:
        data = layout.history_path(repo).read_bytes()
    except FileNotFoundError:
        return History()
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
