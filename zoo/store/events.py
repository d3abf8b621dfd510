"""What happened in a store, as typed events: who did it, when, to which version.

The writer makes an event after each change is durable (a version created, an alias moved, labels changed,
a version removed or evicted), appends it to the name's history (:mod:`zoo.store.history`) and hands it to
its :class:`Dispatcher`, which calls the plugins' hooks (``zoo_version_created``, ``zoo_alias_moved``,
``zoo_labels_changed``, ``zoo_version_removed``: :mod:`zoo.plugins.hookspecs`) on threads of its own, one per
plugin. A hook can neither undo nor delay the change: one that raises is logged by name, one that runs past
:data:`HOOK_TIMEOUT` is logged as hung (its own later events wait behind it), and the other hooks and the next
event still run.

Who: the :class:`Actor` of the calling process (its uid, user name and host), or, through the daemon, the
client the socket says sent the request (:func:`acting_as`), never the daemon's own user.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import dataclasses
import logging
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, ClassVar, Iterator

from ..names import display_name

log = logging.getLogger("zoo.events")

HOOK_TIMEOUT = 10.0  # seconds one hook may run before it is logged as hung and the next one is called
EXIT_WAIT = 5.0  # seconds a process that fired events waits at exit for their hooks


@dataclass(frozen=True)
class Actor:
    """Who did something: a unix uid and its user name, on a host."""

    uid: int
    user: str
    host: str

    @classmethod
    def of_uid(cls, uid: int, user: str | None = None) -> "Actor":
        from .disk import user_name

        return cls(uid, user or user_name(uid), socket.gethostname())

    @classmethod
    def current(cls) -> "Actor":
        """The actor of this call: set by :func:`acting_as` (the daemon, for its client), else this process."""
        actor = _ACTOR.get()
        return actor if actor is not None else cls.of_uid(os.getuid())

    def as_json(self) -> dict[str, Any]:
        return {"uid": self.uid, "user": self.user, "host": self.host}

    @classmethod
    def from_json(cls, data: Any) -> "Actor | None":
        if not isinstance(data, dict) or not isinstance(data.get("uid"), int):
            return None
        return cls(data["uid"], str(data.get("user") or data["uid"]), str(data.get("host") or ""))

    def __str__(self) -> str:
        return f"{self.user}@{self.host}" if self.host else self.user


_ACTOR: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("zoo_actor", default=None)


@contextlib.contextmanager
def acting_as(actor: Actor | None) -> Iterator[None]:
    """Within this block (and threads started with a copy of its context), changes are recorded as ``actor``'s."""
    token = _ACTOR.set(actor)
    try:
        yield
    finally:
        _ACTOR.reset(token)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Event:
    """Something that happened to a version of a name, recorded after it was durable."""

    kind: ClassVar[str] = "event"
    repo: str  # as stored: local/my-bert, org/name
    version: str | None  # v3
    id: str | None  # the version's commit or content id
    who: Actor
    when: str = field(default_factory=now)  # ISO 8601, UTC

    @property
    def name(self) -> str:
        """The name as zoo shows it: ``my-bert`` for ``local/my-bert``."""
        return display_name(self.repo)

    @property
    def hook(self) -> str:
        return f"zoo_{self.kind}"

    def as_json(self) -> dict[str, Any]:
        data = {"event": self.kind, "name": self.name}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            data[f.name] = value.as_json() if isinstance(value, Actor) else value
        return data

    @staticmethod
    def from_json(data: Any) -> "Event | None":
        """An event as :meth:`as_json` wrote it; None for what is not one (another kind, a field missing)."""
        if not isinstance(data, dict):
            return None
        cls = KINDS.get(data.get("event"))  # type: ignore[arg-type]
        who = Actor.from_json(data.get("who"))
        if cls is None or who is None:
            return None
        values = {}
        for f in dataclasses.fields(cls):
            if f.name == "who":
                continue
            if f.name in data:
                value = data[f.name]
                values[f.name] = tuple(value) if isinstance(value, list) else value
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                return None
        try:
            return cls(who=who, **values)
        except TypeError:
            return None


