"""Imports through a real `zoo daemon`: what a client passes is bounded (no endless file, no more than it
announced, nothing once the client is gone), and what a killed daemon left in tmp/ is removed by the next."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import zoo
from conftest import TINY_BERT
from test_daemon import DaemonProcess, wait_until
from zoo.store import Store
from zoo.atomic import HOST

# A client that passes open files as it likes: config.json of a real model, then whatever argv names.
RAW_CLIENT = textwrap.dedent("""
    import json, os, socket, sys
    from zoo.daemon import wire
    sock, folder, weights, announced, wait = sys.argv[1:6]
    conn = socket.socket(socket.AF_UNIX)
    conn.connect(sock)
    fds = [os.open(os.path.join(folder, "config.json"), os.O_RDONLY), os.open(weights, os.O_RDONLY)]
    files = [{"path": "config.json", "size": os.path.getsize(os.path.join(folder, "config.json"))},
             {"path": "model.safetensors", "size": int(announced)}]
    wire.send(conn, {"op": "import", "args": {"name": "passed", "files": files}}, fds)
    if wait == "no":
        sys.exit(0)  # gone at once: the daemon must stop copying
    conn.settimeout(float(wait))
    reader = wire.Reader(conn)
    while "progress" in (line := reader.line()):
        pass
    print(json.dumps(line))
""")


def raw_import(daemon: DaemonProcess, folder: Path, weights: str, announced: int, wait: str = "60"):
    return subprocess.run([sys.executable, "-c", RAW_CLIENT, str(daemon.home / "daemon.sock"), str(folder),
                           weights, str(announced), wait], capture_output=True, text=True, timeout=120)


@pytest.fixture
def daemon():
    d = DaemonProcess(Path(os.environ["ZOO_HOME"])).start()
    yield d
    if d.proc.poll() is None:
        d.kill()  # an endless copy would not end with SIGTERM on a daemon without the fix


@pytest.fixture
def model(tmp_path) -> Path:
    return zoo.save(zoo.build(TINY_BERT), tmp_path / "model")


def tmp_bytes(home: Path) -> int:
    return sum(p.stat().st_size for p in (home / "tmp").rglob("*") if p.is_file()) if (home / "tmp").is_dir() else 0


def test_dev_zero_passed_as_a_file_is_refused(daemon, model):
    result = raw_import(daemon, model, "/dev/zero", 1000, wait="10")
    assert result.returncode == 0, f"no answer: the daemon is copying /dev/zero\n{result.stderr[-600:]}"
    error = json.loads(result.stdout)["error"]
    assert "model.safetensors is a device, not a regular file" in error["message"], error
    assert tmp_bytes(daemon.home) == 0 and Store(daemon.home).find("local/passed") is None


def test_a_file_larger_than_the_disk_is_refused_before_a_byte_is_copied(daemon, model, tmp_path):
    huge = tmp_path / "huge.safetensors"
    with open(huge, "wb") as f:
        f.truncate(1 << 43)  # 8 TiB, sparse: more than the disk holds
    result = raw_import(daemon, model, str(huge), 1 << 43)
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "StoreFullError" and "not enough free disk space" in error["message"], error
    assert tmp_bytes(daemon.home) == 0


def test_a_file_that_differs_from_its_announced_size_is_refused(daemon, model):
    weights = model / "model.safetensors"
    result = raw_import(daemon, model, str(weights), weights.stat().st_size - 1)
    error = json.loads(result.stdout)["error"]
    assert "not the" in error["message"] and "announced" in error["message"], error
    assert Store(daemon.home).find("local/passed") is None


@pytest.mark.slow
def test_the_copy_stops_when_the_client_goes_away(daemon, model, tmp_path):
    big = tmp_path / "big.safetensors"
    with open(big, "wb") as f:
        f.truncate(2 << 30)  # 2 GiB (sparse here; the daemon's copy writes it)
    raw_import(daemon, model, str(big), 2 << 30, wait="no")
    wait_until(lambda: "went away" in daemon.log.read_text() or Store(daemon.home).find("local/passed"), 120)
    assert "went away" in daemon.log.read_text(), daemon.log.read_text()[-2000:]
    wait_until(lambda: tmp_bytes(daemon.home) == 0, 30)
    assert tmp_bytes(daemon.home) == 0 and Store(daemon.home).find("local/passed") is None
    assert daemon.stop() == 0


@pytest.mark.slow
def test_a_restarted_daemon_removes_what_a_killed_one_left_in_tmp(daemon, model, tmp_path):
    big = model / "large.dat"  # beside a complete model, a file that takes a while to copy
    with open(big, "wb") as f:
        f.truncate(2 << 30)
    client = subprocess.Popen([sys.executable, "-m", "zoo", "import", str(model), "--name", "killed"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tmp = daemon.home / "tmp"
    mine = f"{HOST}.{daemon.proc.pid}."
    wait_until(lambda: tmp_bytes(daemon.home) > 0 or client.poll() is not None, 120)  # the daemon is copying
    daemon.kill()  # kill -9 mid-import
    _, err = client.communicate(timeout=60)
    left = [p for p in tmp.iterdir() if p.name.startswith(mine)]
    assert left and tmp_bytes(daemon.home) > 0, err  # a staging folder with a partial copy
    # a dead process's partial download stays for the next pull to resume
    part = tmp / f"{HOST}.{dead_pid()}.0123456789ab.{'e' * 40}.part"
    part.write_bytes(b"x" * 1000)
    daemon.start()
    assert not [p for p in tmp.iterdir() if p.name.startswith(mine)], list(tmp.iterdir())
    assert part.exists() and tmp_bytes(daemon.home) == 1000
    assert "removed 1 temporaries of processes that are gone" in daemon.log.read_text()
    assert daemon.stop() == 0


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_drop_folder_files_are_opened_inside_the_folder_only(tmp_path):
    """The drop folder reader: symlinks that stay inside (relative, absolute, chained, from a subfolder) are
    read through; one that leaves the folder, or a FIFO, is refused without being opened."""
    from zoo.daemon.ingest import open_drop_folder
    from zoo.errors import CorruptCheckpointError

    folder = tmp_path / "m"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "w.bin").write_bytes(b"12345")
    (folder / "abs.json").symlink_to(folder / "config.json")
    (folder / "rel.bin").symlink_to("sub/w.bin")
    (folder / "chain").symlink_to("rel.bin")
    (folder / "sub" / "up.json").symlink_to("../config.json")
    (folder / "dirlink").symlink_to("sub")  # a folder: not part of a version, as for imports
    opened = open_drop_folder(folder)
    try:
        assert [(rel, os.pread(fd, 10, 0)) for rel, fd, _ in opened] == [
            ("abs.json", b"{}"), ("chain", b"12345"), ("config.json", b"{}"), ("rel.bin", b"12345"),
            ("sub/up.json", b"{}"), ("sub/w.bin", b"12345")]
    finally:
        for _, fd, _ in opened:
            os.close(fd)
    for name, make in (("out", lambda p: p.symlink_to("/etc/passwd")), ("out2", lambda p: p.symlink_to("../x/../..")),
                       ("fifo", os.mkfifo)):
        make(folder / name)
        with pytest.raises(CorruptCheckpointError, match="outside the drop folder|not a regular file"):
            open_drop_folder(folder)
        (folder / name).unlink()
