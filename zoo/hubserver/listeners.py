"""Work in one thread that requests in the event loop wait on: a download in flight, a digest being checked."""

from __future__ import annotations

import threading
from typing import Callable


class Listened:
    """Callbacks told whenever the work moves on (from the worker's thread). ``_lock`` guards the work's
    state too."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def listen(self, callback: Callable[[], None]) -> None:
        """``callback()`` is called (from the download's thread) whenever the work moves on."""
        with self._lock:
            self._listeners.append(callback)

    def unlisten(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def _notify(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for callback in listeners:
            try:
                callback()
            except RuntimeError:  # the listener's event loop is closed: the daemon is stopping
                pass
