"""Bad input on the hub protocol, sent as is (raw sockets, no client library to tidy it) to a real
``zoo daemon --http``: ``Range`` headers with thousands of digits, repository names no file system could
hold (over 255 bytes) and NULs anywhere a name is accepted. Each gets a 2xx/4xx answer of the hub's kind
(RFC 9110 for ranges: 416, or the whole file), never a 500, and no traceback in the daemon's log."""

from __future__ import annotations

import socket
import time

import pytest

from http_daemon import HttpDaemon

REPO = "sentence-transformers/all-MiniLM-L6-v2"
SMALL = f"/{REPO}/resolve/main/config.json"


def request(port: int, path: str, headers: str = "", method: str = "GET") -> tuple[int, dict, bytes]:
    data = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n".encode()
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(data)
        while chunk := s.recv(1 << 16):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), fields, body


@pytest.fixture(scope="module")
def served(hub, tmp_path_factory):
    d = HttpDaemon(tmp_path_factory.mktemp("bad-input") / "store", upstream=hub.endpoint).start()
    assert request(d.port, SMALL)[0] == 200
    yield d
    assert d.stop() == 0
    log = d.log.read_text()
    assert "Traceback" not in log, log[-5000:]


@pytest.mark.parametrize("header, status, body", [
    ("bytes=" + "9" * 4301 + "-", 416, None),  # starts past the end of every file
    ("bytes=" + "1" + "0" * 6000 + "-", 416, None),
    ("bytes=0-" + "9" * 5000, 200, "whole"),  # a last position past the end: up to the end (206 of all)
    ("bytes=-" + "9" * 5000, 200, "whole"),  # a suffix longer than the file: all of it
    ("bytes=5-" + "1" + "0" * 5000, 206, slice(5, None)),
    ("bytes=" + "0" * 5000 + "3-9", 206, slice(3, 10)),
])
def test_ranges_with_thousands_of_digits(served, minilm_dir, header, status, body):
    config = (minilm_dir / "config.json").read_bytes()
    before = served.log.read_text()
    got, headers, data = request(served.port, SMALL, f"Range: {header}\r\n")
    if status == 416:
        assert got == 416 and headers["content-range"] == f"bytes */{len(config)}", (got, headers)
    elif body == "whole":
        assert got in (200, 206) and data == config, (got, headers)
    else:
        assert got == status and data == config[body], (got, headers, data[:100])
    time.sleep(0.1)
    added = served.log.read_text()[len(before):]
    assert "Traceback" not in added and " 500" not in added, added[-3000:]


LONG = "a" * 300
NAME_PATHS = [
    f"/{LONG}/resolve/main/config.json", f"/org/{LONG}/resolve/main/config.json",
    f"/{REPO}/resolve/{LONG}/config.json", f"/api/models/{LONG}", f"/api/models/org/{LONG}/revision/main",
    f"/api/models/{REPO}/revision/{LONG}", f"/api/models/{LONG}/tree/main", f"/local/{LONG}/resolve/main/x",
    f"/{REPO}/resolve/main/{LONG}", f"/{REPO}/resolve/main/{LONG}/{LONG}",
    "/org/a%00b/resolve/main/config.json", f"/{REPO}/resolve/ma%00in/config.json",
    f"/{REPO}/resolve/main/config%00.json", "/api/models/org/a%00b", f"/api/models/{REPO}/revision/v%001",
    "/local/a%00b/resolve/main/config.json",
]


@pytest.mark.parametrize("path", NAME_PATHS)
def test_impossible_names_over_http(served, path):
    before = served.log.read_text()
    got, headers, body = request(served.port, path)
    assert got in (400, 404), (got, headers, body[:300])
    if got == 404:
        assert headers.get("x-error-code") in ("RepoNotFound", "RevisionNotFound", "EntryNotFound"), headers
    time.sleep(0.1)
    added = served.log.read_text()[len(before):]
    assert "Traceback" not in added and "File name too long" not in added, added[-3000:]
    assert request(served.port, SMALL)[0] == 200
