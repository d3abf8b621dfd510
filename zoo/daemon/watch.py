"""Drop folders: each subfolder ``ROOT/<name>/`` that holds a complete saved model is handed to
``on_ready(name, folder)`` once, so that the daemon imports it as a new version of ``<name>``.

The one module of zoo that imports watchdog; it never imports torch.

Threads (``stop()`` joins every one of them)::

    watchdog observer (inotify, or polling on network file systems)
        └── _Handler: records "folder X changed at t" in a dict; no I/O, no checks
    zoo-drop-folders worker
        sleeps until the earliest deadline (or until a new folder turns dirty), then checks the due
        folders: quiet for ``quiet`` seconds?  complete?  unchanged while it looked?  -> on_ready

A folder is ready when all of these hold, checked in this order:

- nothing in it changed for the quiet period: no event, and no entry's ctime or mtime newer than
  ``quiet`` seconds (this also covers events missed before start or dropped by the kernel). A
  ``.zoo-ready`` marker written after every other file ends the wait early;
- no symlink in it points outside it (refused and reported, never followed), none dangles or loops,
  and nothing is a FIFO, socket or device, or a partial download (``*.incomplete``, ``*.part``, ...);
- it passes the check every load and import makes (:func:`zoo.model.checkpoint.check_folder`): config.json
  a model config, every weights file and index whole (headers and zip directories, never tensor data);
- the names, sizes and mtimes of its entries are the same after the checks as before them.

States reported by :meth:`DropFolders.status`: ``waiting`` (changed recently, or checks pending),
``ready`` (being handed to on_ready), ``ingested``, ``refused`` (a symlink that leaves the folder, or
on_ready raised; until the folder changes), ``invalid`` (an invalid name, or incomplete after the quiet
period; a later change checks it again). One bad folder never blocks another.

Events: inotify on local file systems; polling on NFS, CIFS/SMB, Lustre, GPFS, 9p, FUSE (sshfs, ...)
and the like, where inotify does not see writes made by other machines. The file system of each root
comes from ``/proc/self/mountinfo`` (the longest mount point that contains it); ``poll=SECONDS`` forces
polling everywhere. At start every root is scanned once, so folders that arrived while the daemon was
down are not missed.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import InvalidArgumentError, ZooError
from ..model.checkpoint import check_folder
from ..model.files import first_line as _first_line
from ..names import validate_name

log = logging.getLogger("zoo.daemon")

MARKER = ".zoo-ready"
STATES = ("waiting", "ready", "ingested", "refused", "invalid")
# Where inotify misses changes made by other machines (watchdog #504, #395): poll instead.
POLLED_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "9p", "ceph", "glusterfs", "beegfs", "afs",
    "ocfs2", "gfs2", "virtiofs", "orangefs", "pvfs2", "panfs", "davfs", "fuse", "vboxsf", "vmhgfs",
})
LOCAL_FUSE = frozenset({"fuseblk"})  # ntfs-3g and exfat on a local disk: inotify sees their writes
DEFAULT_POLL = 5.0  # seconds between snapshots of a polled root without poll= (1,000 folders: under 1% of a core)
PARTIAL_SUFFIXES = (".incomplete", ".part", ".partial", ".tmp", ".crdownload")
MAX_ENTRIES = 100_000  # a drop folder holds a checkpoint, not a file tree
_IGNORED_EVENTS = frozenset({"opened", "closed_no_write"})  # reads (ours, the importer's) change nothing


@dataclass
class _Folder:
    name: str
    path: Path
    state: str = "waiting"
    reason: str = ""
    changed: float = 0.0  # wall-clock time of the last change seen, for status()
    signature: tuple | None = None  # the state the last on_ready or refusal was for
    seen: tuple | None = None  # the state seen by the last check that had to wait
    reported: tuple | None = None  # the (state, reason) last passed to on_problem, so it is said once


# -- file systems ---------------------------------------------------------------------------------

def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_table() -> list[tuple[str, str]]:
    """(mount point, file system type) of every mount, from /proc/self/mountinfo (or /proc/mounts)."""
    mounts: list[tuple[str, str]] = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                left, sep, right = line.partition(" - ")
                fields, tail = left.split(), right.split()
                if sep and len(fields) >= 5 and tail:
                    mounts.append((_unescape(fields[4]), tail[0]))
        return mounts
    except OSError:
        pass
    try:
        with open("/proc/mounts", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 3:
                    mounts.append((_unescape(fields[1]), fields[2]))
    except OSError:
        pass
    return mounts


def filesystem_type(path: Path, mounts: list[tuple[str, str]] | None = None) -> str:
    """The type of the file system holding ``path`` (``ext4``, ``nfs4``, ...), or ``"unknown"``."""
    real = os.path.realpath(path)
    best, kind = -1, "unknown"
    for point, fstype in mount_table() if mounts is None else mounts:
        inside = real == point or point == "/" or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= best:  # the last of equal mount points is the one on top
            best, kind = len(point), fstype
    return kind


def needs_polling(fstype: str) -> bool:
    """True where inotify does not see every write: network, cluster and FUSE file systems."""
    base = fstype.split(".", 1)[0]
    return fstype not in LOCAL_FUSE and (fstype in POLLED_FS or base in POLLED_FS)


# -- checks ---------------------------------------------------------------------------------------

@dataclass
class _Scan:
    signature: tuple
    newest: float  # latest ctime or mtime of any entry (wall clock)
    marker: bool  # a .zoo-ready newer than every file
    refusal: str | None  # a symlink that leaves the folder
    problem: str | None  # something that keeps the folder from being imported as it is


def _scan(folder: Path) -> _Scan:
    """One walk of ``folder`` with lstat only: symlinks are never followed, files never opened."""
    top = os.path.realpath(folder)
    entries: list[tuple] = []
    newest = 0.0
    newest_file = 0.0
    marker_time: float | None = None
    refusal = problem = None
    st = os.lstat(folder)
    newest = max(st.st_mtime, st.st_ctime)
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(os.path.join(folder, rel_dir)) as it:
            for entry in it:
                rel = os.path.join(rel_dir, entry.name)
                st = entry.stat(follow_symlinks=False)
                changed = max(st.st_mtime, st.st_ctime)
                newest = max(newest, changed)
                mode = st.st_mode
                if len(entries) >= MAX_ENTRIES:
                    problem = problem or f"it holds more than {MAX_ENTRIES} entries; a drop folder holds one checkpoint"
                    break
                if stat.S_ISDIR(mode):
                    entries.append((rel, "d", 0, 0, st.st_ino))
                    stack.append(rel)
                    continue
                if stat.S_ISLNK(mode):
                    target = os.readlink(entry.path)
                    entries.append((rel, "l", target, st.st_mtime_ns, st.st_ino))
                    newest_file = max(newest_file, changed)
                    real = os.path.realpath(entry.path)
                    if real != top and not real.startswith(top.rstrip("/") + "/"):
                        refusal = refusal or (f"{rel} is a symlink to {target}, outside the drop folder; zoo never "
                                              "follows it. Copy the file in instead")
                        continue
                    try:
                        os.stat(entry.path)
                    except OSError as exc:
                        what = "loops" if exc.errno == errno.ELOOP else "dangles (its target does not exist)"
                        problem = problem or f"{rel} is a symlink to {target} that {what}"
                    continue
                entries.append((rel, "f", st.st_size, st.st_mtime_ns, st.st_ino))
                if rel == MARKER:
                    marker_time = changed
                    continue
                newest_file = max(newest_file, changed)
                if not stat.S_ISREG(mode):
                    kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                            else "a device")
                    problem = problem or f"{rel} is {kind}, not a file"
                elif entry.name.endswith(PARTIAL_SUFFIXES):
                    problem = problem or f"{rel} looks like a partial download or a temporary file"
    entries.sort()
    return _Scan(tuple(entries), newest, marker_time is not None and marker_time >= newest_file, refusal, problem)


def check_complete(folder: Path) -> str | None:
    """Why the saved model in ``folder`` is not complete yet, in words; None when it is: the check loads
    and imports make (:func:`zoo.model.checkpoint.check_folder`: config.json, every weights file and
    index whole; headers and zip directories only, never tensor data, never torch)."""
    try:
        check_folder(folder)
    except ZooError as exc:
        return str(exc)
    except OSError as exc:  # the folder changed while it was read
        return f"{folder.name} changed while it was checked ({exc.strerror or exc})"
    return None


# -- the watcher ----------------------------------------------------------------------------------

class DropFolders:
    """Watch ``roots``; call ``on_ready(name, folder)`` once for each complete state of each subfolder.

    ``on_ready`` runs in the worker thread (one folder at a time); whatever it raises is reported through
    ``on_problem(name, folder, reason)`` and refuses the folder until it changes. ``on_problem`` also hears
    of invalid names, symlinks that leave a folder and folders incomplete after the quiet period.
    """

    def __init__(self, roots: list[Path], on_ready: Callable[[str, Path], None], *, quiet: float = 10.0,
                 poll: float | None = None, on_problem: Callable[[str, Path, str], None] | None = None) -> None:
        if not quiet >= 0:
            raise InvalidArgumentError(f"the quiet period must be 0 seconds or more, not {quiet!r}")
        if poll is not None and not poll > 0:
            raise InvalidArgumentError(f"the polling interval must be more than 0 seconds, not {poll!r} "
                                       "(e.g. --poll 5)")
        self.roots = [Path(os.path.realpath(Path(r).expanduser())) for r in roots]  # inotify never follows links
        self.on_ready = on_ready
        self.on_problem = on_problem
        self.quiet = float(quiet)
        self.poll = poll
        self._cond = threading.Condition()
        self._dirty: dict[Path, tuple[float, bool]] = {}  # folder -> (monotonic time of last event, marker seen)
        self._folders: dict[Path, _Folder] = {}
        self._modes: dict[Path, tuple[str, str]] = {}  # root -> (file system type, "inotify" / "polling every Ns")
        self._observers: list[Any] = []
        self._worker: threading.Thread | None = None
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start watching; every root is scanned once, so what arrived before start is not missed."""
        if self._worker is not None:
            raise RuntimeError("DropFolders.start() was called twice")
        for root in self.roots:
            if not root.is_dir():
                raise InvalidArgumentError(f"cannot watch {root}: it is not a directory (create it, or fix --watch)")
        try:
            self._start_observers()
        except BaseException:
            self._stop_observers()
            raise
        now = time.monotonic()
        with self._cond:
            for root in self.roots:
                for folder in self._subfolders(root):
                    self._dirty[folder] = (now - self.quiet, False)  # due at once; the ctime test waits if needed
        self._worker = threading.Thread(target=self._run, name="zoo-drop-folders", daemon=True)
        self._worker.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop watching and join every thread started here (an on_ready in progress finishes first)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._stop_observers(timeout)
        if self._worker is not None:
            self._worker.join(timeout)
            if not self._worker.is_alive():
                self._worker = None

    def __enter__(self) -> "DropFolders":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _start_observers(self) -> None:
        from watchdog.events import (
            DirAttribEvent, DirCreatedEvent, DirDeletedEvent, DirModifiedEvent, DirMovedEvent, FileAttribEvent,
            FileClosedEvent, FileCreatedEvent, FileDeletedEvent, FileModifiedEvent, FileMovedEvent,
        )
        from watchdog.observers.polling import PollingObserver

        # every change (touch and chmod included), but not opens and reads: checks and imports read files
        events = [DirAttribEvent, DirCreatedEvent, DirDeletedEvent, DirModifiedEvent, DirMovedEvent, FileAttribEvent,
                  FileClosedEvent, FileCreatedEvent, FileDeletedEvent, FileModifiedEvent, FileMovedEvent]
        mounts = mount_table()
        inotify = polling = None
        for root in self.roots:
            fstype = filesystem_type(root, mounts)
            interval = self.poll if self.poll is not None else DEFAULT_POLL if needs_polling(fstype) else None
            handler = _Handler(self, root)
            if interval is None:
                try:
                    if inotify is None:
                        inotify = self._inotify_observer()
                    inotify.schedule(handler, str(root), recursive=True, event_filter=events)
                    self._modes[root] = (fstype, "inotify")
                    log.info("watching %s (%s) with inotify", root, fstype)
                    continue
                except OSError as exc:  # out of inotify watches or instances: polling still works
                    interval = DEFAULT_POLL
                    log.warning("cannot watch %s with inotify (%s); polling every %gs instead. Raise "
                                "fs.inotify.max_user_watches to use inotify", root, exc.strerror or exc, interval)
            if polling is None or polling.timeout != interval:
                polling = PollingObserver(timeout=interval)
                polling.daemon = True
                polling.start()
                self._observers.append(polling)
            polling.schedule(handler, str(root), recursive=True)
            self._modes[root] = (fstype, f"polling every {interval:g}s")
            log.info("watching %s (%s) by polling every %gs", root, fstype, interval)

    def _inotify_observer(self) -> Any:
        from watchdog.observers import Observer

        observer = Observer()
        observer.daemon = True
        observer.start()
        self._observers.append(observer)
        return observer

    def _stop_observers(self, timeout: float | None = None) -> None:
        observers, self._observers = self._observers, []
        for observer in observers:
            observer.stop()
        for observer in observers:
            observer.join(timeout)

    # -- what the server shows -------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """One dict per subfolder seen: name, path, state (one of :data:`STATES`), reason, and
        seconds_since_change."""
        now, clock = time.time(), time.monotonic()
        with self._cond:
            out = []
            for path in sorted(set(self._folders) | set(self._dirty)):
                entry = self._folders.get(path)
                state, reason = (entry.state, entry.reason) if entry else ("waiting", "not checked yet")
                changed = entry.changed if entry else now
                if path in self._dirty:  # an event since the last check
                    last = self._dirty[path][0]
                    changed = max(changed, now - (clock - last)) if last <= clock else changed
                    if state != "waiting":
                        state, reason = "waiting", f"changed since it was {state}"
                out.append({"name": path.name, "path": str(path), "state": state, "reason": reason,
                            "seconds_since_change": round(max(0.0, now - changed), 1)})
            return out

    def watched(self) -> list[dict[str, str]]:
        """One dict per root: path, fs (its file system type) and mode (inotify or polling)."""
        return [{"path": str(root), "fs": fs, "mode": mode} for root, (fs, mode) in self._modes.items()]

    # -- events (watchdog's thread: no I/O here) -------------------------------------------------

    def _note(self, root: Path, path: str) -> None:
        prefix = str(root).rstrip(os.sep) + os.sep
        if not path.startswith(prefix):
            return  # the root itself, or a move to somewhere else
        name, _, rest = path[len(prefix):].partition(os.sep)
        if not name or name.startswith("."):
            return  # hidden entries of the root: staging folders, editors' files
        folder = root / name
        marker = rest == MARKER
        now = time.monotonic()
        with self._cond:
            before = self._dirty.get(folder)
            # a marker event asks for a check now; whether the marker counts (it is newer than every
            # file) is for the check to see: events of one poll come in no particular order
            self._dirty[folder] = (now, marker or bool(before and before[1]))
            if before is None or marker:
                self._cond.notify()

    # -- the worker ------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            due = self._wait_for_due()
            if due is None:
                return
            for folder, marker in due:
                if self._stopping:
                    return
                try:
                    self._check(folder, marker)
                except Exception as exc:  # one folder's trouble never stops the others
                    log.exception("drop folder %s: check failed", folder)
                    self._set(folder, "invalid", f"could not be checked: {_first_line(exc)}")

    def _wait_for_due(self) -> list[tuple[Path, bool]] | None:
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                due, wake = [], None
                for folder, (last, marker) in self._dirty.items():
                    at = last if marker else last + self.quiet
                    if at <= now:
                        due.append((folder, marker))
                    elif wake is None or at < wake:
                        wake = at
                if due:
                    for folder, _ in due:
                        del self._dirty[folder]
                    return sorted(due)
                self._cond.wait(None if wake is None else wake - now)
            return None

    def _recheck(self, folder: Path, delay: float) -> None:
        """Look at ``folder`` again in ``delay`` seconds, unless an event comes first."""
        with self._cond:
            if folder not in self._dirty:
                self._dirty[folder] = (time.monotonic() + delay - self.quiet, False)

    def _check(self, folder: Path, marker_event: bool) -> None:
        name = folder.name
        try:
            st = os.lstat(folder)
        except FileNotFoundError:
            with self._cond:
                if self._folders.pop(folder, None) is not None:
                    log.info("drop folder %s is gone", folder)
            return
        if stat.S_ISLNK(st.st_mode):
            self._problem(folder, "refused", f"{folder} is a symlink; zoo never follows it. Move or copy the "
                          "folder into the drop folder instead")
            return
        if not stat.S_ISDIR(st.st_mode):
            return  # a file beside the drop folders: not ours
        try:
            validate_name(name)
        except ZooError as exc:
            self._problem(folder, "invalid", str(exc))
            return
        entry = self._entry(folder)
        scan = _scan(folder)
        entry.changed = scan.newest
        if scan.signature == entry.signature and entry.state in ("ingested", "refused"):
            self._set(folder, entry.state, entry.reason)  # this state was handled already
            return
        if scan.refusal:
            entry.signature = scan.signature
            self._problem(folder, "refused", scan.refusal)
            return
        age = time.time() - scan.newest
        if not scan.marker and age < self.quiet:  # a change newer than the last event (missed, or before start)
            # Times in the future (a file server's clock ahead of ours) say nothing: then the folder must
            # look the same a quiet period later instead.
            if age >= 0 or entry.seen != scan.signature:
                entry.seen = scan.signature
                self._set(folder, "waiting", f"changed {age:.1f}s ago" if age >= 0 else
                          "its files have times in the future (clock skew?): waiting for it to stay unchanged")
                self._recheck(folder, self.quiet - age if age >= 0 else self.quiet)
                return
        problem = scan.problem or check_complete(folder)
        if problem:
            self._problem(folder, "invalid", problem)
            return
        if _scan(folder).signature != scan.signature:  # it changed while we looked
            self._set(folder, "waiting", "changed while it was checked")
            self._recheck(folder, self.quiet)
            return
        with self._cond:
            if folder in self._dirty and not self._dirty[folder][1]:
                self._set(folder, "waiting", "changed while it was checked")  # an event came meanwhile
                return
        self._set(folder, "ready", "")
        log.info("drop folder %s is complete%s: importing it as %r", folder,
                 " (marker)" if scan.marker else f" and quiet for {age:.1f}s", name)
        entry.signature = scan.signature
        try:
            self.on_ready(name, folder)
        except Exception as exc:
            self._problem(folder, "refused", f"import failed: {_first_line(exc)}")
            return
        self._set(folder, "ingested", "")

    def _entry(self, folder: Path) -> _Folder:
        with self._cond:
            entry = self._folders.get(folder)
            if entry is None:
                entry = self._folders[folder] = _Folder(folder.name, folder, changed=time.time())
            return entry

    def _set(self, folder: Path, state: str, reason: str) -> _Folder:
        entry = self._entry(folder)
        with self._cond:
            entry.state, entry.reason = state, reason
            if state not in ("invalid", "refused"):
                entry.reported = None
        return entry

    def _problem(self, folder: Path, state: str, reason: str) -> None:
        entry = self._set(folder, state, reason)
        if entry.reported == (state, reason):
            return  # said already for this state of the folder
        entry.reported = (state, reason)
        (log.warning if state == "refused" else log.info)("drop folder %s %s: %s", folder, state, reason)
        if self.on_problem is not None:
            try:
                self.on_problem(folder.name, folder, reason)
            except Exception:
                log.exception("drop folder %s: on_problem raised", folder)

    @staticmethod
    def _subfolders(root: Path) -> list[Path]:
        try:
            with os.scandir(root) as it:
                return sorted(Path(e.path) for e in it if not e.name.startswith("."))
        except OSError as exc:
            log.warning("cannot list %s: %s", root, exc.strerror or exc)
            return []


class _Handler:
    """watchdog's handler: records which folder changed, nothing more (it runs in watchdog's thread)."""

    def __init__(self, owner: DropFolders, root: Path) -> None:
        self.owner, self.root = owner, root

    def dispatch(self, event: Any) -> None:
        if event.event_type in _IGNORED_EVENTS:
            return
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if path:
                self.owner._note(self.root, os.fsdecode(path))
