"""Hostile clients and access control against a real ``zoo daemon --http`` process (tests/http_daemon.py),
with the session ``hub`` (olah behind a counting proxy) or a gated one of its own as the upstream.

- paths that climb out with ``..`` (raw, percent-encoded, in the repo, revision and file parts, in the API);
- header lines and header counts far past the limits;
- a client that asks for a 90 MB file and never reads (``--send-timeout 2``), while another downloads it;
- 1,000 connections held from one address, while a client from another address is served;
- connections that never finish a request (closed after ``header_timeout``, 30 s: marked slow);
- a gated upstream repo: who gets it from the daemon with and without ``--tokens``; a tokens file others can read;
- writes (PUT, DELETE, PATCH, POST) to file and API paths: refused, and the store unchanged.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from zoo.store.content import hash_file

import pytest

from conftest import TINY_BERT
from http_daemon import HttpDaemon, free_port

REPO = "sentence-transformers/all-MiniLM-L6-v2"
BIG = f"/{REPO}/resolve/main/model.safetensors"
SMALL = f"/{REPO}/resolve/main/config.json"
PASSWD_MARKERS = (b"root:x:0:0", b"root:*:0:0", b"/bin/sh", b"/bin/bash", b"nologin")
_ENV_CLEAN = ("ZOO_OFFLINE", "HF_HUB_OFFLINE", "ZOO_LOCKS", "ZOO_STRICT", "HF_HUB_CACHE", "ZOO_DISABLE_PLUGINS",
              "HF_TOKEN", "HF_ENDPOINT")


# -- helpers --------------------------------------------------------------------------------------------

def raw_request(port: int, data: bytes, *, source: str | None = None, timeout: float = 15.0,
                limit: int = 1 << 20) -> tuple[int | None, bytes]:
    """Send ``data`` as is (no client library to normalise anything) and read until the server closes:
    (status or None when no HTTP answer came, the bytes received). A reset counts as closed."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                  source_address=(source, 0) if source else None) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading and closed: what it said (if anything) may still be there
        deadline = time.monotonic() + timeout
        while len(received) < limit:
            if time.monotonic() > deadline:
                raise AssertionError(f"the daemon kept the connection open past {timeout}s: {received[:300]!r}")
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    status = None
    if received.startswith(b"HTTP/1."):
        status = int(received.split(b" ", 2)[1])
    return status, received


def get_request(path: str, port: int, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}Connection: close\r\n\r\n".encode()


def stream_get(port: int, path: str, *, source: str | None = None, headers: dict | None = None,
               timeout: float = 60.0) -> tuple[int, str, int, dict]:
    """GET ``path`` with the body streamed into a digest: (status, sha256, bytes, headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        h, n = hashlib.sha256(), 0
        while chunk := response.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
        return response.status, h.hexdigest(), n, dict(response.getheaders())
    finally:
        conn.close()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(interval)


def store_snapshot(home: Path) -> dict[str, tuple[int, int]]:
    """Every file and link under the store (not its socket): path -> (size, mtime_ns)."""
    out = {}
    for p in sorted(home.rglob("*")):
        if p.is_socket() or p.is_dir() and not p.is_symlink():
            continue
        st = p.lstat()
        out[p.relative_to(home).as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


def quiet(daemon: HttpDaemon, timeout: float = 30.0) -> dict:
    """The daemon's status once no job and no pull-through is in flight."""
    def idle():
        st = daemon.status()
        return st if not st["jobs"] and not st["http"]["pulls_in_flight"] else None
    return wait_for(idle, timeout, "the daemon's jobs to finish", interval=0.3)


