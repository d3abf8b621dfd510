"""A root daemon serving a group, attacked by its members and by a local user outside the group (real unix
users made by the test, a real `zoo daemon` process, the `zoo` command and drop folders).

- a member's drop folder never makes the daemon read a file the member could not (a symlink in place, or
  swapped in while the daemon copies);
- a store served with --group is closed to other local users (and a daemon refuses one that is open);
- a user outside the group is told that, and whom to ask, not "the daemon does not answer".
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import zoo
from conftest import TINY_BERT
from test_multi_user import as_user, users  # noqa: F401  (users: the fixture)
from zoo.store import Store
from zoo.daemon.client import DaemonStore

SECRET = b"TOP SECRET: only root may read this\n"


class RootDaemon:
    """`zoo daemon --group GROUP` as root, as systemd runs it."""

    def __init__(self, store: Path, group: str, *args: str, sock: Path | None = None) -> None:
        self.store, self.sock = store, sock or store / "daemon.sock"
        self.log = store.parent / f"{store.name}-daemon.log"
        extra = ("--socket", str(sock)) if sock else ()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zoo", "daemon", "--store", str(store), "--group", group, *extra, *args],
            env={**os.environ, "ZOO_HOME": str(store)}, stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(str(self.sock))
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"the daemon did not start: {self.log.read_text()}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=60) == 0, self.log.read_text()


@pytest.fixture
def base(users):
    path = Path(tempfile.mkdtemp(prefix="security-", dir=users["base"]))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def secret(base):
    path = base / "root-only"
    path.write_bytes(SECRET)
    os.chmod(path, 0o600)
    return path


def holds_secret(store: Path) -> list[str]:
    return [str(p) for p in store.rglob("*") if p.is_file() and not p.is_symlink() and SECRET in p.read_bytes()]


def drop_folder(base: Path, users: dict, name: str) -> tuple[Path, Path]:
    """A drop root the group writes (2775), and in it a folder of member a with a small model, a large file
    sorted before the rest, and a small zz.txt."""
    root = base / "drop"
    root.mkdir()
    os.chown(root, 0, grp.getgrnam(users["group"]).gr_gid)
    os.chmod(root, 0o2775)
    staging = base / f".{name}"
    zoo.save(zoo.build(TINY_BERT), staging)
    with open(staging / "aaa-large.bin", "wb") as f:
        f.truncate(0)
        block = os.urandom(1 << 20)
        for _ in range(512):  # 512 MiB: the daemon copies it for a while
            f.write(block)
    (staging / "zz.txt").write_text("a small note\n")
    a = pwd.getpwnam(users["a"].name)
    for p in [staging, *staging.rglob("*")]:
        os.chown(p, a.pw_uid, a.pw_gid)
    return root, staging


def as_a(users: dict, *cmd: str) -> None:
    subprocess.run(list(cmd), user=users["a"].name, group=users["a"].group, check=True, capture_output=True)


def wait_for(condition, seconds: float = 120, every: float = 0.001):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(every)
    return None


@pytest.mark.slow
def test_a_symlink_swapped_in_during_the_copy_is_never_read(users, base, secret):
    store = base / "store"
    root, staging = drop_folder(base, users, "m")
    d = RootDaemon(store, users["group"], "--watch", str(base / "drop"), "--quiet-period", "60")
    try:
        os.rename(staging, root / "m")
        as_a(users, "touch", str(root / "m" / ".zoo-ready"))  # complete: the daemon starts at once
        # the moment the daemon writes its copy, the member swaps zz.txt for a symlink to a root-only file
        assert wait_for(lambda: any((store / "tmp").iterdir()) if (store / "tmp").is_dir() else False)
        as_a(users, "ln", "-sfn", str(secret), str(root / "m" / "zz.txt"))
        version = wait_for(lambda: Store(store).find("local/m"), every=0.05)
        assert version is not None, d.log.read_text()
        time.sleep(1)  # the watcher sees the swap: refused, never a second version
        assert [v.name for v in Store(store).versions("local/m")] == ["v1"]
        note = next(e for e in version.files if e.path == "zz.txt")
        assert Store(store).object_path(note.sha256).read_bytes() == b"a small note\n"
        assert holds_secret(store) == []
    finally:
        d.stop()


@pytest.mark.slow
def test_a_symlink_out_of_the_drop_folder_is_refused(users, base, secret):
    store = base / "store"
    root, staging = drop_folder(base, users, "n")
    (staging / "aaa-large.bin").unlink()
    os.symlink(str(secret), staging / "zz.txt.link")
    os.lchown(staging / "zz.txt.link", pwd.getpwnam(users["a"].name).pw_uid, -1)
    d = RootDaemon(store, users["group"], "--watch", str(root), "--quiet-period", "60")
    try:
        os.rename(staging, root / "n")
        as_a(users, "touch", str(root / "n" / ".zoo-ready"))
        state = wait_for(lambda: next((f for f in DaemonStore(store, sock=d.sock).status()["drop_folders"]
                                       if f["name"] == "n" and f["state"] == "refused"), None), every=0.1)
        assert state and "outside the drop folder" in state["reason"], DaemonStore(store).status()
        assert Store(store).find("local/n") is None and holds_secret(store) == []
    finally:
        d.stop()


@pytest.mark.slow
def test_a_group_store_is_closed_to_other_users(users, base, tmp_path):
    store = base / "new-store"  # not there yet: the daemon makes it
    d = RootDaemon(store, users["group"])
    try:
        version = DaemonStore(store, sock=d.sock).import_dir(zoo.save(zoo.build(TINY_BERT), tmp_path / "m"), "m")
        mode = store.stat().st_mode
        assert mode & 0o007 == 0 and store.stat().st_gid == grp.getgrnam(users["group"]).gr_gid, stat.filemode(mode)
        weights = Store(store).object_path(next(e.sha256 for e in version.files if e.path == "model.safetensors"))
        outsider = as_user(users, "c", store, f"open({str(weights)!r}, 'rb').read()")
        assert outsider.returncode != 0 and "PermissionError" in outsider.stderr, outsider.stdout
        member = as_user(users, "a", store, f"print(len(open({str(weights)!r}, 'rb').read()))")
        assert member.returncode == 0 and int(member.stdout) == weights.stat().st_size, member.stderr
    finally:
        d.stop()


@pytest.mark.slow
def test_a_daemon_refuses_a_group_store_that_others_can_read(users, base):
    store = base / "open-store"
    store.mkdir(mode=0o755)
    os.chmod(store, 0o755)
    result = subprocess.run([sys.executable, "-m", "zoo", "daemon", "--store", str(store), "--group", users["group"]],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "ZOO_HOME": str(store)})
    assert result.returncode == 2, result.stderr
    assert f"chmod o-rwx {store}" in result.stderr and "zoo: error:" in result.stderr
    assert list(store.iterdir()) == []  # nothing made in it, no socket


@pytest.mark.slow
def test_a_user_outside_the_group_is_told_so_and_whom_to_ask(users, base):
    store = base / "store"
    sockets = base / "run"
    sockets.mkdir(mode=0o755)
    d = RootDaemon(store, users["group"], sock=sockets / "zoo.sock")
    try:
        result = as_user(users, "c", store, "import os, sys\nos.environ['ZOO_DAEMON'] = sys.argv[1]\n"
                         "from zoo.cli import main\nsys.exit(main(['gc']))", str(sockets / "zoo.sock"))
        assert result.returncode == 2, result.stderr
        message = result.stderr
        assert "does not answer" not in message and "Start it" not in message, message
        assert "not in it" in message and repr(users["group"]) in message and "ask root" in message, message
        assert f"usermod -aG {users['group']} {users['c'].name}" in message, message
    finally:
        d.stop()
