"""The one module that talks to S3: a bucket (and a prefix in it) as zoo uses it, through boto3.

Why boto3: it is the client every S3-compatible server (AWS, Ceph RGW, SeaweedFS, MinIO, R2) is tested
against, it reads the usual AWS settings (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_PROFILE``, ``~/.aws``), it has conditional writes
(``If-None-Match: *``), and its transfer manager splits large objects into parts sent and fetched in
parallel. zoo's own bytes (hashing, the local cache, ``sendfile``) dominate a read anyway.

What the rest of zoo sees: :class:`Bucket` with ``put_new`` (create only: False when the key exists, which
is how several daemons on one bucket agree without a lock server of zoo's own), ``put``, ``get_bytes``,
``download``, ``head``, ``list``, ``delete`` and the incomplete multipart uploads. Every failure is an
:class:`~zoo.errors.ObjectStoreError` that names the bucket and the fix.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

from ..errors import InvalidArgumentError, ObjectStoreError

INSTALL = "pip install 'zoo-registry[s3]'"
MULTIPART = 64 << 20  # objects above this go in parts, several at once
DOWN_FOR = 10.0  # seconds a server that could not be reached is not asked again
for _name in ("boto3", "botocore", "s3transfer"):  # their INFO lines ("Found credentials...") are not zoo's news
    logging.getLogger(_name).setLevel(logging.WARNING)


@dataclass(frozen=True)
class Listed:
    key: str  # without the bucket's prefix
    size: int
    modified: float  # seconds since the epoch


def parse_url(url: str) -> tuple[str, str]:
    """``s3://BUCKET[/PREFIX]`` -> (bucket, prefix without slashes at either end)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise InvalidArgumentError(f"{url!r} is not an object store address; write s3://BUCKET or s3://BUCKET/PREFIX")
    prefix = parts.path.strip("/")
    if any(p in ("", ".", "..") for p in prefix.split("/")) and prefix:
        raise InvalidArgumentError(f"{url!r}: the prefix has an empty, '.' or '..' part")
    return parts.netloc, prefix


class _Missing(Exception):
    """No such key (translated from botocore; never leaves this module)."""


class _Taken(Exception):
    """A create-only write found the key there (translated from botocore; never leaves this module)."""


