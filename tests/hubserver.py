"""A real Hugging Face Hub-compatible server for tests, fully offline.

``HubServer`` serves local git repositories (LFS pointers + objects written by
``add_repo``) with ``olah`` (see /work/shared/hub-server.md), behind a tiny
counting reverse proxy that runs in the test process.  Clients (also in other
processes) talk to ``endpoint`` -- the proxy -- so every request they make is
recorded and can be asserted on with ``count()`` / ``requests()``.

Stdlib + olah only; no pytest fixtures here.
"""
from __future__ import annotations

import atexit
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

_LFS_SUFFIXES = (".safetensors", ".bin")
_LFS_MIN_SIZE = 1024
_CHUNK = 1 << 20
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
               "te", "trailers", "transfer-encoding", "upgrade"}
_GIT_ENV = {"GIT_AUTHOR_NAME": "zoo-tests", "GIT_AUTHOR_EMAIL": "zoo-tests@example.invalid",
            "GIT_COMMITTER_NAME": "zoo-tests", "GIT_COMMITTER_EMAIL": "zoo-tests@example.invalid",
            "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
_BASE_DATE = 1704067200  # 2024-01-01T00:00:00Z; commit n of a repo is dated BASE + n seconds
_sha_cache: dict[tuple, str] = {}  # (path, inode, size, mtime_ns) -> sha256, shared by all servers


def _sha256_file(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _sha_cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        _sha_cache[key] = h.hexdigest()
    return _sha_cache[key]


def _git(repo: Path, *args: str, env: dict | None = None) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True,
                          env={**os.environ, **_GIT_ENV, **(env or {})}).stdout.strip()


class _ProxyHandler(BaseHTTPRequestHandler):
    """Records (method, path) and forwards the request to olah, streaming the response."""
    protocol_version = "HTTP/1.1"
    server: "_ProxyServer"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _reply(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response_only(status, reason)
        for k, v in headers:
            if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _forward(self) -> None:
        srv = self.server
        with srv.lock:
            srv.log.append((self.command, self.path))
            srv.auth.append(self.headers.get("Authorization"))
            srv.active += 1
        try:
            self._forward_counted(srv)
        finally:
            with srv.lock:
                srv.active -= 1

    def _forward_counted(self, srv: "_ProxyServer") -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        gated = self._gated_repo()
        if gated is not None and self.headers.get("Authorization") != f"Bearer {srv.gated[gated]}":
            message = f"Access to model {gated} is restricted. You must have access to it and be authenticated."
            return self._reply(401, "Unauthorized", [("Content-Type", "application/json"),
                                                     ("X-Error-Code", "GatedRepo"), ("X-Error-Message", message)],
                               json.dumps({"error": message}).encode())
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        skip = self._range_start(headers) if srv.ranges else 0
        upstream = http.client.HTTPConnection("127.0.0.1", srv.upstream_port, timeout=600)
        try:
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                resp = upstream.getresponse()
            except OSError as e:
                return self._reply(502, "Bad Gateway", [("Content-Type", "text/plain")],
                                   f"hubserver proxy: olah unreachable: {e!r}".encode())
            if self._is_repo_info() and resp.status == 200:
                return self._reply(resp.status, resp.reason, resp.getheaders(),
                                   self._patch_repo_info(resp.read()))
            total = resp.getheader("Content-Length")
            if skip and resp.status == 200 and total is None:  # olah streams LFS files unsized
                total = self._upstream_size(headers)
            if skip and resp.status == 200 and total is not None and skip < int(total):
                # olah ignores Range: serve the requested tail ourselves, as a real hub would (206).
                self.send_response_only(206, "Partial Content")
                self.send_header("Content-Range", f"bytes {skip}-{int(total) - 1}/{total}")
                remaining = skip
                while remaining:
                    remaining -= len(resp.read(min(remaining, _CHUNK)))
            else:
                skip = 0
                self.send_response_only(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() == "location":
                    v = v.replace(f"127.0.0.1:{srv.upstream_port}", srv.netloc)
                if k.lower() == "content-length" and skip:
                    v = str(int(v) - skip)
                if k.lower() not in _HOP_BY_HOP:
                    self.send_header(k, v)
            if self.command == "HEAD" or resp.status in (204, 304) or resp.status < 200:
                return self.end_headers()
            if skip and resp.getheader("Content-Length") is None:
                self.send_header("Content-Length", str(int(total) - skip))
            elif resp.getheader("Content-Length") is None:
                self.close_connection = True  # body delimited by closing the connection
                self.send_header("Connection", "close")
            self.end_headers()
            sent = 0
            try:
                while chunk := resp.read1(_CHUNK):  # stream: never hold a whole file
                    self.wfile.write(chunk)
                    sent += len(chunk)
            finally:
                with srv.lock:
                    srv.sent.append((self.path, sent))
        except (BrokenPipeError, ConnectionResetError, TimeoutError, http.client.HTTPException):
            self.close_connection = True  # client went away (or upstream broke) mid-stream
        finally:
            upstream.close()

    def _upstream_size(self, headers: dict) -> str | None:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=600)
        try:
            conn.request("HEAD", self.path, headers=headers)
            return conn.getresponse().getheader("Content-Length")
        finally:
            conn.close()

    def _range_start(self, headers: dict) -> int:
        value = next((v for k, v in list(headers.items()) if k.lower() == "range"), None)
        if self.command != "GET" or not value or not value.startswith("bytes=") or not value.endswith("-"):
            return 0
        for k in [k for k in headers if k.lower() == "range"]:
            del headers[k]
        try:
            return int(value[len("bytes="):-1])
        except ValueError:
            return 0

    def _gated_repo(self) -> str | None:
        """The gated repo this request's path names (``/api/models/REPO/...``, ``/REPO/resolve/...``), if any."""
        path = unquote(self.path.partition("?")[0]).rstrip("/") + "/"
        return next((repo for repo in self.server.gated if f"/{repo}/" in path), None)

    def _is_repo_info(self) -> bool:
        path = self.path.partition("?")[0]
        return self.command == "GET" and path.startswith("/api/") and "/revision/" in path

    def _patch_repo_info(self, body: bytes) -> bytes:
        """Make olah's repo-info JSON look like the real hub's: ``id`` of a repo without an org
        is "x", not "None/x"; and ``?blobs=true`` (``model_info(files_metadata=True)``), which
        olah ignores, adds size/blobId/lfs to ``siblings`` from olah's (uncounted) tree listing."""
        try:
            info = json.loads(body)
        except ValueError:
            return body
        if str(info.get("id", "")).startswith("None/"):
            info["id"] = info["id"][len("None/"):]
        if self._gated_repo() is not None:
            info["gated"] = "manual"
        if "blobs=true" not in self.path.partition("?")[2].lower():
            return json.dumps(info).encode()
        prefix = self.path.partition("?")[0].rsplit("/revision/", 1)[0]
        conn = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=600)
        try:
            conn.request("GET", f"{prefix}/tree/{info['sha']}/?recursive=true")
            tree = {e["path"]: e for e in json.loads(conn.getresponse().read())}
        finally:
            conn.close()
        for sib in info.get("siblings", []):
            entry = tree.get(sib["rfilename"])
            if entry is not None:
                sib.update(size=entry["size"], blobId=entry["oid"])
                if "lfs" in entry:
                    lfs = entry["lfs"]
                    sib["lfs"] = {"sha256": lfs["oid"], "size": lfs["size"], "pointerSize": lfs["pointerSize"]}
        return json.dumps(info).encode()

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _forward


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, upstream_port: int, log: list, sent: list, lock: threading.Lock, ranges: bool):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream_port, self.log, self.sent, self.lock, self.ranges = upstream_port, log, sent, lock, ranges
        self.active = 0
        self.auth: list[str | None] = []
        self.gated: dict[str, str] = {}  # repo id -> the token that may read it (HubServer.gate)
        self.netloc = f"127.0.0.1:{self.server_address[1]}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HubServer:
    """olah serving ``<root>/mirrors`` behind a request-counting proxy.

    Repos may be added/updated before or after ``start()``: olah reads git on every request.
    """

    def __init__(self, root: Path, *, ranges: bool = True):
        """``ranges``: answer ``Range: bytes=N-`` with 206 (olah itself ignores Range), so clients can
        resume; False serves whole files like bare olah."""
        self.root = Path(root)
        self.ranges = ranges
        self._sent: list[tuple[str, int]] = []
        self.mirrors = self.root / "mirrors"
        (self.mirrors / "models").mkdir(parents=True, exist_ok=True)
        self._proc: subprocess.Popen | None = None
        self._proxy: _ProxyServer | None = None
        self._thread: threading.Thread | None = None
        self._log: list[tuple[str, str]] = []  # survives stop(); cleared by reset_counts()
        self._lock = threading.Lock()
        self._gated: dict[str, str] = {}  # repo id -> token, shared with the proxy (see gate())

    # ---- repositories ---------------------------------------------------------------
    def repo_path(self, repo_id: str) -> Path:
        return self.mirrors / "models" / repo_id

    def add_repo(self, repo_id: str, files: dict[str, Path | bytes], *,
                 branch: str = "main", tag: str | None = None, message: str = "update") -> str:
        """Create (or add a commit to) the non-bare git repo for ``repo_id`` on ``branch``.

        ``files`` maps path-in-repo -> source file or bytes; existing files not named are kept.
        Files >= 1 KiB and any *.safetensors/*.bin become git-LFS pointers, the object stored
        (hard-linked when possible) at .git/lfs/objects/aa/bb/<sha256>.  Author, committer and
        dates are fixed, so the returned commit sha is reproducible.  A new ``branch`` forks from
        the branch last committed to.  ``tag`` (lightweight) is (re)pointed at the new commit.
        """
        repo = self.repo_path(repo_id)
        if not (repo / ".git").exists():
            repo.mkdir(parents=True, exist_ok=True)
            _git(repo, "init", "-q", "-b", branch)
        elif _git(repo, "rev-parse", "--abbrev-ref", "HEAD") != branch:
            exists = subprocess.run(["git", "show-ref", "-q", "--verify", f"refs/heads/{branch}"],
                                    cwd=repo).returncode == 0
            _git(repo, "checkout", "-q", *(() if exists else ("-b",)), branch)
        for rel, src in files.items():
            dest = repo / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists() or dest.is_symlink():
                dest.unlink()  # never write through a hard link
            size = len(src) if isinstance(src, bytes) else Path(src).stat().st_size
            if size < _LFS_MIN_SIZE and not rel.endswith(_LFS_SUFFIXES):
                dest.write_bytes(src if isinstance(src, bytes) else Path(src).read_bytes())
                continue
            sha = hashlib.sha256(src).hexdigest() if isinstance(src, bytes) else _sha256_file(Path(src))
            obj = repo / ".git" / "lfs" / "objects" / sha[:2] / sha[2:4] / sha
            if not obj.exists():
                obj.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(src, bytes):
                    obj.write_bytes(src)
                else:
                    try:
                        os.link(src, obj)
                    except OSError:
                        shutil.copyfile(src, obj)
            dest.write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {size}\n")
        _git(repo, "add", "-A")
        date = f"@{_BASE_DATE + int(_git(repo, 'rev-list', '--all', '--count'))} +0000"
        _git(repo, "commit", "-q", "--allow-empty", "--no-verify", "-m", message,
             env={"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date})
        if tag:
            _git(repo, "tag", "-f", tag)
        return _git(repo, "rev-parse", "HEAD")

    def gate(self, repo_id: str, token: str) -> None:
        """Make ``repo_id`` gated, as on the real hub (only the token of a user who accepted its terms reads it): its
        api and resolve requests without ``Authorization: Bearer <token>`` get 401 with ``X-Error-Code: GatedRepo``
        (huggingface_hub's ``GatedRepoError``), and its repo info says ``"gated": "manual"``. May be called
        before or after ``start()``."""
        self._gated[repo_id] = token

    # ---- lifecycle ------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> None:
        """Start the proxy and olah; return once olah answers HTTP."""
        if self._proc is not None:
            return
        olah_port = _free_port()
        self._proxy = _ProxyServer(olah_port, self._log, self._sent, self._lock, self.ranges)
        self._proxy.gated = self._gated
        self._thread = threading.Thread(target=self._proxy.serve_forever, daemon=True,
                                        name="hubserver-proxy")
        self._thread.start()
        netloc = self._proxy.netloc
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        cfg = self.root / "olah.toml"
        cfg.write_text(
            "[basic]\n"
            f'host = "127.0.0.1"\nport = {olah_port}\n'
            f"repos-path = {json.dumps(str(self.root / 'olah-cache'))}\n"
            f"mirrors-path = [{json.dumps(str(self.mirrors))}]\n"
            f'mirror-scheme = "http"\nmirror-netloc = "{netloc}"\nmirror-lfs-netloc = "{netloc}"\n'
            'hf-scheme = "http"\nhf-netloc = "127.0.0.1:9"\nhf-lfs-netloc = "127.0.0.1:9"\n'
            "metadata-cache-ttl = 0\n"
            "[accessibility]\noffline = true\n")
        with open(logs / "olah.out", "ab") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", "import sys; from olah.server import cli; sys.exit(cli())",
                 "-c", str(cfg), "--log-path", str(logs)],
                cwd=self.root, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"olah exited early; see {logs / 'olah.out'}")
            try:  # any HTTP answer (olah says 401 for an unknown repo) means it is serving
                conn = http.client.HTTPConnection("127.0.0.1", olah_port, timeout=5)
                conn.request("GET", "/api/models/hubserver-ready/revision/main")
                conn.getresponse().read()
                conn.close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"olah not ready after {timeout}s; see {logs / 'olah.out'}")
                time.sleep(0.1)

    def stop(self) -> None:
        """Kill olah (its whole process group) and shut the proxy down. Idempotent."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None:
            try:  # olah runs in its own session: its pid is the group id of it and its children
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        proxy, self._proxy = self._proxy, None
        if proxy is not None:
            proxy.shutdown()
            proxy.server_close()
            self._thread.join(5)

    def __enter__(self) -> "HubServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- request accounting -------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """Base URL for HF_ENDPOINT: the counting proxy, not olah itself."""
        if self._proxy is None:
            raise RuntimeError("HubServer not started")
        return f"http://{self._proxy.netloc}"

    def requests(self) -> list[tuple[str, str]]:
        """(method, path-with-query) of every request the proxy has seen, in arrival order."""
        with self._lock:
            return list(self._log)

    def authorization(self) -> list[str | None]:
        """The Authorization header of every request since the last reset (None where absent)."""
        if self._proxy is None:
            return []
        with self._lock:
            return list(self._proxy.auth)

    def bytes_sent(self, path_contains: str = "") -> int:
        """Body bytes the proxy sent for requests whose path contains ``path_contains``."""
        with self._lock:
            return sum(n for p, n in self._sent if path_contains in p)

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until no request is in flight (e.g. the proxy noticed a killed client)."""
        deadline = time.monotonic() + timeout
        while self._proxy is not None and self._proxy.active and time.monotonic() < deadline:
            time.sleep(0.05)

    def reset_counts(self) -> None:
        with self._lock:
            self._log.clear()
            self._sent.clear()
            if self._proxy is not None:
                self._proxy.auth.clear()

    def count(self, method: str | None = None, path_contains: str | None = None) -> int:
        return sum(1 for m, p in self.requests()
                   if (method is None or m == method.upper())
                   and (path_contains is None or path_contains in p))

    def gets_per_file(self) -> dict[str, int]:
        """How many times each file name was downloaded (GET .../resolve/...) since the last reset."""
        counts: dict[str, int] = {}
        for method, path in self.requests():
            if method == "GET" and "/resolve/" in path:
                name = path.split("?")[0].rsplit("/", 1)[1]
                counts[name] = counts.get(name, 0) + 1
        return counts