@dataclass(frozen=True)
class VersionCreated(Event):
    kind: ClassVar[str] = "version_created"
    source: str = ""  # import:DIR, zoo.save, hub:ENDPOINT, drop:FOLDER
    base: dict[str, Any] | None = None  # {"name", "version", "id"} of the model it was made from
    description: str | None = None


@dataclass(frozen=True)
class AliasMoved(Event):
    """``alias`` now points at ``version`` (None: removed); it pointed at ``previous`` (None: it is new)."""

    kind: ClassVar[str] = "alias_moved"
    alias: str = ""
    previous: str | None = None
    note: str | None = None  # why, when zoo moved it itself (removed because the upstream has a ref of that name)


@dataclass(frozen=True)
class LabelsChanged(Event):
    kind: ClassVar[str] = "labels_changed"
    labels: dict[str, str] = field(default_factory=dict)  # set to these values
    removed: tuple[str, ...] = ()  # keys removed


@dataclass(frozen=True)
class VersionRemoved(Event):
    kind: ClassVar[str] = "version_removed"
    reason: str = "removed"  # "removed" (zoo rm) or "evicted" (the daemon's quota)


KINDS: dict[str, type[Event]] = {c.kind: c for c in (VersionCreated, AliasMoved, LabelsChanged, VersionRemoved)}

Hooks = Callable[[str], list[tuple[str, Callable[..., Any]]]]  # hook name -> [(plugin, function)]


