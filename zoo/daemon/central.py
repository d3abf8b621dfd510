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
import uuid
from typing import Any

from ..errors import InvalidArgumentError, ObjectStoreError, ZooError
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
        self.central.remember()  # zoo ls / du / verify / gc on this machine show the bucket too
        try:
            self.central.bucket.check()
            self._check_create_only()
            log.info("object store %s (%s): the central tier", self.central.url, self.central.bucket.endpoint())
        except ObjectStoreError as exc:
            self.central.last_error = str(exc)
            log.warning("%s; serving what is local, and trying again every %.0f s", exc, _interval())
        self._thread = threading.Thread(target=self._run, name="zoo-central", daemon=True)
        self._thread.start()

    def _check_create_only(self) -> None:
        """Several daemons share a bucket through create-only writes: a server that takes a second one of a key
        would let two versions share a number. Such a server is refused before anything is written."""
        key = f"probe/{uuid.uuid4().hex}"
        try:
            first, second = self.central.bucket.put_new(key, b"1"), self.central.bucket.put_new(key, b"2")
        finally:
            self.central.bucket.delete(key)
        if not first or second:
            raise InvalidArgumentError(
                f"{self.central.url} ({self.central.bucket.endpoint()}) does not refuse a second create-only write "
                "of one key (If-None-Match: *, which AWS S3, Ceph RGW, MinIO, SeaweedFS and R2 honour): several "
                "daemons could not share it safely. Use an object store that honours it")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        sent = False
        while not self._stop.is_set():
            try:
                if not sent:  # once per start, when the bucket answers
                    self.sent, sent = self._send_local(), True
                self.store._sync_central()
                if time.monotonic() - self._counted > 60 or self._usage is None:
                    self._usage, self._counted = self.central.usage(), time.monotonic()
            except ZooError as exc:
                self.central.last_error = str(exc)
                log.warning("object store: %s", exc)
            except Exception:  # noqa: BLE001 - a background loop logs and goes on
                log.exception("object store: the sync failed")
            self._stop.wait(_interval())

    def _send_local(self) -> int:
        """Versions of this store the bucket lacks (made before it had the bucket, or while it was down): their
        objects, then their records, each under its name's lock. One the bucket records as removed is dropped
        here instead (the sync does it); one whose number the bucket gave another version stays here only."""
        records, removed = self.central.records(), self.central.removed()
        sent = 0
        for version in list(self.store.iter_versions()):
            if self._stop.is_set():
                break
            key = (self.central.record_key(version.repo, version.number).split("/")[1], version.number)
            if key in records or key in removed:
                continue  # in the bucket, or removed there (the sync takes it if the id is this one's)
            if any(not self.store.object_path(e.sha256).exists() for e in version.files):
                continue  # incomplete here (zoo verify says why): not sent
            with self.store.disk.name_lock(version.repo):
                if not version.manifest.exists():
                    continue  # removed meanwhile
                self.central.upload(version.files)
                if self.central.publish(version):
                    sent += 1
                    continue
            log.warning("%s %s: the bucket gave its number to another version; this one stays on this machine "
                        "only", version.repo, version.name)
        if sent:
            log.info("object store: %d versions of this store sent to %s", sent, self.central.url)
        return sent

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
