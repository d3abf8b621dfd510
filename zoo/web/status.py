"""The daemon's jobs and quota for the home page: what ``zoo daemon status`` says of them, read more cheaply.

``zoo daemon status`` adds up the quota's use from every manifest and every object (about a second on a store
of 10,000 versions): the home page, asked for every few seconds while a pull runs, reads the jobs as they are
now and the bytes on disk at most every ``QUOTA_EVERY`` seconds (a ``stat`` per object, no manifest).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

QUOTA_EVERY = 10.0


def daemon_status(daemon: Any) -> Callable[[], dict[str, Any]]:
    """A status function for :class:`zoo.web.site.Site` over a running ``zoo.daemon.server.Daemon``: its jobs
    (op, what, progress), the quota (``max_size``, bytes used, pins) when it has one, and pulls in flight."""
    lock = threading.Lock()
    used: list[float] = [0.0, -1.0]  # [bytes, when measured]

    def physical() -> int:
        with lock:
            if time.monotonic() - used[1] < QUOTA_EVERY:
                return int(used[0])
        inodes: dict[tuple[int, int], int] = {}
        root = daemon.store.objects
        try:
            shards = [e.path for e in os.scandir(root) if e.is_dir(follow_symlinks=False)]
        except OSError:
            shards = []
        for shard in shards:
            try:
                for entry in os.scandir(shard):
                    st = entry.stat(follow_symlinks=False)
                    inodes[(st.st_dev, st.st_ino)] = st.st_size
            except OSError:
                continue
        with lock:
            used[:] = [float(sum(inodes.values())), time.monotonic()]
        return int(used[0])

    def status() -> dict[str, Any]:
        with daemon.jobs_lock:
            jobs = [{"op": j.key[0], "what": " ".join(str(k) for k in j.key[1:] if k is not None),
                     "waiting": j.waiting, **j.snapshot()} for j in daemon.jobs.values()]
        out: dict[str, Any] = {"jobs": jobs}
        if daemon.max_size is not None:
            from ..store.records import pins

            out["quota"] = {"max_size": daemon.max_size, "used": physical(),
                            "pinned": sorted(f"{r}@{v}" for r, v in pins(daemon.store))}
        if daemon.http is not None:
            out["http"] = {"pulls_in_flight": daemon.http.pull.in_flight()}
        return out

    return status