# -- an upstream that sends slowly, or damages, or refuses: in front of a test hub ----------------------------

class SlowUpstream(ThreadingHTTPServer):
    """A proxy to a test hub (``target``) that sends the bodies of ``/resolve/`` files whose path ends with ``match``
    at ``rate`` bytes a second (``match=None``: none), recording when each started and finished; everything else
    passes at full speed. ``corrupt``: True damages every matching body; a number, only that many of the first
    ones. ``deny``: files whose path contains it are listed but refused (404 EntryNotFound), as a hub does for a
    gated or withdrawn file. Start it with ``threading.Thread(target=s.serve_forever)`` or as a context manager."""

    daemon_threads = True

    def __init__(self, target: str, rate: int = 4 << 20, corrupt: bool | int = False,
                 match: str | None = ".safetensors", deny: str | None = None) -> None:
        self.target, self.rate, self.corrupt, self.match, self.deny = target.rstrip("/"), rate, corrupt, match, deny
        self.bodies = 0
        self.started: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        super().__init__(("127.0.0.1", 0), type("H", (_SlowHandler,), {}))

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> "SlowUpstream":
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()


class _SlowHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def do_GET(self, head: bool = False) -> None:
        import urllib.error
        import urllib.request

        srv = self.server
        if srv.deny and "/resolve/" in self.path and srv.deny in self.path:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("range", "authorization", "accept")}
        request = urllib.request.Request(srv.target + self.path, headers=headers, method="HEAD" if head else "GET")
        try:
            response = urllib.request.urlopen(request, timeout=60)
        except urllib.error.HTTPError as exc:
            response = exc
        data = response.read()  # whole, then sent with its length (the hub's proxy may have sent it chunked)
        self.send_response(response.status if hasattr(response, "status") else response.code)
        for k, v in response.headers.items():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", response.headers.get("Content-Length", "0") if head else str(len(data)))
        self.end_headers()
        if head:
            return
        slow = bool(srv.match) and "/resolve/" in self.path and self.path.endswith(srv.match)
        if slow:
            srv.bodies += 1
            srv.started[self.path] = time.monotonic()
        if slow and data and (srv.corrupt is True or srv.bodies <= srv.corrupt):  # a hostile or broken upstream
            data = bytes([data[0] ^ 1]) + data[1:]
        try:
            for i in range(0, len(data), 256 << 10):
                chunk = data[i:i + (256 << 10)]
                self.wfile.write(chunk)
                if slow:
                    time.sleep(len(chunk) / srv.rate)
        except OSError:
            return
        if slow:
            srv.finished[self.path] = time.monotonic()