def closed_sockets(socks: list[socket.socket], timeout: float, want: int | None = None) -> set[int]:
    """Indexes of the sockets the peer closed (EOF or reset), looking for up to ``timeout`` seconds (or until
    ``want`` of them are)."""
    poller = select.poll()
    by_fd = {}
    for i, s in enumerate(socks):
        poller.register(s.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
        by_fd[s.fileno()] = i
    closed: set[int] = set()
    deadline = time.monotonic() + timeout
    want = len(socks) if want is None else want
    while time.monotonic() < deadline and len(closed) < want:
        for fd, _ in poller.poll(200):
            i = by_fd[fd]
            try:
                data = socks[i].recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
                data = b""
            if not data:
                closed.add(i)
                poller.unregister(fd)
    return closed


def is_open(s: socket.socket) -> bool:
    """The peer has not closed ``s`` (no EOF, no reset); asked without waiting."""
    timeout = s.gettimeout()
    s.setblocking(False)  # with a timeout set, recv would wait for data first, whatever the flags
    try:
        return s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        s.settimeout(timeout)


def make_daemon(home: Path, upstream: str, *, args: tuple = (), env: dict | None = None) -> HttpDaemon:
    """A started daemon whose environment holds none of the developer's hub or zoo settings."""
    with pytest.MonkeyPatch.context() as mp:
        for var in _ENV_CLEAN:
            mp.delenv(var, raising=False)
        mp.setenv("HF_HOME", str(home.parent / f"{home.name}-hf-home"))
        mp.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        return HttpDaemon(home, upstream=upstream, args=args, env=env).start()


ZOO_FRAME = re.compile(r'File "[^"]*/zoo/[^"]*", line \d+')


def stop_clean(daemon: HttpDaemon) -> None:
    """Stop the daemon: it exits 0, and no traceback in its log passes through zoo's code (a handler that
    crashed rather than answered)."""
    code = daemon.stop()
    log = daemon.log.read_text()
    assert code == 0, log[-3000:]
    assert not ZOO_FRAME.search(log), log[-5000:]


@pytest.fixture
def daemons(tmp_path):
    """Start daemons with ``daemons(name, upstream, args=..., env=...)``; each is stopped (exit 0, no traceback
    in its log) after the test."""
    started: list[HttpDaemon] = []

    def start(name: str, upstream: str, **kw) -> HttpDaemon:
        d = make_daemon(tmp_path / name, upstream, **kw)
        started.append(d)
        return d

    yield start
    for d in started:
        stop_clean(d)


@pytest.fixture(scope="module")
def shared(hub, tmp_path_factory, minilm_dir):
    """One daemon for the tests that only read: paths and headers."""
    d = make_daemon(tmp_path_factory.mktemp("hostile") / "store", hub.endpoint)
    assert d.get(SMALL)[0] == 200
    yield d
    stop_clean(d)


def assert_serves(daemon: HttpDaemon, minilm_dir: Path, *, source: str | None = None) -> None:
    """The daemon still answers a normal request correctly."""
    status, body = raw_request(daemon.port, get_request(SMALL, daemon.port), source=source)
    assert status == 200, body[:500]
    assert body.partition(b"\r\n\r\n")[2] == (minilm_dir / "config.json").read_bytes()


# -- 1. paths that climb out ----------------------------------------------------------------------------

TRAVERSALS = [
    # raw: sent as is, no client library resolves the dots
    f"/{REPO}/resolve/main/../../../etc/passwd",
    f"/{REPO}/resolve/main/../../../../../../../../etc/passwd",
    f"/{REPO}/resolve/main/config.json/../../../../../../etc/passwd",
    f"/{REPO}/resolve/../../../etc/passwd",
    "/../../../../etc/passwd",
    "/sentence-transformers/../resolve/main/etc/passwd",
    "/../../resolve/main/etc/passwd",
    "/models/../../../etc/passwd",
    "/local/../resolve/main/etc/passwd",
    "//etc/passwd",
    # percent-encoded, in the file part
    f"/{REPO}/resolve/main/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    f"/{REPO}/resolve/main/%2E%2E%2F%2E%2E%2F%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    f"/{REPO}/resolve/main/..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    f"/{REPO}/resolve/main/%2e%2e%5c%2e%2e%5c%2e%2e%5cetc%5cpasswd",
    f"/{REPO}/resolve/main/%2Fetc%2Fpasswd",
    f"/{REPO}/resolve/main/.%2e/.%2e/.%2e/etc/passwd",
    # ... in the revision part
    f"/{REPO}/resolve/%2e%2e/config.json",
    f"/{REPO}/resolve/..%2F..%2F..%2Fetc/passwd",
    # ... in the repo part
    "/%2e%2e/%2e%2e/resolve/main/etc/passwd",
    "/sentence-transformers/%2E%2E%2F%2E%2E/resolve/main/config.json",
    "/%2E%2E%2F%2E%2E%2Fetc/passwd/resolve/main/config.json",
    "/local/%2e%2e/resolve/main/config.json",
    # ... in the API routes
    "/api/models/../../../etc/passwd",
    "/api/models/%2e%2e/%2e%2e/revision/main",
    "/api/models/sentence-transformers%2F..%2F..%2Fetc/revision/main",
    "/api/models/%2E%2E%2F%2E%2E%2Fetc/passwd/tree/main",
    f"/api/models/{REPO}/revision/%2e%2e%2f%2e%2e%2fetc",
    f"/api/models/{REPO}/revision/../../../etc/passwd",
    f"/api/models/{REPO}/tree/main/%2e%2e/%2e%2e/%2e%2e",
    f"/api/models/{REPO}/tree/main/..%2F..%2F..%2Fetc",
    f"/api/models/{REPO}/tree/main/../../../../etc",
    f"/api/models/{REPO}/tree/%2e%2e%2f%2e%2e?recursive=true",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_dot_dot_paths_are_refused(shared, hub, minilm_dir, path):
    hub.reset_counts()
    status, body = raw_request(shared.port, get_request(path, shared.port))
    assert status in (400, 404), (path, body[:500])
    assert not any(m in body for m in PASSWD_MARKERS), body[:500]
    # nothing with a '..' went upstream either
    assert not [p for _, p in hub.requests() if ".." in p or "%2e%2e" in p.lower()]
    assert_serves(shared, minilm_dir)


def test_dot_dot_head_and_keepalive_connection(shared, minilm_dir):
    """Hostile HEAD requests one after another on one client connection (kept alive where the daemon keeps
    it), then a normal GET: each gets its own error answer, and the GET the file (no desync)."""
    conn = http.client.HTTPConnection("127.0.0.1", shared.port, timeout=15)
    try:
        for path in TRAVERSALS[10:16] + TRAVERSALS[22:26]:
            conn.putrequest("HEAD", path, skip_host=False, skip_accept_encoding=True)  # putrequest keeps the path raw
            conn.endheaders()
            response = conn.getresponse()
            response.read()
            assert response.status in (400, 404), path
        conn.request("GET", SMALL)
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == (minilm_dir / "config.json").read_bytes()
    finally:
        conn.close()


# -- 2. huge headers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["100 KB header line", "500 headers", "100 KB request line", "10 MB of headers"])
def test_huge_headers_are_refused(shared, minilm_dir, kind):
    port = shared.port
    if kind == "100 KB header line":
        data = get_request(SMALL, port, f"X-Big: {'a' * 100_000}\r\n")
    elif kind == "500 headers":
        data = get_request(SMALL, port, "".join(f"X-H{i}: {'v' * 40}\r\n" for i in range(500)))
    elif kind == "100 KB request line":
        data = get_request(f"/{REPO}/resolve/main/{'a' * 100_000}", port)
    else:
        data = get_request(SMALL, port, "".join(f"X-H{i}: {'v' * 8000}\r\n" for i in range(1250)))
    status, body = raw_request(port, data)
    # an error status, or the connection closed without an answer; never the file
    assert status is None or status >= 400, body[:300]
    if status is None:
        assert body == b"", body[:300]
    assert_serves(shared, minilm_dir)


def test_malformed_requests_do_not_flood_the_log(shared, minilm_dir):
    """A client can send malformed requests as fast as it likes: each may cost a line of log, not a traceback
    of the HTTP library (10+ lines, at ERROR) -- else the daemon's log is the easiest thing to fill."""
    port = shared.port
    bad = [
        get_request(SMALL, port, f"X-Big: {'a' * 20_000}\r\n"),
        get_request(SMALL, port, "".join(f"X-H{i}: v\r\n" for i in range(500))),
        get_request(f"/{REPO}/resolve/main/{'a' * 20_000}", port),
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
    ]
    before = shared.log.read_text()
    rounds = 10
    for _ in range(rounds):
        for data in bad:
            status, body = raw_request(port, data)
            assert status is None or status >= 400, body[:300]
    assert_serves(shared, minilm_dir)
    time.sleep(0.3)
    added = shared.log.read_text()[len(before):]
    lines = added.splitlines()
    assert "Traceback" not in added, f"{len(lines)} log lines for {rounds * len(bad)} bad requests:\n" + added[:3000]
    assert len(lines) <= 2 * rounds * len(bad) + 5, added[:3000]


# -- 3. a client that never reads -----------------------------------------------------------------------

@pytest.mark.slow
def test_client_that_never_reads_is_cut_off_and_holds_nothing_up(daemons, hub, minilm_dir):
    d = daemons("store", hub.endpoint, args=("--send-timeout", "2"))
    size, sha = (minilm_dir / "model.safetensors").stat().st_size, hash_file(minilm_dir / "model.safetensors")[0]
    status, digest, n, _ = stream_get(d.port, BIG, timeout=120)  # a pull-through; afterwards a cache hit
    assert (status, n, digest) == (200, size, sha)
    quiet(d)

    stuck = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    stuck.settimeout(10)
    try:
        stuck.connect(("127.0.0.1", d.port))
        stuck.sendall(get_request(BIG, d.port))
        held = d.status()["http"]["connections"]
        assert held >= 1, "the stuck connection is not counted"

        # while it is stuck, another client gets the whole file, correct, promptly
        started = time.monotonic()
        status, digest, n, headers = stream_get(d.port, BIG, timeout=60)
        took = time.monotonic() - started
        assert (status, n, digest) == (200, size, sha), headers
        assert took < 20, f"the second client took {took:.1f}s"

        # the stuck one is cut off by the daemon within a few seconds
        wait_for(lambda: d.status()["http"]["connections"] == 0, 20,
                 "the daemon to close the connection that never reads")

        received, ended = 0, None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                chunk = stuck.recv(1 << 20)
            except ConnectionResetError:
                ended = "reset"
                break
            except TimeoutError:
                ended = "timeout"
                break
            if not chunk:
                ended = "eof"
                break
            received += len(chunk)
        assert ended in ("eof", "reset"), f"the stuck connection did not end ({ended}, {received} bytes read)"
        assert received < size, "the stuck client got the whole file: it was never cut off"
    finally:
        stuck.close()
    assert "cut off after" in d.log.read_text()
    assert d.status()["http"]["requests"].get("200", 0) >= 3


# -- 4. a thousand connections from one address ---------------------------------------------------------

def _raise_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < wanted:
        pytest.skip(f"cannot open {wanted} descriptors here (RLIMIT_NOFILE {soft}/{hard})")


@pytest.mark.slow
def test_thousand_connections_from_one_address(daemons, hub, minilm_dir):
    _raise_nofile(4096)
    d = daemons("store", hub.endpoint)
    assert_serves(d, minilm_dir)  # listing and config.json known before the flood
    limit, total = 128, 1000
    socks: list[socket.socket] = []
    try:
        for _ in range(total):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(("127.0.0.1", d.port))
            socks.append(s)
        closed = closed_sockets(socks, 20, want=total - limit)
        assert len(closed) >= total - limit, f"only {len(closed)} of {total} connections were closed"
        time.sleep(0.5)  # a moment longer: the daemon keeps exactly its limit, no more, no fewer
        still = [s for i, s in enumerate(socks) if i not in closed and is_open(s)]
        assert len(still) == limit, f"{len(still)} of {total} held, the limit is {limit}"

        # another address is served, correctly, while 127.0.0.1 holds its 128
        assert_serves(d, minilm_dir, source="127.0.0.2")
        status, body = raw_request(d.port, get_request(f"/api/models/{REPO}/revision/main", d.port),
                                   source="127.0.0.2")
        assert status == 200, body[:500]
        info = json.loads(body.partition(b"\r\n\r\n")[2])
        assert info["id"] == REPO and len(info["sha"]) == 40
        # while a new connection from the flooded address is turned away
        status, body = raw_request(d.port, get_request(SMALL, d.port))
        assert status is None and body == b"", body[:300]

        st = d.status()["http"]
        assert st["requests"].get("refused: too many connections", 0) >= total - limit + 1, st
        assert st["connections"] == limit, st
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: d.status()["http"]["connections"] == 0, 15, "the held connections to be let go")
    assert_serves(d, minilm_dir)  # and 127.0.0.1 is welcome again


# -- 4b. connections that never send a request (header_timeout 30 s, keepalive 30 s) ----------------------

@pytest.mark.slow
def test_connections_that_never_finish_a_request_are_closed(daemons, hub, minilm_dir):
    d = daemons("store", hub.endpoint)
    silent = [socket.create_connection(("127.0.0.1", d.port), timeout=10) for _ in range(3)]
    partial = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    partial.sendall(f"GET {SMALL} HTTP/1.1\r\nHost: x\r\n".encode())  # never ends its headers
    dribble = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    dribble.sendall(f"GET {SMALL} HTTP/1.1\r\n".encode())
    idle = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)  # one request, then idle (keepalive)
    idle.request("GET", SMALL)
    reply = idle.getresponse()
    assert reply.status == 200 and reply.read() == (minilm_dir / "config.json").read_bytes()
    opened = time.monotonic()
    socks = [*silent, partial, dribble, idle.sock]
    try:
        time.sleep(1)
        assert all(is_open(s) for s in socks), "closed at once: the limit is meant to be 30 s"
        assert d.status()["http"]["connections"] == len(socks)
        closed: set[int] = set()
        n = 0
        while len(closed) < len(socks) and time.monotonic() - opened < 45:  # 30 s, and some slack
            if 4 not in closed:
                try:  # a header line every second: a slow loris, still not a request
                    dribble.sendall(f"X-Slow-{n}: {n}\r\n".encode())
                    n += 1
                except OSError:
                    pass
            closed |= closed_sockets(socks, 1.0)
        took = time.monotonic() - opened
        assert closed == set(range(len(socks))), f"still open after {took:.0f}s: {set(range(len(socks))) - closed}"
        assert took > 20, f"closed after {took:.0f}s, long before the 30 s limit"
    finally:
        for s in socks:
            s.close()
        idle.close()
    st = d.status()["http"]
    assert st["connections"] == 0, st
    assert st["requests"].get("closed: no request in time", 0) >= 5, st  # the silent, partial, dribbling ones
    assert_serves(d, minilm_dir)


