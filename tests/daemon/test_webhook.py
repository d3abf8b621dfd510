"""``zoo daemon --webhook URL --webhook-secret FILE`` as a receiver meets it: a real HTTP server on loopback that
checks each body's HMAC-SHA256 (computed here, as a receiver would, not with zoo's code), a real daemon, the
``zoo`` command. Events arrive signed and in order; a receiver that is down, answers 500 or is slow loses no
event and delays no change; the queue's bound drops, logs and counts; bad settings are refused."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from zoo.store import Store

from event_plugins import saved_folder, wait_until, zoo_cli
from test_daemon import DaemonProcess

SECRET = "s3cret-of-the-team-0123456789"


class Receiver:
    """A webhook receiver on 127.0.0.1: checks the signature of every request; answers 500 to the first
    ``fail`` requests; while ``hold`` is clear, keeps each request waiting before it answers."""

    def __init__(self, port: int = 0, *, fail: int = 0, hold: bool = False) -> None:
        self.fail = fail
        self.attempts: list[dict] = []  # every request, answered or not
        self.events: list[dict] = []  # the bodies of requests answered 200, in order
        self.held = 0  # requests waiting for release()
        self.released = threading.Event()
        if not hold:
            self.released.set()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                attempt = {"body": body, "headers": dict(self.headers), "path": self.path,
                           "valid": hmac.compare_digest(expected, self.headers.get("X-Zoo-Signature", ""))}
                with receiver.lock:
                    receiver.attempts.append(attempt)
                    failing = len(receiver.attempts) <= receiver.fail
                    receiver.held += 1
                receiver.released.wait(60)
                with receiver.lock:
                    receiver.held -= 1
                    status = 500 if failing else 200 if attempt["valid"] else 401
                    if status == 200:
                        receiver.events.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/zoo"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def secret_file(tmp_path) -> Path:
    path = tmp_path / "webhook.secret"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    return path


def start_daemon(url: str, secret_file: Path, *args: str) -> DaemonProcess:
    return DaemonProcess(Path(os.environ["ZOO_HOME"]), args=("--webhook", url, "--webhook-secret", str(secret_file),
                                                            *args)).start()


def status() -> dict:
    result = subprocess.run([sys.executable, "-m", "zoo", "daemon", "status", "--json"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["webhook"]


def make_events(tmp_path: Path) -> list[tuple[str, str | None]]:
    """Through the daemon: two imports, an alias set and moved, labels set, the alias removed, a version
    removed. Returns (event, version) as they must arrive."""
    zoo_cli({}, "import", str(saved_folder(tmp_path / "a", 1)), "--name", "hooked")
    zoo_cli({}, "import", str(saved_folder(tmp_path / "b", 2)), "--name", "hooked")
    zoo_cli({}, "tag", "hooked", "prod")
    zoo_cli({}, "tag", "hooked@v1", "prod")
    zoo_cli({}, "label", "hooked@v1", "team=search")
    zoo_cli({}, "untag", "hooked", "prod")
    zoo_cli({}, "rm", "hooked@v2")
    return [("version_created", "v1"), ("version_created", "v2"), ("alias_moved", "v2"), ("alias_moved", "v1"),
            ("labels_changed", "v1"), ("alias_moved", None), ("version_removed", "v2")]


@pytest.mark.slow
def test_events_arrive_signed_and_in_order(tmp_path, secret_file):
    receiver = Receiver()
    daemon = start_daemon(receiver.url, secret_file)
    try:
        expected = make_events(tmp_path)
        wait_until(lambda: len(receiver.events) == len(expected), 30)
        assert [(e["event"], e["version"]) for e in receiver.events] == expected
        assert all(a["valid"] for a in receiver.attempts) and len(receiver.attempts) == len(expected)
        v1 = Store(daemon.home).versions("local/hooked")[0]
        first = receiver.events[0]
        assert (first["name"], first["repo"], first["id"]) == ("hooked", "local/hooked", v1.id)
        assert first["who"]["uid"] == os.getuid() and first["source"].startswith("import:")
        assert receiver.events[3]["alias"] == "prod" and receiver.events[3]["previous"] == "v2"
        assert receiver.events[6]["reason"] == "removed"
        for attempt, event in zip(receiver.attempts, receiver.events):
            headers = attempt["headers"]
            assert headers["Content-Type"] == "application/json" and headers["X-Zoo-Event"] == event["event"]
            assert attempt["path"] == "/hooks/zoo"
        assert len({a["headers"]["X-Zoo-Delivery"] for a in receiver.attempts}) == len(expected)
        state = status()
        assert state == {"url": receiver.url, "delivered": len(expected), "failed": 0, "retrying": 0, "queued": 0,
                         "dropped": 0, "last_error": None}
    finally:
        assert daemon.stop() == 0, daemon.log.read_text()[-3000:]
        receiver.stop()
    assert SECRET not in daemon.log.read_text()


@pytest.mark.slow
def test_a_receiver_that_is_down_at_first_gets_every_event(tmp_path, secret_file):
    port = free_port()  # nothing listens there yet
    daemon = start_daemon(f"http://127.0.0.1:{port}/hooks/zoo", secret_file)
    receiver = None
    try:
        expected = make_events(tmp_path)
        assert [v.name for v in Store(daemon.home).versions("local/hooked")] == ["v1"]  # nothing waited
        wait_until(lambda: status()["failed"] >= 2, 30)
        down = status()
        assert down["delivered"] == 0 and down["retrying"] >= 2 and down["queued"] == len(expected) - 1
        assert "Connection refused" in down["last_error"]
        receiver = Receiver(port)
        wait_until(lambda: len(receiver.events) == len(expected), 60)
        assert [(e["event"], e["version"]) for e in receiver.events] == expected  # every one, in order
        assert all(a["valid"] for a in receiver.attempts)
        up = status()
        assert up["delivered"] == len(expected) and up["retrying"] == 0 and up["dropped"] == 0
    finally:
        assert daemon.stop() == 0, daemon.log.read_text()[-3000:]
        if receiver is not None:
            receiver.stop()
    assert "version_created of hooked@v1 not delivered (" in daemon.log.read_text()


@pytest.mark.slow
def test_a_receiver_that_answers_500_then_200(tmp_path, secret_file):
    receiver = Receiver(fail=2)
    daemon = start_daemon(receiver.url, secret_file)
    try:
        zoo_cli({}, "import", str(saved_folder(tmp_path / "a", 1)), "--name", "flaky")
        zoo_cli({}, "tag", "flaky", "prod")
        wait_until(lambda: len(receiver.events) == 2, 30)
        assert [e["event"] for e in receiver.events] == ["version_created", "alias_moved"]
        assert len(receiver.attempts) == 4  # the first event three times (500, 500, 200), the second once
        deliveries = [a["headers"]["X-Zoo-Delivery"] for a in receiver.attempts]
        assert deliveries[0] == deliveries[1] == deliveries[2] != deliveries[3]  # a retry is the same delivery
        assert receiver.attempts[0]["body"] == receiver.attempts[2]["body"]
        state = status()
        assert (state["delivered"], state["failed"], state["retrying"]) == (2, 2, 0)
        assert state["last_error"].startswith("HTTP 500")
    finally:
        assert daemon.stop() == 0, daemon.log.read_text()[-3000:]
        receiver.stop()
    log = daemon.log.read_text()
    assert "version_created of flaky@v1 not delivered (HTTP 500" in log
    assert "version_created of flaky@v1 delivered after 2 failed attempt(s)" in log


@pytest.mark.slow
def test_a_slow_receiver_delays_no_import(tmp_path, secret_file):
    receiver = Receiver(hold=True)  # answers nothing until released
    daemon = start_daemon(receiver.url, secret_file)
    try:
        folder = saved_folder(tmp_path / "a", 1)
        zoo_cli({}, "import", str(folder), "--name", "slow")
        wait_until(lambda: receiver.held == 1, 10)
        zoo_cli({}, "import", str(saved_folder(tmp_path / "b", 2)), "--name", "slow")
        zoo_cli({}, "tag", "slow", "prod")
        assert receiver.held == 1 and not receiver.events  # the receiver still holds the first event
        assert [v.name for v in Store(daemon.home).versions("local/slow")] == ["v1", "v2"]
        wait_until(lambda: status()["queued"] == 2, 10)  # handed over from the store's thread to the webhook's
        assert status()["queued"] == 2
        receiver.released.set()
        wait_until(lambda: len(receiver.events) == 3, 30)
        assert [(e["event"], e["version"]) for e in receiver.events] == [
            ("version_created", "v1"), ("version_created", "v2"), ("alias_moved", "v2")]
    finally:
        assert daemon.stop() == 0, daemon.log.read_text()[-3000:]
        receiver.stop()


@pytest.mark.slow
def test_the_queue_bound_drops_logs_and_counts(tmp_path, secret_file):
    receiver = Receiver(hold=True)
    daemon = start_daemon(receiver.url, secret_file, "--webhook-queue", "2")
    try:
        zoo_cli({}, "import", str(saved_folder(tmp_path / "a", 1)), "--name", "busy")
        wait_until(lambda: receiver.held == 1, 10)  # v1's event is being delivered: the queue is empty
        for alias in ("a1", "a2", "a3", "a4"):
            zoo_cli({}, "tag", "busy", alias)  # a1 and a2 wait in the queue; a3 and a4 find it full
        wait_until(lambda: status()["dropped"] == 2, 10)
        state = status()
        assert (state["queued"], state["dropped"], state["delivered"]) == (2, 2, 0)
        receiver.released.set()
        wait_until(lambda: len(receiver.events) == 3, 30)
        time.sleep(0.5)  # nothing more comes
        assert [(e["event"], e.get("alias")) for e in receiver.events] == [
            ("version_created", None), ("alias_moved", "a1"), ("alias_moved", "a2")]
        assert status()["delivered"] == 3 and status()["dropped"] == 2
        assert sorted(Store(daemon.home).marks("local/busy").aliases) == ["a1", "a2", "a3", "a4"]  # all changed
    finally:
        assert daemon.stop() == 0, daemon.log.read_text()[-3000:]
        receiver.stop()
    log = daemon.log.read_text()
    assert "alias_moved of busy@v1 dropped: 2 events wait for the receiver (1 dropped" in log
    assert "(2 dropped since the daemon started)" in log


@pytest.mark.slow
def test_events_the_daemon_could_not_deliver_when_it_stops_are_logged(tmp_path, secret_file):
    daemon = start_daemon(f"http://127.0.0.1:{free_port()}/hooks/zoo", secret_file)  # nobody listens
    zoo_cli({}, "import", str(saved_folder(tmp_path / "a", 1)), "--name", "late")
    zoo_cli({}, "tag", "late", "prod")
    wait_until(lambda: status()["failed"] >= 1, 10)
    started = time.monotonic()
    assert daemon.stop() == 0, daemon.log.read_text()[-3000:]
    assert time.monotonic() - started < 15  # the queue is given 5 s, then the daemon goes
    log = daemon.log.read_text()
    assert "2 event(s) not delivered: the daemon stops ([Errno 111] Connection refused)" in log, log[-2000:]


@pytest.mark.parametrize("flags, mode, content, message", [
    (("--webhook-secret", "{secret}"), 0o600, SECRET, "--webhook URL and --webhook-secret FILE go together"),
    (("--webhook", "http://127.0.0.1:9/x"), 0o600, SECRET, "--webhook URL and --webhook-secret FILE go together"),
    (("--webhook", "http://127.0.0.1:9/x", "--webhook-secret", "{secret}"), 0o644, SECRET,
     "is readable or writable by every user (mode 0644); chmod 600"),
    (("--webhook", "http://127.0.0.1:9/x", "--webhook-secret", "{secret}"), 0o600, "short\n",
     "has 5 characters, too few to be secret"),
    (("--webhook", "http://127.0.0.1:9/x", "--webhook-secret", "{missing}"), 0o600, SECRET,
     "cannot read the webhook secret file"),
    (("--webhook", "ftp://example.com/x", "--webhook-secret", "{secret}"), 0o600, SECRET,
     "is not an http:// or https:// URL"),
    (("--webhook", "http://127.0.0.1:9/x", "--webhook-secret", "{secret}", "--webhook-queue", "0"), 0o600, SECRET,
     "--webhook-queue must be at least 1"),
])
def test_bad_webhook_settings_are_refused_before_the_daemon_starts(tmp_path, flags, mode, content, message):
    secret = tmp_path / "secret"
    secret.write_text(content)
    secret.chmod(mode)
    args = [f.format(secret=secret, missing=tmp_path / "nope") for f in flags]
    result = subprocess.run([sys.executable, "-m", "zoo", "daemon", "--store", str(tmp_path / "s"), *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "s" / "daemon.sock").exists()
