"""What a user is told when the daemon cannot serve: a missing extra, a socket left by a daemon that is gone,
a daemon already serving, a request that is not one. A real `zoo daemon` process and the `zoo` command."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import TINY_BERT
from test_daemon import DaemonProcess

# `zoo` as the console script runs it, with the daemon extra's packages made unimportable
WITHOUT = textwrap.dedent("""
    import sys
    for name in sys.argv[1].split(","):
        sys.modules[name] = None  # import name -> ModuleNotFoundError, as without the package
    from zoo.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def zoo_cli(*args: str, blocked: str = "", timeout: int = 120, **env: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", WITHOUT, blocked, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **env})


@pytest.mark.parametrize("flag, value, blocked", [
    ("--watch", "drop", "watchdog"),
    ("--http", "127.0.0.1:0", "aiohttp"),
])
def test_daemon_without_the_extra_names_the_install_and_creates_nothing(tmp_path, flag, value, blocked):
    home = tmp_path / "store"
    (tmp_path / "drop").mkdir()
    value = str(tmp_path / value) if flag == "--watch" else value
    result = zoo_cli("daemon", "--store", str(home), flag, value, blocked=blocked)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zoo: error:"), result.stderr
    assert "pip install 'zoo-registry[daemon]'" in lines[0] and blocked in lines[0]
    assert not home.exists()  # no store, no socket: later writes are not sent to a daemon that never ran


def write_stale_socket(path: Path) -> None:
    """A socket file nobody listens on, as a daemon killed with -9 leaves it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", f"import socket; s = socket.socket(socket.AF_UNIX); s.bind({str(path)!r})"],
                   check=True)
    assert path.is_socket()


def saved_dir(tmp_path: Path) -> Path:
    import zoo

    return zoo.save(zoo.build(TINY_BERT), tmp_path / "saved")


def test_a_stale_socket_is_named_with_how_to_clear_it(tmp_path):
    home = Path(os.environ["ZOO_HOME"])
    sock = home / "daemon.sock"
    write_stale_socket(sock)
    result = zoo_cli("import", str(saved_dir(tmp_path)), "--name", "x")
    assert result.returncode == 2
    message = result.stderr
    assert "nobody listens" in message and f"rm {sock}" in message and "zoo daemon" in message, message
    sock.unlink()  # the fix it names works: the store is written directly
    assert zoo_cli("import", str(saved_dir(tmp_path)), "--name", "x").returncode == 0


def test_a_starting_daemon_takes_over_a_stale_socket_and_refuses_a_live_one(tmp_path):
    home = Path(os.environ["ZOO_HOME"])
    write_stale_socket(home / "daemon.sock")
    first = DaemonProcess(home).start()  # the socket of a daemon that is gone: removed, served again
    try:
        second = subprocess.run([sys.executable, "-m", "zoo", "daemon", "--store", str(home)],
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 2 and "already serves" in second.stderr, second.stderr
        result = zoo_cli("daemon", "status", "--json", "--store", str(home))
        assert json.loads(result.stdout)["pid"] == first.proc.pid  # the first one still answers
    finally:
        assert first.stop() == 0, first.log.read_text()


def test_garbage_on_the_socket_gets_an_error_line(tmp_path):
    home = Path(os.environ["ZOO_HOME"])
    d = DaemonProcess(home).start()
    try:
        for garbage in (b"GET / HTTP/1.1\r\n\r\n", b"[1, 2]\n", b"\xff\xfe\n"):
            with socket.socket(socket.AF_UNIX) as conn:
                conn.settimeout(30)
                conn.connect(str(home / "daemon.sock"))
                conn.sendall(garbage)
                reply = conn.makefile("rb").readline()
            error = json.loads(reply)["error"]
            assert error["type"] == "InvalidArgumentError" and "not a zoo daemon request" in error["message"]
        assert d.log.read_text().count("not a request, answered with an error") == 3
    finally:
        assert d.stop() == 0, d.log.read_text()


def test_the_scrub_rate_is_a_flag_of_the_daemon(tmp_path):
    home = Path(os.environ["ZOO_HOME"])
    bad = subprocess.run([sys.executable, "-m", "zoo", "daemon", "--store", str(home), "--scrub-rate", "fast"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--scrub-rate 'fast': expected megabytes a second" in bad.stderr, bad.stderr
    assert not (home / "daemon.sock").exists()
    d = DaemonProcess(home, args=("--scrub-rate", "0.5")).start()
    try:
        status = json.loads(zoo_cli("daemon", "status", "--json", "--store", str(home)).stdout)
        assert status["scrub"]["rate_mb_s"] == 0.5
    finally:
        assert d.stop() == 0, d.log.read_text()
