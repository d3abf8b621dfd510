"""The daemon's side of the central tier (``zoo daemon --object-store s3://BUCKET[/PREFIX]``).

In the background: every version record another daemon puts in the bucket becomes a manifest here within
``ZOO_CENTRAL_SYNC`` seconds (default 10; a miss is looked up at once anyway), the versions this store had
before it was given the bucket are sent to it, and what the bucket holds is counted for ``zoo daemon
status``. A bucket that cannot be reached is reported there and in the log; what is local is still served.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from ..errors import ObjectStoreError, ZooError
from ..store.writer import Store

log = logging.getLogger("zoo.daemon")


def _interval() -> float:
    try:
        value = float(os.environ.get("ZOO_CENTRAL_SYNC", "10"))
    except ValueError:
        return 10.0
    return value if value > 0 else 10.0


class CentralSync:
    def __init__(self, store: Store) -> None:
        assert store.central is not None
        self.store, self.central = store, store.central
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._usage: Any = None
        self._counted = 0.0
        self.sent = 0  # versions of this store sent to the bucket when it was given one

    def start(self) -> None:
        settings = self.central.settings()  # zoo ls / du / verify / gc on this machine show the bucket too
        self.central.remember(sent=bool(settings.get("sent")), local_only=map(tuple, settings.get("local_only", ())))
        try:
            self.central.bucket.check()
            log.info("object store %s (%s): the central tier", self.central.url, self.central.bucket.endpoint())
        except ObjectStoreError as exc:
            self.central.last_error = str(exc)
            log.warning("%s; serving what is local, and trying again every %.0f s", exc, _interval())
        self._thread = threading.Thread(target=self._run, name="zoo-central", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        adopted = False
        while not self._stop.is_set():
            try:
                if not adopted:
                    self._first_sync()
                    adopted = True
                self.store._sync_central()
                if time.monotonic() - self._counted > 60 or self._usage is None:
                    self._usage, self._counted = self.central.usage(), time.monotonic()
            except ZooError as exc:
                self.central.last_error = str(exc)
                log.warning("object store: %s", exc)
            except Exception:  # noqa: BLE001 - a background loop logs and goes on
                log.exception("object store: the sync failed")
            self._stop.wait(_interval())

    def _first_sync(self) -> None:
        """Once per start: the first time this store has the bucket, its versions are sent to it; after that, a
        version here that the bucket lacks was removed there (``zoo rm`` on another daemon while this one was down)."""
        settings = self.central.settings()
        local_only = {tuple(k) for k in settings.get("local_only", ())}
        records = self.central.records()
        if not settings.get("sent"):
            self.sent, kept = self._send_local(records)
            if not self._stop.is_set():  # every version was looked at: from now on the bucket is the record
                self.central.remember(sent=True, local_only=local_only | kept)
            return
        for version in self.store.iter_versions():
            key = (self.central.record_key(version.repo, version.number).split("/")[1], version.number)
            if key not in records and key not in local_only:
                self.central.gone.add(key)

    def _send_local(self, records: dict) -> tuple[int, set]:
        """Versions this store made before it had the bucket: their objects, then their records. Returns how
        many were sent, and those kept here only (the bucket has another version of their number)."""
        sent, kept = 0, set()
        for version in self.store.iter_versions():
            if self._stop.is_set():
                break
            key = (self.central.record_key(version.repo, version.number).split("/")[1], version.number)
            if key in records:
                theirs = self.central.read_record(*key, self.store.layout.versions_root / key[0])
                if theirs.id != version.id:
                    kept.add(key)
                    log.warning("%s %s: the bucket has another version of that number; this one stays on this "
                                "machine only", version.repo, version.name)
                continue
            if any(not self.store.object_path(e.sha256).exists() for e in version.files):
                kept.add(key)  # incomplete here (zoo verify says why): not sent, and not taken for removed
                continue
            self.central.upload(version.files)
            if self.central.publish(version):
                sent += 1
            else:
                kept.add(key)
                log.warning("%s %s: the bucket has another version of that number; this one stays on this machine "
                            "only (zoo rm it, and import it again, to renumber it)", version.repo, version.name)
        if sent:
            log.info("object store: %d versions of this store sent to %s", sent, self.central.url)
        return sent, kept

    def status(self) -> dict[str, Any]:
        usage = self._usage
        out: dict[str, Any] = {"url": self.central.url, "endpoint": self.central.bucket.endpoint(),
                               "reachable": self.central.last_error is None, "error": self.central.last_error,
                               "last_sync": self.central.last_sync}
        if usage is not None:
            out.update(versions=usage.versions, objects=usage.objects, bytes=usage.bytes,
                       local_objects=usage.local_objects, local_bytes=usage.local_bytes,
                       bucket_only_bytes=usage.bucket_only_bytes)
        return {"object_store": out}
