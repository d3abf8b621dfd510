"""Bit rot that keeps the size and mtime (#16 C3), against a real ``zoo daemon --http`` with an unmodified
huggingface_hub client: one byte of a stored object is flipped in place and its mtime put back.

- The daemon started after the damage checks a file's digest the first time it serves it: the client never
  receives the damaged bytes (it gets the good ones, fetched again from the upstream, or an error), and the
  damaged object is quarantined.
- While the daemon runs, its scrubber (``ZOO_SCRUB_RATE``) finds the damage without any request.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_BERT
from http_daemon import HttpDaemon

from zoo.store.content import hash_file


def _repo(hub) -> tuple[str, bytes]:
    from safetensors.numpy import save

    rng = np.random.default_rng(7)
    weights = save({"w": rng.standard_normal((256, 1024)).astype(np.float32)})  # 1 MiB
    repo = f"zoo-tests/rot-{os.getpid()}-{time.monotonic_ns()}"
    hub.add_repo(repo, {"config.json": json.dumps(TINY_BERT).encode(), "model.safetensors": weights})
    return repo, weights


def _download(daemon: HttpDaemon, repo: str, cache: Path) -> bytes:
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo, "model.safetensors", cache_dir=cache, endpoint=daemon.endpoint)).read_bytes()


def _flip_in_place(path: Path, offset: int) -> None:
    """One byte changed; size, mtime (and inode) kept: what a stat check cannot see."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)


def _object(home: Path, content: bytes) -> Path:
    import hashlib

    sha = hashlib.sha256(content).hexdigest()
    return home / "objects" / "sha256" / sha[:2] / sha


@pytest.mark.slow
def test_a_daemon_started_after_the_damage_never_sends_the_damaged_bytes(hub, tmp_path):
    from huggingface_hub import snapshot_download

    repo, weights = _repo(hub)
    home = tmp_path / "served"
    off = {"ZOO_SCRUB_RATE": "0"}  # the scrubber must not be what finds it here
    with HttpDaemon(home, upstream=hub.endpoint, env=off) as daemon:
        snapshot_download(repo, cache_dir=tmp_path / "c0", endpoint=daemon.endpoint)  # a complete version
    obj = _object(home, weights)
    _flip_in_place(obj, len(weights) // 2)

    with HttpDaemon(home, upstream=hub.endpoint, env=off) as daemon:
        hub.reset_counts()
        got = []
        for attempt in range(3):  # a cut connection is an error for the client; it asks again
            try:
                got.append(_download(daemon, repo, tmp_path / f"c{attempt + 1}"))
                break
            except Exception as exc:  # noqa: BLE001 - any client error is allowed, damaged bytes are not
                got.append(exc)
        received = [g for g in got if isinstance(g, bytes)]
        assert all(body == weights for body in received), "the client received damaged bytes"
        assert received, got  # and a retry gets the good file, fetched again from the upstream
        assert sum("model.safetensors" in p for m, p in hub.requests() if m == "GET") == 1
        status = daemon.status()["http"]
        assert status["files_damaged"] == 1, status
    assert any(p.name.startswith(obj.name) for p in (home / "quarantine").iterdir())
    assert hash_file(obj)[0] == obj.name  # the stored object is good again


@pytest.mark.slow
def test_the_scrubber_finds_damage_while_the_daemon_runs(hub, tmp_path):
    from huggingface_hub import snapshot_download

    repo, weights = _repo(hub)
    home = tmp_path / "served"
    with HttpDaemon(home, upstream=hub.endpoint, env={"ZOO_SCRUB_RATE": "200"}) as daemon:
        snapshot_download(repo, cache_dir=tmp_path / "c0", endpoint=daemon.endpoint)
        assert _download(daemon, repo, tmp_path / "c1") == weights  # served, and checked, once
        obj = _object(home, weights)
        _flip_in_place(obj, 12345)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            scrub = daemon.status()["scrub"]
            if scrub["damaged"]:
                break
            time.sleep(0.5)
        assert [d["object"] for d in scrub["damaged"]] == [obj.name], scrub
        assert any(p.name.startswith(obj.name) for p in (home / "quarantine").iterdir())
        assert not obj.exists() or hash_file(obj)[0] == obj.name  # never the damaged bytes at that path
        hub.reset_counts()
        assert _download(daemon, repo, tmp_path / "c2") == weights  # fetched again from the upstream
        assert hash_file(obj)[0] == obj.name
