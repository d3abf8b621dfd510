"""Drop folders (zoo.daemon.watch): driven directly, with an on_ready that records its calls.

Every test runs with inotify and with polling (poll=0.2); every wait is bounded; no thread may be left
behind (compared with threading.enumerate(), as watchdog's own tests do).
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time
import zipfile
from pathlib import Path

import pytest

from conftest import TINY_BERT
from zoo.daemon.watch import DropFolders, check_complete, filesystem_type, needs_polling

QUIET = 0.5
CONFIG = {"model_type": "bert", "hidden_size": 4}


def threads() -> set[threading.Thread]:
    # tqdm's monitor thread is started by transformers' save_pretrained progress bar, not by zoo
    return {t for t in threading.enumerate() if t.name != "tqdm_monitor"}


@pytest.fixture(autouse=True)
def _no_thread_leaks():
    before = threads()
    yield
    leaked = threads() - before  # stop() joins its threads: nothing to wait for
    assert not leaked, f"threads left running: {leaked}"


@pytest.fixture(params=[None, 0.2], ids=["inotify", "polling"])
def poll(request):
    return request.param


class Recorder:
    """on_ready and on_problem that record what they were called with, and what the folder held then."""

    def __init__(self, fail: int = 0) -> None:
        self.ready: list[tuple[str, Path, dict[str, int]]] = []
        self.problems: list[tuple[str, Path, str]] = []
        self.fail = fail
        self.lock = threading.Lock()

    def on_ready(self, name: str, folder: Path) -> None:
        files = {p.name: p.stat().st_size for p in folder.iterdir()}
        with self.lock:
            self.ready.append((name, folder, files))
            if self.fail:
                self.fail -= 1
                raise OSError("disk full (simulated)")

    def on_problem(self, name: str, folder: Path, reason: str) -> None:
        with self.lock:
            self.problems.append((name, folder, reason))

    def names(self) -> list[str]:
        with self.lock:
            return [name for name, _, _ in self.ready]


def wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def settle(drop: DropFolders, seconds: float | None = None) -> None:
    """Give the watcher time to do anything more it would do (a few quiet periods and polls)."""
    time.sleep(seconds if seconds is not None else drop.quiet * 2 + (drop.poll or 0) * 2 + 0.2)


def state(drop: DropFolders, name: str) -> dict | None:
    return next((s for s in drop.status() if s["name"] == name), None)


def safetensors_bytes(n: int, name: str = "w") -> bytes:
    header = json.dumps({name: {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + bytes(4 * n)


def write_model(folder: Path, n: int = 64) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(CONFIG))
    (folder / "model.safetensors").write_bytes(safetensors_bytes(n))
    return folder


def watcher(root: Path, rec: Recorder, *, quiet: float = QUIET, poll: float | None = None) -> DropFolders:
    return DropFolders([root], rec.on_ready, quiet=quiet, poll=poll, on_problem=rec.on_problem)


def test_save_pretrained_gives_exactly_one_ready(tmp_path, poll):
    from transformers import BertConfig, BertModel

    root = tmp_path / "drop"
    root.mkdir()
    rec = Recorder()
    model = BertModel(BertConfig(**{k: v for k, v in TINY_BERT.items() if k != "num_labels"}))
    with watcher(root, rec, poll=poll) as drop:
        model.save_pretrained(root / "tiny-bert")
        assert wait_for(lambda: rec.ready)
        settle(drop)
        assert rec.names() == ["tiny-bert"]
        _, folder, files = rec.ready[0]
        assert folder == root / "tiny-bert"
        assert files["model.safetensors"] == (root / "tiny-bert" / "model.safetensors").stat().st_size
        assert check_complete(folder) is None
        assert state(drop, "tiny-bert")["state"] == "ingested"
        assert not rec.problems


@pytest.mark.slow
def test_slow_writer_never_gives_an_early_ready(tmp_path, poll):
    """config.json first, then the weights in chunks over ~4 s, with one pause longer than the quiet
    period: the half-written file is seen (invalid), never handed over; one ready after the last byte."""
    root = tmp_path / "drop"
    folder = root / "slow"
    folder.mkdir(parents=True)
    rec = Recorder()
    data = safetensors_bytes(256 * 1024)  # 1 MiB
    chunks = 16
    step = -(-len(data) // chunks)
    with watcher(root, rec, quiet=1.0, poll=poll) as drop:
        (folder / "config.json").write_text(json.dumps(CONFIG))
        time.sleep(0.3)
        with open(folder / "model.safetensors", "wb") as f:
            for i in range(chunks):
                f.write(data[i * step:(i + 1) * step])
                f.flush()
                time.sleep(1.6 if i == chunks // 2 else 0.15)  # one pause longer than the quiet period
                assert rec.ready == [], f"on_ready while only {f.tell()} of {len(data)} bytes were written"
        finished = time.monotonic()
        assert wait_for(lambda: rec.ready)
        settle(drop)
        assert rec.names() == ["slow"]
        assert rec.ready[0][2] == {"config.json": len(json.dumps(CONFIG)), "model.safetensors": len(data)}
        assert time.monotonic() > finished
        assert state(drop, "slow")["state"] == "ingested"


def test_marker_ends_the_wait(tmp_path, poll):
    root = tmp_path / "drop"
    root.mkdir()
    rec = Recorder()
    with watcher(root, rec, quiet=60.0, poll=poll):  # without the marker nothing would happen for a minute
        write_model(root / "marked")
        write_model(root / "unmarked")
        time.sleep(0.5)
        assert rec.ready == []
        (root / "marked" / ".zoo-ready").touch()
        assert wait_for(lambda: rec.ready, timeout=10)
        time.sleep(0.5 + 2 * (poll or 0))
        assert rec.names() == ["marked"]


def test_marker_does_not_skip_the_completeness_check(tmp_path, poll):
    root = tmp_path / "drop"
    folder = root / "early"
    folder.mkdir(parents=True)
    rec = Recorder()
    with watcher(root, rec, quiet=60.0, poll=poll) as drop:
        (folder / "config.json").write_text(json.dumps(CONFIG))
        (folder / "model.safetensors").write_bytes(safetensors_bytes(64)[:-10])  # truncated
        time.sleep(0.2)
        (folder / ".zoo-ready").touch()
        assert wait_for(lambda: (state(drop, "early") or {}).get("state") == "invalid", timeout=10)
        assert "model.safetensors" in state(drop, "early")["reason"]
        assert rec.ready == []
        (folder / "model.safetensors").write_bytes(safetensors_bytes(64))
        time.sleep(0.1)
        (folder / ".zoo-ready").touch()  # written after the weights: counts again
        assert wait_for(lambda: rec.ready, timeout=10)
        assert rec.names() == ["early"]


def test_missing_shard_stays_invalid_and_blocks_nothing(tmp_path, poll):
    root = tmp_path / "drop"
    sharded = root / "sharded"
    sharded.mkdir(parents=True)
    rec = Recorder()
    with watcher(root, rec, poll=poll) as drop:
        (sharded / "config.json").write_text(json.dumps(CONFIG))
        shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
        (sharded / shards[0]).write_bytes(safetensors_bytes(8, "a"))
        (sharded / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": {"a": shards[0], "b": shards[1]}}))
        write_model(root / "good")
        assert wait_for(lambda: rec.ready)
        assert wait_for(lambda: (state(drop, "sharded") or {}).get("state") == "invalid")
        settle(drop)
        assert rec.names() == ["good"]
        st = state(drop, "sharded")
        assert st["state"] == "invalid" and shards[1] in st["reason"]
        assert [name for name, _, _ in rec.problems] == ["sharded"]
        (sharded / shards[1]).write_bytes(safetensors_bytes(8, "b"))  # the last shard arrives
        assert wait_for(lambda: len(rec.ready) == 2)
        settle(drop)
        assert rec.names() == ["good", "sharded"]


def test_symlink_outside_is_refused(tmp_path, poll):
    root = tmp_path / "drop"
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours")
    rec = Recorder()
    root.mkdir()
    with watcher(root, rec, poll=poll) as drop:
        write_model(root / "sneaky")
        (root / "sneaky" / "tokenizer.json").symlink_to(outside)
        inside = write_model(root / "linked")
        (inside / "copy.json").symlink_to(inside / "config.json")  # stays inside: fine
        looped = write_model(root / "looped")
        (looped / "loop").symlink_to(looped / "loop")
        assert wait_for(lambda: (state(drop, "sneaky") or {}).get("state") == "refused")
        assert wait_for(lambda: rec.ready)
        assert wait_for(lambda: (state(drop, "looped") or {}).get("state") == "invalid")
        settle(drop)
        assert rec.names() == ["linked"]
        assert "outside the drop folder" in state(drop, "sneaky")["reason"]
        assert "loops" in state(drop, "looped")["reason"]
        reasons = {name: reason for name, _, reason in rec.problems}
        assert sorted(reasons) == ["looped", "sneaky"] and "outside the drop folder" in reasons["sneaky"]


def test_startup_scan_finds_folders_written_while_down(tmp_path, poll):
    root = tmp_path / "drop"
    write_model(root / "early-bird")
    write_model(root / "bad--name")
    (root / ".staging").mkdir()  # hidden: somebody's work in progress, not a drop folder
    rec = Recorder()
    with watcher(root, rec, poll=poll) as drop:
        assert wait_for(lambda: rec.ready)
        assert wait_for(lambda: (state(drop, "bad--name") or {}).get("state") == "invalid")
        settle(drop)
        assert rec.names() == ["early-bird"]
        assert "invalid name" in state(drop, "bad--name")["reason"]
        assert {s["name"] for s in drop.status()} == {"early-bird", "bad--name"}


def test_change_after_ingest_and_failing_on_ready(tmp_path, poll):
    """A later change makes a new ready; an on_ready that raises refuses the folder until it changes."""
    root = tmp_path / "drop"
    root.mkdir()
    rec = Recorder(fail=1)
    with watcher(root, rec, poll=poll) as drop:
        write_model(root / "m")
        assert wait_for(lambda: (state(drop, "m") or {}).get("state") == "refused")
        settle(drop)
        assert len(rec.ready) == 1 and "disk full" in state(drop, "m")["reason"]
        assert [name for name, _, _ in rec.problems] == ["m"]
        write_model(root / "m", n=128)  # a re-save
        assert wait_for(lambda: (state(drop, "m") or {}).get("state") == "ingested")
        settle(drop)
        assert rec.names() == ["m", "m"]
        assert rec.ready[1][2]["model.safetensors"] == len(safetensors_bytes(128))


def test_stop_leaves_no_thread(tmp_path):
    roots = [tmp_path / "a", tmp_path / "b"]
    for root in roots:
        root.mkdir()
    before = threads()
    for poll in (None, 0.2):
        drop = DropFolders(roots, lambda name, folder: None, quiet=QUIET, poll=poll)
        drop.start()
        assert threads() - before
        write_model(roots[0] / "x")
        drop.stop()
        assert threads() == before
        assert drop.watched() and all(w["mode"] == ("inotify" if poll is None else "polling every 0.2s")
                                      for w in drop.watched())


def test_a_root_that_is_not_a_directory_is_refused(tmp_path):
    drop = DropFolders([tmp_path / "nope"], lambda name, folder: None)
    with pytest.raises(ValueError, match="not a directory"):
        drop.start()
    with pytest.raises(ValueError):
        DropFolders([tmp_path], lambda name, folder: None, poll=0)


def test_check_complete_bin_and_sharded(tmp_path):
    folder = tmp_path / "bin"
    folder.mkdir()
    assert "config.json" in check_complete(folder)
    (folder / "config.json").write_text("{}")
    assert "model_type" in check_complete(folder)
    (folder / "config.json").write_text(json.dumps(CONFIG))
    assert "no weights" in check_complete(folder)
    with zipfile.ZipFile(folder / "pytorch_model.bin", "w") as archive:  # torch's layout, without torch
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("archive/data/0", bytes(4096))
    assert check_complete(folder) is None
    whole = (folder / "pytorch_model.bin").read_bytes()
    (folder / "pytorch_model.bin").write_bytes(whole[:-30])  # the end of central directory is not there yet
    assert "truncated" in check_complete(folder)  # the check loads make (zoo.model.checkpoint)
    (folder / "pytorch_model.bin").unlink()
    (folder / "model-00001-of-00002.safetensors").write_bytes(safetensors_bytes(4))
    assert "no weights" in check_complete(folder).lower()  # a shard without its index (not written yet)
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"w": "model-00001-of-00002.safetensors"}}))
    assert check_complete(folder) is None
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"v": "model-00001-of-00002.safetensors"}}))
    assert "come from different saves" in check_complete(folder)


def test_filesystem_type_picks_the_longest_mount_point(tmp_path):
    mounts = [("/", "ext4"), ("/mnt", "xfs"), ("/mnt/shared", "nfs4"), ("/mnt/shared2", "ext4")]
    assert filesystem_type(Path("/mnt/shared/models/drop"), mounts) == "nfs4"
    assert filesystem_type(Path("/mnt/shared2/x"), mounts) == "ext4"
    assert filesystem_type(Path("/mnt/other"), mounts) == "xfs"
    assert filesystem_type(Path("/home"), mounts) == "ext4"
    assert [needs_polling(t) for t in ("nfs4", "cifs", "lustre", "gpfs", "9p", "fuse.sshfs", "ext4", "xfs",
                                        "tmpfs", "overlay", "fuseblk")] == [True] * 6 + [False] * 5
    assert filesystem_type(tmp_path) != "unknown"
    assert os.path.isdir(tmp_path)