# -- 5. access control: a gated repo --------------------------------------------------------------------

GATED, PUBLIC = "acme/gated-bert", "acme/public-bert"
UPSTREAM_TOKEN = "hf_upstream_token_0123456789abcdef"
CLIENT_TOKEN = "zoo-client-token-4f0c1d2e3b4a5968"
WRONG_TOKEN = "zoo-wrong-token-000000000000000000"


def _safetensors() -> bytes:
    """A small real safetensors file (one float32 16x16 tensor)."""
    data = struct.pack("<256f", *(i / 7 for i in range(256)))
    header = json.dumps({"weight": {"dtype": "F32", "shape": [16, 16], "data_offsets": [0, len(data)]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data


GATED_FILES = {"config.json": json.dumps(TINY_BERT).encode(), "model.safetensors": _safetensors()}


@pytest.fixture(scope="module")
def gated_hub(tmp_path_factory):
    from hubserver import HubServer

    server = HubServer(tmp_path_factory.mktemp("gated-hub"))
    server.add_repo(GATED, GATED_FILES)
    server.add_repo(PUBLIC, GATED_FILES)
    server.gate(GATED, UPSTREAM_TOKEN)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def tokens_file(tmp_path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"# who may read restricted content\n{CLIENT_TOKEN}  alice\n")
    path.chmod(0o600)
    return path


_DOWNLOAD = """
    import json, sys
    from huggingface_hub import hf_hub_download
    out = []
    for n, (repo, filename, token) in enumerate(json.loads(sys.argv[1])):
        try:
            path = hf_hub_download(repo, filename, token=token, cache_dir=f"{sys.argv[2]}/{n}")
            out.append({"path": path})
        except Exception as exc:
            out.append({"error": type(exc).__name__, "message": str(exc)[:500]})
    print(json.dumps(out))
"""


def hf_download(endpoint: str, attempts: list[tuple], tmp: Path, hf_token: str | None = None) -> list[dict]:
    """huggingface_hub's hf_hub_download in a fresh process with HF_ENDPOINT=endpoint (and HF_TOKEN=hf_token):
    one result per (repo, filename, token) attempt; token None means HF_TOKEN, False none at all."""
    env = {k: v for k, v in os.environ.items() if k not in _ENV_CLEAN}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_ETAG_TIMEOUT="30", HF_HUB_DOWNLOAD_TIMEOUT="30")
    if hf_token:
        env["HF_TOKEN"] = hf_token
    cache = tmp / f"hf-cache-{time.monotonic_ns()}"
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(_DOWNLOAD), json.dumps(attempts), str(cache)],
                         env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_gated_upstream_itself(gated_hub):
    """The test hub's gate works as the real hub's does (else the tests below would prove nothing)."""
    import urllib.error
    import urllib.request

    def ask(path: str, token: str | None):
        request = urllib.request.Request(gated_hub.endpoint + path,
                                         headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    for path in (f"/api/models/{GATED}/revision/main", f"/{GATED}/resolve/main/config.json",
                 f"/api/models/{GATED}/tree/main"):
        for token in (None, WRONG_TOKEN):
            status, headers, _ = ask(path, token)
            assert status == 401 and headers["X-Error-Code"] == "GatedRepo", (path, token, status)
    status, _, body = ask(f"/api/models/{GATED}/revision/main", UPSTREAM_TOKEN)
    assert status == 200 and json.loads(body)["gated"] == "manual"
    status, _, body = ask(f"/api/models/{PUBLIC}/revision/main", None)
    assert status == 200 and json.loads(body)["gated"] is False
    assert ask(f"/{GATED}/resolve/main/config.json", UPSTREAM_TOKEN)[2] == GATED_FILES["config.json"]


def test_gated_repo_needs_a_listed_token(daemons, gated_hub, tokens_file, tmp_path):
    gated_hub.reset_counts()
    d = daemons("store", gated_hub.endpoint, args=("--tokens", str(tokens_file)),
                env={"HF_TOKEN": UPSTREAM_TOKEN})
    # the HTTP answers, raw
    for path in (f"/api/models/{GATED}/revision/main", f"/api/models/{GATED}", f"/api/models/{GATED}/tree/main",
                 f"/{GATED}/resolve/main/config.json"):
        for headers in ({}, {"Authorization": f"Bearer {WRONG_TOKEN}"},
                        {"Authorization": f"Bearer {UPSTREAM_TOKEN}"}, {"Authorization": CLIENT_TOKEN}):
            status, h, body = d.get(path, headers)
            assert status == 401 and h.get("X-Error-Code") == "GatedRepo", (path, headers, status, body[:300])
            assert GATED_FILES["config.json"] not in body
    status, h, body = d.get(f"/api/models/{GATED}/revision/main", {"Authorization": f"Bearer {CLIENT_TOKEN}"})
    assert status == 200, body[:300]
    assert json.loads(body)["gated"] == "manual"
    assert set(gated_hub.authorization()) <= {f"Bearer {UPSTREAM_TOKEN}", None}
    assert f"Bearer {UPSTREAM_TOKEN}" in gated_hub.authorization()  # the daemon used its own token upstream

    # huggingface_hub, as a user runs it
    results = hf_download(d.endpoint, [
        (GATED, "model.safetensors", False),        # no token
        (GATED, "model.safetensors", WRONG_TOKEN),  # a token the daemon does not list
        (GATED, "model.safetensors", None),         # HF_TOKEN: listed
        (GATED, "config.json", None),
        (GATED, "model.safetensors", False),        # stored now: still not without a token
        (GATED, "config.json", UPSTREAM_TOKEN),     # the upstream's token is not a client token here
        (PUBLIC, "config.json", False),             # public content: anyone
    ], tmp_path, hf_token=CLIENT_TOKEN)
    assert [r.get("error") for r in results] == [
        "GatedRepoError", "GatedRepoError", None, None, "GatedRepoError", "GatedRepoError", None], results
    assert Path(results[2]["path"]).read_bytes() == GATED_FILES["model.safetensors"]
    assert Path(results[3]["path"]).read_bytes() == GATED_FILES["config.json"]
    assert Path(results[6]["path"]).read_bytes() == GATED_FILES["config.json"]
    assert "401" in d.status()["http"]["requests"]


def test_gated_repo_without_tokens_file_is_served_to_nobody(daemons, gated_hub, tmp_path):
    d = daemons("store", gated_hub.endpoint, env={"HF_TOKEN": UPSTREAM_TOKEN})
    results = hf_download(d.endpoint, [
        (GATED, "config.json", False),
        (GATED, "config.json", None),  # HF_TOKEN: would be listed in the other daemon's file
        (GATED, "model.safetensors", UPSTREAM_TOKEN),
        (PUBLIC, "model.safetensors", False),
        (PUBLIC, "config.json", None),
    ], tmp_path, hf_token=CLIENT_TOKEN)
    assert [r.get("error") for r in results] == ["GatedRepoError"] * 3 + [None, None], results
    assert Path(results[3]["path"]).read_bytes() == GATED_FILES["model.safetensors"]
    assert Path(results[4]["path"]).read_bytes() == GATED_FILES["config.json"]
    status, h, _ = d.get(f"/api/models/{GATED}/revision/main", {"Authorization": f"Bearer {CLIENT_TOKEN}"})
    assert status == 401 and h.get("X-Error-Code") == "GatedRepo"
    assert "no tokens file" in h.get("X-Error-Message", "")


def test_sighup_reads_the_tokens_file_again(daemons, gated_hub, tokens_file):
    d = daemons("store", gated_hub.endpoint, args=("--tokens", str(tokens_file)), env={"HF_TOKEN": UPSTREAM_TOKEN})
    path = f"/api/models/{GATED}/revision/main"
    assert d.get(path, {"Authorization": f"Bearer {CLIENT_TOKEN}"})[0] == 200
    assert d.get(path, {"Authorization": f"Bearer {WRONG_TOKEN}"})[0] == 401
    tokens_file.write_text(f"{WRONG_TOKEN} bob\n")  # alice's token revoked, bob's added
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and d.get(path, {"Authorization": f"Bearer {WRONG_TOKEN}"})[0] != 200:
        time.sleep(0.05)
    assert d.get(path, {"Authorization": f"Bearer {WRONG_TOKEN}"})[0] == 200
    assert d.get(path, {"Authorization": f"Bearer {CLIENT_TOKEN}"})[0] == 401
    tokens_file.chmod(0o644)  # a file that became unsafe: the tokens read before stay in force
    d.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert d.proc.poll() is None and d.get(path, {"Authorization": f"Bearer {WRONG_TOKEN}"})[0] == 200
    assert "chmod 600" in d.log.read_text()


@pytest.mark.parametrize("mode, text, expect", [
    (0o644, f"{CLIENT_TOKEN} alice\n", "chmod"),
    (0o606, f"{CLIENT_TOKEN} alice\n", "chmod"),
    (0o600, "short-token alice\n", "too short"),
    (0o600, "# nobody\n", "no token"),
])
def test_bad_tokens_file_stops_the_daemon(hub, tmp_path, mode, text, expect):
    path = tmp_path / "tokens"
    path.write_text(text)
    path.chmod(mode)
    env = {k: v for k, v in os.environ.items() if k not in _ENV_CLEAN}
    env["ZOO_HOME"] = str(tmp_path / "store")
    port = free_port()
    out = subprocess.run([sys.executable, "-m", "zoo", "daemon", "--store", str(tmp_path / "store"),
                          "--http", f"127.0.0.1:{port}", "--upstream", hub.endpoint, "--tokens", str(path)],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert expect in out.stderr, out.stderr[-2000:]
    assert CLIENT_TOKEN not in out.stderr + out.stdout  # the secret itself is never printed
    with pytest.raises(OSError):  # and nothing listens
        socket.create_connection(("127.0.0.1", port), 1).close()


# -- 6. nothing is writable -----------------------------------------------------------------------------

WRITES = [
    ("PUT", f"/{REPO}/resolve/main/config.json"),
    ("PUT", f"/{REPO}/resolve/main/new-file.bin"),
    ("DELETE", f"/{REPO}/resolve/main/config.json"),
    ("PATCH", f"/{REPO}/resolve/main/config.json"),
    ("POST", f"/{REPO}/resolve/main/config.json"),
    ("POST", f"/{REPO}/resolve/main/model.safetensors"),
    ("PUT", f"/api/models/{REPO}"),
    ("DELETE", f"/api/models/{REPO}"),
    ("POST", f"/api/models/{REPO}"),
    ("POST", f"/api/models/{REPO}/revision/main"),
    ("PUT", f"/api/models/{REPO}/revision/main"),
    ("DELETE", f"/api/models/{REPO}/tree/main/config.json"),
    ("POST", f"/api/models/{REPO}/commit/main"),          # huggingface_hub's create_commit
    ("POST", f"/api/models/{REPO}/preupload/main"),
    ("POST", f"/api/models/{REPO}.git/info/lfs/objects/batch"),
    ("POST", "/api/repos/create"),
    ("DELETE", "/api/repos/delete"),
    ("PUT", f"/api/models/{REPO}/settings"),
    ("POST", f"/api/models/{REPO}/branch/evil"),
    ("DELETE", f"/api/models/{REPO}/branch/main"),
    ("PUT", "/local/mine/resolve/main/config.json"),
]


def test_nothing_is_writable(daemons, hub, minilm_dir):
    d = daemons("store", hub.endpoint)
    assert_serves(d, minilm_dir)
    quiet(d)
    before = store_snapshot(d.home)
    assert any(p.startswith("objects/") or "/objects/" in p for p in before), sorted(before)[:20]
    body = b'{"files": [{"path": "config.json", "content": "eyJoYWNrZWQiOiB0cnVlfQ=="}], "paths": ["config.json"]}'
    answers = {}
    for method, path in WRITES:
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            answers[(method, path)] = (response.status, response.read()[:200])
        finally:
            conn.close()
    wrong = {k: v for k, v in answers.items() if v[0] not in (404, 405)}
    assert not wrong, wrong
    assert_serves(d, minilm_dir)
    quiet(d)
    assert store_snapshot(d.home) == before
    assert "405" in d.status()["http"]["requests"]


def test_paths_info_body_is_bounded(shared, minilm_dir):
    """paths-info is the one POST: a body past 1 MiB is refused, the daemon unharmed."""
    conn = http.client.HTTPConnection("127.0.0.1", shared.port, timeout=30)
    try:
        body = json.dumps({"paths": ["config.json"] * 400_000}).encode()  # ~6 MB
        try:
            conn.request("POST", f"/api/models/{REPO}/paths-info/main", body=body,
                         headers={"Content-Type": "application/json"})
            status = conn.getresponse().status
        except (BrokenPipeError, ConnectionResetError):
            status = None  # closed before taking it all
        assert status in (None, 400, 413), status
    finally:
        conn.close()
    assert_serves(shared, minilm_dir)
