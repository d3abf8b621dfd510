"""zoo's hub client against a hostile or broken server: bounded bodies, timeouts, stalls, pagination,
names, and one clear message (no HTTP library internals) for each failure.

The server here is written for the purpose: it speaks just enough of the hub protocol
(/work/shared/hub-server.md) and misbehaves in the way each test asks. Every loop in it is bounded, so a
client without the fix fails the test instead of hanging it.
"""

from __future__ import annotations

import hashlib
import os
import json
import re
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from zoo.store import hub
from zoo.store.writer import Store
from zoo.errors import IntegrityError, InvalidNameError, RemoteError

REPO = "acme/tiny"
COMMIT = "c" * 40
CONFIG = json.dumps({"model_type": "bert", "hidden_size": 4}).encode()
def _safetensors(total: int) -> bytes:
    """A valid safetensors file of ``total`` bytes (one U8 tensor of varied bytes): pulls check it as loads do."""
    n = total - 8 - 80
    header = json.dumps({"w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode().ljust(80)
    return struct.pack("<Q", len(header)) + header + (bytes(range(256)) * (n // 256 + 1))[:n]


WEIGHTS = _safetensors(4096)  # listed as an LFS file
HALF = len(WEIGHTS) // 2
SERVER_CAP = 64 << 20  # the most any endless body sends: a client without the fix ends, but wrongly
MAX_HANG = 8.0  # the longest the server keeps a request waiting (until the test ends)


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Hostile(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = {"config.json": CONFIG, "model.safetensors": WEIGHTS}
        self.names = {"config.json": "config.json", "model.safetensors": "model.safetensors"}
        self.mode: dict[str, str] = {}  # "revision" / "tree" / a file name -> how it misbehaves
        self.log: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.sent = 0  # bytes of file bodies written
        self.stop = threading.Event()
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def requests(self, part: str) -> list[tuple[str, str, str | None]]:
        return [r for r in self.log if part in r[1]]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: Hostile

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _endless(self, status: int, headers: dict[str, str]) -> None:
        """Headers, then bytes until the client hangs up (at most SERVER_CAP), no Content-Length."""
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Connection", "close")
        self.end_headers()
        block = b"\0" * 65536
        try:
            for _ in range(SERVER_CAP // len(block)):
                self.wfile.write(block)
                with self.server.lock:
                    self.server.sent += len(block)
        except OSError:
            pass
        self.close_connection = True

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        srv = self.server
        with srv.lock:
            srv.log.append((self.command, self.path, self.headers.get("Range")))
        path = self.path.split("?")[0]
        if m := re.fullmatch(r"/api/models/(.+)/revision/([^/]+)", path):
            mode = srv.mode.get("revision")
            if mode == "hang":
                srv.stop.wait(MAX_HANG)
                self.close_connection = True
                return
            if mode == "endless_error":
                return self._endless(500, {"Content-Type": "application/json"})
            return self._send(200, json.dumps({"id": m.group(1), "sha": COMMIT}).encode(),
                              {"Content-Type": "application/json"})
        if re.fullmatch(r"/api/models/(.+)/tree/([^/]+)", path):
            entries = [{"type": "file", "path": srv.names[name], "size": len(data), "oid": _git_sha1(data),
                        **({"lfs": {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 130}}
                           if name.endswith(".safetensors") else {})}
                       for name, data in srv.files.items()]
            headers = {"Content-Type": "application/json"}
            pages = len(srv.requests("/tree/"))
            if pages < 50:  # bounded: a client that follows forever gets a last page after 50
                if srv.mode.get("tree") == "self_link":
                    headers["Link"] = f'<{srv.endpoint}{self.path}>; rel="next"'
                elif srv.mode.get("tree") == "endless_pages":
                    headers["Link"] = f'<{srv.endpoint}{path}?recursive=true&cursor={pages}>; rel="next"'
            return self._send(200, json.dumps(entries).encode(), headers)
        if m := re.fullmatch(rf"/{re.escape(REPO)}/resolve/{COMMIT}/(.+)", path):
            return self._file(m.group(1))
        self._send(404, b'{"error": "no"}', {"X-Error-Code": "RepoNotFound"})

    def _file(self, name: str) -> None:
        srv = self.server
        data = srv.files[name]
        mode = srv.mode.get(name, "normal")
        start = 0
        if (rng := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")) and mode != "endless":
            start = int(rng.group(1))
        status = 206 if start else 200
        headers = {"ETag": f'"{hashlib.sha256(data).hexdigest()}"', "X-Repo-Commit": COMMIT}
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        if mode == "endless":
            return self._endless(200, headers)
        if mode == "hang":
            srv.stop.wait(MAX_HANG)
            self.close_connection = True
            return
        body = data[start:]
        if mode == "long":  # announces and sends 100 bytes more than listed
            body += b"\0" * 100
        if self.command == "HEAD":
            return self._send(status, b"", headers)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            if mode == "cut":  # never sends past the first half, then hangs up
                self.wfile.write(body[:max(0, HALF - start)])
                self.close_connection = True
            elif mode == "trickle":  # one byte every 0.1 s, at most 100 of them
                for byte in body[:100]:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    if srv.stop.wait(0.1):
                        break
                self.close_connection = True
            elif mode == "stall_once":  # the first answer stops at half and goes silent; later ones work
                srv.mode[name] = "normal"
                self.wfile.write(body[:HALF])
                self.wfile.flush()
                srv.stop.wait(MAX_HANG)
                self.close_connection = True
            else:
                self.wfile.write(body)
            with srv.lock:
                srv.sent += len(body)
        except OSError:
            self.close_connection = True


@pytest.fixture
def server(monkeypatch):
    srv = Hostile()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", srv.endpoint)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "1")
    try:
        yield srv
    finally:
        srv.stop.set()
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def _parts(store: Store) -> list[Path]:
    return sorted(Path(store.home).rglob("*.part"))


def _remote(name: str, data: bytes) -> hub.RemoteFile:
    lfs = name.endswith(".safetensors")
    return hub.RemoteFile(name, len(data), hashlib.sha256(data).hexdigest() if lfs else None, _git_sha1(data))


def test_the_server_works(server, tmp_path):
    store = Store(tmp_path / "store")
    version = store.pull(REPO)
    assert {f.path for f in version.files} == {"config.json", "model.safetensors"}
    assert _parts(store) == []


# -- item 5: more bytes than listed --------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["endless", "long"])
def test_a_body_longer_than_listed_stops_there_and_leaves_nothing(server, tmp_path, mode):
    server.mode["model.safetensors"] = mode
    store = Store(tmp_path / "store")
    started = time.monotonic()
    with pytest.raises(IntegrityError, match=r"more than the 4096 bytes it lists.*removed the partial file"):
        store.pull(REPO)
    assert time.monotonic() - started < 5
    assert server.sent < 16 << 20  # the client hung up; it did not take the server's 64 MiB
    assert _parts(store) == [] and store.versions(REPO) == []
    assert len(server.requests("/model.safetensors")) == 1  # an over-long file is not retried


def test_download_removes_an_over_long_partial(server, tmp_path):
    server.mode["model.safetensors"] = "endless"
    dest = tmp_path / "x.part"
    dest.write_bytes(WEIGHTS[:100])  # a partial from before: the server ignores the Range
    with pytest.raises(IntegrityError) as err:
        hub.download(REPO, COMMIT, _remote("model.safetensors", WEIGHTS), dest, lambda n: None)
    assert not dest.exists()
    assert err.value.__cause__ is None


# -- item 6: hangs -------------------------------------------------------------------------------------

def test_a_metadata_request_that_never_answers_times_out(server, tmp_path):
    server.mode["revision"] = "hang"
    started = time.monotonic()
    with pytest.raises(RemoteError, match=r"did not answer within 1 s \(HF_HUB_ETAG_TIMEOUT\)"):
        Store(tmp_path / "store").pull(REPO)
    assert time.monotonic() - started < 4


def test_timeouts_are_read_at_call_time(server, monkeypatch):
    server.mode["revision"] = "hang"
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "0.3")
    started = time.monotonic()
    with pytest.raises(RemoteError, match=r"within 0.3 s"):
        hub.fetch_revision(REPO, "main")
    assert time.monotonic() - started < 2


def test_an_endless_error_answer_is_bounded(server, monkeypatch):
    server.mode["revision"] = "endless_error"
    monkeypatch.setattr(hub, "META_LIMIT", 1 << 20)
    with pytest.raises(RemoteError, match=r"more than 1 MiB"):
        hub.fetch_revision(REPO, "main")
    assert server.sent < 16 << 20


def test_a_next_page_that_points_to_itself_is_refused(server):
    server.mode["tree"] = "self_link"
    with pytest.raises(RemoteError, match=r"links back to a page it already sent"):
        hub.fetch_revision(REPO, "main")
    assert len(server.requests("/tree/")) == 1  # the repeated page is not asked for again


def test_pagination_is_capped(server, monkeypatch):
    server.mode["tree"] = "endless_pages"
    monkeypatch.setattr(hub, "MAX_PAGES", 5)
    with pytest.raises(RemoteError, match=r"past 5 pages"):
        hub.fetch_revision(REPO, "main")
    assert len(server.requests("/tree/")) == 5


def test_pages_are_followed(server, monkeypatch):
    server.mode["tree"] = "endless_pages"  # 50 pages, then a last one: every page lists the same files
    with pytest.raises(RemoteError, match=r"lists a file twice"):
        hub.fetch_revision(REPO, "main")
    assert len(server.requests("/tree/")) == 50


def test_a_download_that_is_never_answered_is_tried_a_few_times(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "0.3")
    server.mode["model.safetensors"] = "hang"
    started = time.monotonic()
    with pytest.raises(RemoteError) as err:
        Store(tmp_path / "store").pull(REPO)
    assert time.monotonic() - started < 4
    assert "did not answer within 0.3 s (HF_HUB_DOWNLOAD_TIMEOUT), 4 times; nothing was stored" in str(err.value)
    assert len(server.requests("/model.safetensors")) == 1 + hub.RETRIES


def test_a_download_that_goes_silent_resumes_with_range(server, tmp_path):
    server.mode["model.safetensors"] = "stall_once"
    store = Store(tmp_path / "store")
    started = time.monotonic()
    version = store.pull(REPO)
    assert time.monotonic() - started < 5
    gets = server.requests("/model.safetensors")
    assert [r[2] for r in gets] == [None, f"bytes={HALF}-"]
    assert store.object_path(next(f.sha256 for f in version.files if f.path == "model.safetensors")).read_bytes() == WEIGHTS


@pytest.mark.slow
def test_a_trickling_download_stalls_and_is_given_up(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "0.5")
    server.mode["model.safetensors"] = "trickle"
    store = Store(tmp_path / "store")
    started = time.monotonic()
    with pytest.raises(RemoteError) as err:
        store.pull(REPO)
    message = str(err.value)
    assert "model.safetensors" in message and "stalled" in message and "HF_HUB_DOWNLOAD_TIMEOUT" in message
    assert "4 times" in message and "next pull resumes" in message
    assert time.monotonic() - started < 8
    ranges = [r[2] for r in server.requests("/model.safetensors")]
    assert len(ranges) == 1 + hub.RETRIES and all(r and r.startswith("bytes=") for r in ranges[1:])
    assert len(_parts(store)) == 1  # kept for the next pull


# -- item 10: a body cut short ----------------------------------------------------------------------------

def test_a_body_cut_short_says_so_keeps_the_partial_and_the_next_pull_resumes(server, tmp_path):
    server.mode["model.safetensors"] = "cut"
    store = Store(tmp_path / "store")
    with pytest.raises(RemoteError) as err:
        store.pull(REPO)
    message = str(err.value)
    assert "cut short at 2048 of 4096 bytes" in message and "could not reach" not in message
    assert "partial file is kept" in message
    assert err.value.__cause__ is None and (err.value.__context__ is None or err.value.__suppress_context__)
    [part] = _parts(store)
    assert part.stat().st_size == HALF
    # The next pull is another process: this one has ended.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host, _pid, rest = part.name.split(".", 2)  # <host>.<pid>.<random>.<etag>.part
    part.rename(part.with_name(f"{host}.{dead.pid}.{rest}"))
    server.mode["model.safetensors"] = "normal"
    server.log.clear()
    version = store.pull(REPO)
    assert [r[2] for r in server.requests("/model.safetensors")] == [f"bytes={HALF}-"]
    assert {f.path for f in version.files} == {"config.json", "model.safetensors"}
    assert _parts(store) == []


# -- item 9 and 10: names ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["config\0.json", "a\x1bb.json", "x\x85y"])
def test_a_control_character_in_a_listed_name_is_refused(server, tmp_path, name):
    server.names["config.json"] = name
    store = Store(tmp_path / "store")
    with pytest.raises(RemoteError, match=r"control character"):
        store.pull(REPO)
    assert server.requests("/resolve/") == []
    assert [p for p in Path(store.home).rglob("*") if p.parent.name == "tmp"] == []  # no folder left in tmp/


def test_a_listing_with_a_file_and_a_folder_of_one_name_is_refused_and_leaves_nothing(server, tmp_path):
    """``extra`` and ``extra/inner`` both listed as files: zoo pull said 'File exists' and left its
    temporary snapshot behind."""
    server.names.update({"config.json": "extra", "model.safetensors": "extra/inner"})
    home = tmp_path / "store"
    result = subprocess.run([sys.executable, "-m", "zoo", "-q", "pull", REPO], capture_output=True, text=True,
                            env={**os.environ, "ZOO_HOME": str(home)}, timeout=120)
    assert result.returncode != 0
    assert "'extra' as a file and 'extra/inner' inside it" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "File exists" not in result.stderr
    assert server.requests("/resolve/") == []
    assert [p for p in home.rglob("*") if p.parent.name == "tmp"] == []


@pytest.mark.parametrize("repo", ["ab--cd/ef", "ab/c--d"])
def test_a_repo_id_with_double_dash_is_invalid_not_unreachable(server, tmp_path, repo):
    with pytest.raises(InvalidNameError, match=r"'--'") as err:
        Store(tmp_path / "store").pull(repo)
    assert "could not reach" not in str(err.value)
    with pytest.raises(InvalidNameError, match=r"invalid hub repository id"):
        hub.fetch_revision(repo, "main")
    assert server.log == []


# -- section 3: one message, not the HTTP library's traceback --------------------------------------------

def test_errors_keep_the_original_exception_but_do_not_chain_it(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(RemoteError, match=r"could not reach http://127.0.0.1:9") as err:
        hub.fetch_revision(REPO, "main")
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert type(err.value.__context__).__name__ == "ConnectError"  # there for a debugger


@pytest.mark.slow
def test_a_network_failure_in_load_prints_a_short_traceback(tmp_path):
    code = "import zoo; zoo.load('acme/tiny')"
    env = {**__import__("os").environ, "HF_ENDPOINT": "http://127.0.0.1:9", "ZOO_HOME": str(tmp_path / "z")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert "httpx" not in proc.stderr and "httpcore" not in proc.stderr, proc.stderr
    assert "During handling" not in proc.stderr and "direct cause" not in proc.stderr
    assert lines[-1].startswith("zoo.errors.RemoteError: acme/tiny@main: could not reach http://127.0.0.1:9")
    assert len(lines) < 40, proc.stderr
