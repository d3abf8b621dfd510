"""A full disk under a real ``zoo daemon --http`` (#16 C6), simulated with small tmpfs mounts (root only):

- a download cut by a full disk leaves its partial file; once the disk has room for what is missing (not for
  the whole file), the retry resumes it, and the upstream sends only the rest;
- the taint of a try whose bytes went out and then failed cannot be written on a full disk: it is held in
  memory, so a client that resumes with ``Range`` still gets the whole file, never a good tail glued to a
  damaged head.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_BERT
from http_daemon import HttpDaemon
from test_hubserver import REPO, _get, _SlowUpstream

from zoo.atomic import HOST

MiB = 1 << 20
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: needs root")


@pytest.fixture
def tmpfs(tmp_path):
    mounted: list[Path] = []

    def mount(path: Path, size: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(folder: Path, leave: int) -> Path:
    """A file that leaves ``leave`` bytes free on ``folder``'s disk."""
    filler = folder / "filler"
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    with open(filler, "wb") as f:
        f.truncate(0)
        f.write(b"\0" * (free - leave))
    return filler


@pytest.mark.slow
def test_a_resume_needs_room_for_what_is_missing_not_for_the_whole_file(hub, tmp_path, tmpfs):
    import json

    from huggingface_hub import hf_hub_download
    from safetensors.numpy import save

    weights = save({"w": np.random.default_rng(3).standard_normal((80 * MiB // 4 - 32,)).astype(np.float32)})
    repo = f"zoo-tests/resume-{os.getpid()}-{time.monotonic_ns()}"
    hub.add_repo(repo, {"config.json": json.dumps(TINY_BERT).encode(), "model.safetensors": weights})
    sha = hashlib.sha256(weights).hexdigest()
    disk = tmpfs(tmp_path / "disk", "256m")
    home = disk / "home"
    (home / "tmp").mkdir(parents=True)
    have = 60 * MiB  # what a download cut by the full disk had written (its process is gone)
    (home / "tmp" / f"{HOST}.999999.cut.{sha}.part").write_bytes(weights[:have])
    # room for the missing 20 MiB and the 64 MiB margin, not for the whole 80 MiB and the margin
    _fill(disk, len(weights) - have + 64 * MiB + 26 * MiB)
    with HttpDaemon(home, upstream=hub.endpoint, env={"ZOO_SCRUB_RATE": "0"}) as daemon:
        hub.reset_counts()
        path = hf_hub_download(repo, "model.safetensors", cache_dir=tmp_path / "client", endpoint=daemon.endpoint)
        assert Path(path).read_bytes() == weights
        assert hub.bytes_sent("model.safetensors") <= len(weights) - have  # the rest only: resumed
    assert list((home / "tmp").glob("*.part")) == []


@pytest.mark.slow
def test_a_taint_that_cannot_be_written_on_a_full_disk_still_holds(hub, tmp_path, tmpfs, minilm_dir):
    good = (minilm_dir / "tokenizer.json").read_bytes()
    home = tmp_path / "served"
    remote = tmpfs(home / "remote", "1m")  # where taints are recorded: full
    _fill(remote, 0)
    bad = _SlowUpstream(hub.endpoint, rate=400 << 10, corrupt=1, match="tokenizer.json")  # ~1 s a body
    threading.Thread(target=bad.serve_forever, daemon=True).start()
    try:
        with HttpDaemon(home, upstream=bad.endpoint, env={"ZOO_SCRUB_RATE": "0"}) as daemon:
            status, _, head, cut = _get(daemon, f"/{REPO}/resolve/main/tokenizer.json")
            assert status == 200 and cut and 0 < len(head) < len(good)
            assert head[:1] != good[:1]  # the client holds a damaged first byte
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and "could not record the taint" not in daemon.log.read_text():
                time.sleep(0.05)
            assert "could not record the taint" in daemon.log.read_text()  # the disk was full for it
            status, headers, body, cut = _get(daemon, f"/{REPO}/resolve/main/tokenizer.json",
                                              {"Range": f"bytes={len(head)}-"})
            assert (status, cut) == (200, False) and "Content-Range" not in headers  # whole, not the tail
            assert body == good
    finally:
        bad.shutdown()
        bad.server_close()