class Bucket:
    """A bucket and prefix, with the AWS settings of the environment."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.name, self.prefix = parse_url(self.url)
        self._lock = threading.Lock()
        self._client: Any = None
        self._down_until, self._down_why = 0.0, ""

    # -- the client ----------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                from .._deps import require

                require("boto3", INSTALL, needed_by=f"the object store {self.url}")
                import boto3
                from botocore.config import Config

                config = Config(
                    retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=3, read_timeout=20,
                    max_pool_connections=32, request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",  # zoo checks every object's sha256 itself
                )
                self._client = boto3.session.Session().client("s3", config=config)
            return self._client

    def endpoint(self) -> str:
        return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _rel(self, key: str) -> str:
        return key[len(self.prefix) + 1:] if self.prefix else key

    def _error(self, what: str, exc: BaseException) -> ObjectStoreError:
        from botocore.exceptions import ClientError, NoCredentialsError

        if isinstance(exc, NoCredentialsError):
            return ObjectStoreError(f"{self.url}: {what}: no AWS credentials; set AWS_ACCESS_KEY_ID and "
                                    "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)")
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "?")
            return ObjectStoreError(f"{self.url} ({self.endpoint()}): {what}: the server said {code}: "
                                    f"{exc.response.get('Error', {}).get('Message', '')}".rstrip(": "),
                                    code=str(code))
        return ObjectStoreError(f"{self.url} cannot be reached at {self.endpoint()} ({what}: {exc}); check "
                                "AWS_ENDPOINT_URL and that the object store is up")

    @contextlib.contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """botocore's failures as zoo's: :class:`_Missing` (no such key), :class:`_Taken` (a create-only
        write found the key), else an :class:`ObjectStoreError` naming the bucket and the fix. A server that
        could not be reached is not asked again for :data:`DOWN_FOR` seconds: callers fail at once meanwhile
        (a load of what is local never waits on a bucket that is down)."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError, ConnectionError as BotoConnectionError, \
            ReadTimeoutError

        down = self._down_until - time.monotonic()
        if down > 0:
            raise ObjectStoreError(f"{self.url} cannot be reached at {self.endpoint()} ({what}: {self._down_why}; "
                                   f"asked again in {down:.0f} s); check AWS_ENDPOINT_URL and that the object "
                                   "store is up")
        try:
            yield
        except Boto3Error as exc:  # the transfer manager's (a part upload failed): its cause says why
            cause = exc.__context__
            if isinstance(cause, (BotoCoreError, ClientError)):
                raise self._error(what, cause) from None
            raise ObjectStoreError(f"{self.url} ({self.endpoint()}): {what}: {exc}") from None
        except (BotoConnectionError, ReadTimeoutError) as exc:
            self._down_until, self._down_why = time.monotonic() + DOWN_FOR, str(exc)
            raise self._error(what, exc) from None
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                raise _Missing(code) from None
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise _Taken(code) from None
            raise self._error(what, exc) from None
        except BotoCoreError as exc:
            raise self._error(what, exc) from None

    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            with self._translated(what):
                return fn(Bucket=self.name, **kwargs)
        except (_Missing, _Taken) as exc:
            raise ObjectStoreError(f"{self.url} ({self.endpoint()}): {what}: the server said {exc}",
                                   code="NoSuchKey" if isinstance(exc, _Missing) else "PreconditionFailed") from None

    # -- objects -------------------------------------------------------------------------------------

    def put_new(self, rel: str, body: bytes | Path, on_bytes: Callable[[int], None] | None = None) -> bool:
        """Create ``rel`` (``If-None-Match: *``): True if this call created it, False if it existed. A file
        above :data:`MULTIPART` goes in parts (after a look that it is not there: a content's key holds its
        bytes whoever writes them); its upload is invisible until complete (one killed midway leaves parts
        that :meth:`abort_upload` collects, never a partial object)."""
        key = self.key(rel)
        try:
            with self._translated(f"writing {key}"):
                if isinstance(body, Path) and body.stat().st_size > MULTIPART:
                    if self.head(rel) is not None:
                        return False
                    from boto3.s3.transfer import TransferConfig

                    self.client.upload_file(str(body), self.name, key, Callback=on_bytes, Config=TransferConfig(
                        multipart_threshold=MULTIPART, multipart_chunksize=MULTIPART, max_concurrency=8))
                    return True
                data = body.read_bytes() if isinstance(body, Path) else body
                self.client.put_object(Bucket=self.name, Key=key, Body=data, IfNoneMatch="*")
        except _Taken:
            return False
        if on_bytes:
            on_bytes(len(data))
        return True

    def put_path(self, rel: str, path: Path) -> None:
        """Write the file ``path`` as ``rel`` whatever it held (an object found damaged there, replaced by
        bytes that were checked)."""
        key = self.key(rel)
        with self._translated(f"writing {key}"):
            from boto3.s3.transfer import TransferConfig

            self.client.upload_file(str(path), self.name, key, Config=TransferConfig(
                multipart_threshold=MULTIPART, multipart_chunksize=MULTIPART, max_concurrency=8))

    def put(self, rel: str, data: bytes) -> None:
        """Write ``rel`` whatever it held (a ref: the last writer wins)."""
        self._call(f"writing {self.key(rel)}", self.client.put_object, Key=self.key(rel), Body=data)

    def get_bytes(self, rel: str, limit: int = 16 << 20) -> bytes | None:
        """A small object's bytes (None when it does not exist); larger than ``limit`` is refused."""
        key = self.key(rel)
        try:
            with self._translated(f"reading {key}"):
                reply = self.client.get_object(Bucket=self.name, Key=key)
                if reply.get("ContentLength", 0) > limit:
                    reply["Body"].close()
                    raise ObjectStoreError(f"{self.url}: {key} is {reply['ContentLength']} bytes, more than a "
                                           "record can be; something other than zoo wrote it")
                return reply["Body"].read()
        except _Missing:
            return None

    def stream(self, rel: str, chunk: int = 1 << 20) -> Iterator[bytes]:
        """The bytes of ``rel``, in order, as they arrive (so that a file written from them can be read while
        it grows). :class:`ObjectStoreError` with code ``NoSuchKey`` when it does not exist."""
        key = self.key(rel)
        try:
            with self._translated(f"reading {key}"):
                body = self.client.get_object(Bucket=self.name, Key=key)["Body"]
                try:
                    yield from body.iter_chunks(chunk)
                finally:
                    body.close()
        except _Missing:
            raise ObjectStoreError(f"{self.url}: {key} is missing from the bucket", code="NoSuchKey") from None

    def head(self, rel: str) -> int | None:
        """The size of ``rel``, or None when it does not exist."""
        key = self.key(rel)
        try:
            with self._translated(f"looking at {key}"):
                return int(self.client.head_object(Bucket=self.name, Key=key)["ContentLength"])
        except _Missing:
            return None

    def list(self, rel_prefix: str) -> Iterator[Listed]:
        """Every object under ``rel_prefix`` (a folder: end it with ``/``), a page at a time."""
        with self._translated(f"listing {self.key(rel_prefix)}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name,
                                                                          Prefix=self.key(rel_prefix))
            for page in pages:
                for item in page.get("Contents", ()):
                    yield Listed(self._rel(item["Key"]), int(item["Size"]), item["LastModified"].timestamp())

    def delete(self, rel: str) -> None:
        """Delete ``rel``; one that is not there (any more) is not an error."""
        try:
            self._call(f"deleting {self.key(rel)}", self.client.delete_object, Key=self.key(rel))
        except ObjectStoreError as exc:
            if exc.code != "NoSuchKey":
                raise

    def check(self) -> None:
        """Raise :class:`ObjectStoreError` unless the bucket answers (and exists)."""
        self._call("opening the bucket", self.client.head_bucket)

    # -- incomplete multipart uploads (a writer killed midway) -------------------------------------------

    def uploads(self) -> list[tuple[str, str, float]]:
        """(key, upload id, started) of every multipart upload under the prefix not completed or aborted."""
        reply = self._call("listing incomplete uploads", self.client.list_multipart_uploads,
                           Prefix=self.key(""))
        return [(self._rel(u["Key"]), u["UploadId"], u["Initiated"].timestamp()) for u in reply.get("Uploads", ())]

    def abort_upload(self, rel: str, upload_id: str) -> None:
        self._call(f"aborting the upload of {self.key(rel)}", self.client.abort_multipart_upload,
                   Key=self.key(rel), UploadId=upload_id)


__all__ = ["Bucket", "Listed", "MULTIPART", "parse_url"]