class Dispatcher:
    """Hands each event to every plugin's hook, in order; never raises into the writer, never waits for a hook.

    Each plugin has a lane of its own (a thread and a bounded queue), so a plugin that is slow or hangs holds
    back only its own later events: never the change, another plugin, or the next event. A call still running
    after ``timeout`` seconds is logged as hung and one that raises is logged, both naming the plugin and the
    hook. ``hooks`` is asked for every event hook's implementations when the first event fires, on the writer's
    thread, and each plugin's lane starts then (a process that changes nothing loads no plugins). At exit a
    process waits up to :data:`EXIT_WAIT` seconds for its lanes, then names the plugins still running."""

    def __init__(self, hooks: Hooks, *, timeout: float = HOOK_TIMEOUT, maxsize: int = 10_000) -> None:
        self._hooks = hooks
        self.timeout = timeout
        self.maxsize = maxsize
        self._queue: queue.Queue[Event] = queue.Queue(maxsize=maxsize)
        self._lanes: dict[str, _Lane] = {}
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.failed = 0  # hook calls that raised or hung
        self.dropped = 0  # events a plugin never got: its queue (or the dispatcher's) was full

    def __call__(self, event: Event) -> None:
        with self._lock:
            if self._thread is None:
                self._start()
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            log.error("event %s of %s@%s not delivered to hooks: %d events are waiting", event.kind, event.name,
                      event.version, self._queue.qsize())

    def _start(self) -> None:
        """At the first event, on the writer's thread: the hooks are listed and every lane is started now, so
        that no thread is ever started later, at exit (Python 3.12 refuses threads once shutdown began)."""
        self._impls: dict[str, list[tuple[str, Callable[..., Any]]]] = {}
        for kind in KINDS.values():
            hook = f"zoo_{kind.kind}"
            try:
                self._impls[hook] = list(self._hooks(hook))
            except Exception as exc:  # noqa: BLE001 - a broken plugin set must not fail the change
                log.error("the hooks of %s could not be listed (%s: %s); its events are not delivered", hook,
                          type(exc).__name__, exc)
                self._impls[hook] = []
            for plugin, _ in self._impls[hook]:
                if plugin not in self._lanes:
                    self._lanes[plugin] = _Lane(self, plugin)
        self._thread = threading.Thread(target=self._run, name="zoo-events", daemon=True)
        self._thread.start()
        atexit.register(self._at_exit)

    def drain(self, timeout: float) -> bool:
        """Wait until every event was handled by every hook (at most ``timeout`` s); True if so."""
        deadline = time.monotonic() + timeout
        while True:
            lanes = list(self._lanes.values())
            if not self._queue.unfinished_tasks and not any(lane.queue.unfinished_tasks for lane in lanes):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def _at_exit(self) -> None:
        if self.drain(EXIT_WAIT):
            return
        for lane in list(self._lanes.values()):
            busy, waiting = lane.busy, lane.queue.unfinished_tasks
            if busy is not None:
                since, hook, event = busy
                log.error("hook %s of plugin %r still runs on %s of %s@%s after %.0f s; exiting without it%s",
                          hook, lane.plugin, event.kind, event.name, event.version, time.monotonic() - since,
                          f" ({waiting - 1} later event(s) not delivered to it)" if waiting > 1 else "")
        if self._queue.unfinished_tasks:
            log.error("%d event(s) not handed to hooks: the process exits", self._queue.unfinished_tasks)

    def _run(self) -> None:
        while True:
            try:
                event = self._queue.get(timeout=min(1.0, self.timeout / 2))
            except queue.Empty:
                self._check_hung()
                continue
            try:
                self._fan_out(event)
            finally:
                self._queue.task_done()
            self._check_hung()

    def _fan_out(self, event: Event) -> None:
        """Put ``event`` in the lane of every plugin that implements its hook (listed when the first event came)."""
        for plugin, function in self._impls.get(event.hook, ()):
            lane = self._lanes[plugin]
            try:
                lane.queue.put_nowait((event.hook, function, event))
            except queue.Full:
                self.dropped += 1
                log.error("hook %s of plugin %r not called on %s of %s@%s: %d of its calls are waiting (it hangs "
                          "or is slow)", event.hook, plugin, event.kind, event.name, event.version, self.maxsize)

    def _check_hung(self) -> None:
        now_ = time.monotonic()
        for lane in list(self._lanes.values()):
            busy = lane.busy
            if busy is not None and busy is not lane.reported and now_ - busy[0] > self.timeout:
                lane.reported = busy
                self.failed += 1
                since, hook, event = busy
                log.error("hook %s of plugin %r hung on %s of %s@%s (still running after %.0f s); the change "
                          "stands, other plugins and the next events go on; this plugin's later events wait",
                          hook, lane.plugin, event.kind, event.name, event.version, now_ - since)


class _Lane:
    """One plugin's calls, one at a time, in the order of the events."""

    def __init__(self, dispatcher: Dispatcher, plugin: str) -> None:
        self.dispatcher, self.plugin = dispatcher, plugin
        self.queue: queue.Queue[tuple[str, Callable[..., Any], Event]] = queue.Queue(maxsize=dispatcher.maxsize)
        self.busy: tuple[float, str, Event] | None = None  # (since, hook, event) of the call running
        self.reported: tuple[float, str, Event] | None = None  # the call last logged as hung
        threading.Thread(target=self._run, name=f"zoo-hook-{plugin}", daemon=True).start()

    def _run(self) -> None:
        while True:
            hook, function, event = self.queue.get()
            self.busy = (time.monotonic(), hook, event)
            try:
                function(event=event)
            except BaseException as exc:  # a plugin's bug is reported, never raised into the store
                self.dispatcher.failed += 1
                log.error("hook %s of plugin %r raised %s: %s (on %s of %s@%s); the change stands, the next hooks "
                          "and events go on", hook, self.plugin, type(exc).__name__, exc, event.kind, event.name,
                          event.version)
                log.debug("hook %s of plugin %r failed", hook, self.plugin, exc_info=exc)
            finally:
                self.busy = None
                self.queue.task_done()


def plugin_hooks(hook: str) -> list[tuple[str, Callable[..., Any]]]:
    """The implementations of ``hook`` among the installed plugins (the process's default registry)."""
    from ..plugins.registry import default_registry

    return default_registry().event_hooks(hook)
