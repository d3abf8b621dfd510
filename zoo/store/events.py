"""What happened in a store, as typed events: who did it, when, to which version.

The writer makes an event after each change is durable (a version created, an alias moved, labels changed,
a version removed or evicted), appends it to the name's history (:mod:`zoo.store.history`) and hands it to
its :class:`Dispatcher`, which calls the plugins' hooks (``zoo_version_created``, ``zoo_alias_moved``,
``zoo_labels_changed``, ``zoo_version_removed``: :mod:`zoo.plugins.hookspecs`) on a thread of its own. A hook
can neither undo nor delay the change: one that raises is logged by name, one that runs past
:data:`HOOK_TIMEOUT` is logged as hung and left behind, and the next hook and the next event still run.

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
    """Calls the hooks for each event, in order, on a thread of its own; never raises into the writer.

    ``hooks`` is asked for the implementations of a hook name when the first event fires (so a process that
    changes nothing never loads plugins). Each call runs on a worker thread and is waited for at most
    ``timeout`` seconds. At exit a process waits up to :data:`EXIT_WAIT` seconds for events still queued."""

    def __init__(self, hooks: Hooks, *, timeout: float = HOOK_TIMEOUT, maxsize: int = 10_000) -> None:
        self._hooks = hooks
        self.timeout = timeout
        self._queue: queue.Queue[Event | None] = queue.Queue(maxsize=maxsize)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.failed = 0  # hook calls that raised or hung
        self.dropped = 0  # events not delivered: the queue was full

    def __call__(self, event: Event) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="zoo-events", daemon=True)
                self._thread.start()
                atexit.register(self.drain, EXIT_WAIT)
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            log.error("event %s of %s@%s not delivered to hooks: %d events are waiting", event.kind, event.name,
                      event.version, self._queue.qsize())

    def drain(self, timeout: float) -> bool:
        """Wait until every queued event was handed to its hooks (at most ``timeout`` s); True if so."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            try:
                if event is not None:
                    self.deliver(event)
            finally:
                self._queue.task_done()

    def deliver(self, event: Event) -> None:
        """Call every implementation of the event's hook, each at most ``timeout`` seconds."""
        try:
            impls = self._hooks(event.hook)
        except Exception:
            log.exception("the hooks of %s could not be listed; event not delivered", event.hook)
            self.failed += 1
            return
        for plugin, function in impls:
            done = threading.Event()
            error: list[BaseException] = []

            def call(function: Callable[..., Any] = function) -> None:
                try:
                    function(event=event)
                except BaseException as exc:  # a plugin's bug is reported, never raised into the store
                    error.append(exc)
                finally:
                    done.set()

            threading.Thread(target=call, name=f"zoo-hook-{plugin}", daemon=True).start()
            if not done.wait(self.timeout):
                self.failed += 1
                log.error("hook %s of plugin %r hung on %s of %s@%s (still running after %.0f s); the next hooks "
                          "and events go on without it", event.hook, plugin, event.kind, event.name, event.version,
                          self.timeout)
            elif error:
                self.failed += 1
                log.error("hook %s of plugin %r raised %s: %s (on %s of %s@%s); the change stands, the next hooks "
                          "and events go on", event.hook, plugin, type(error[0]).__name__, error[0], event.kind,
                          event.name, event.version)


def plugin_hooks(hook: str) -> list[tuple[str, Callable[..., Any]]]:
    """The implementations of ``hook`` among the installed plugins (the process's default registry)."""
    from ..plugins.registry import default_registry

    return default_registry().event_hooks(hook)
