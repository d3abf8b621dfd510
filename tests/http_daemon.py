"""A real ``zoo daemon --http`` process for tests: its own store, an upstream, an address; no pytest here.

``HttpDaemon(home, upstream=hub.endpoint).start()`` returns once the HTTP port answers; ``endpoint`` is what
clients put in ``HF_ENDPOINT``. ``prefix`` runs it through another command (``ip netns exec NS``), for tiers
of machines made of network namespaces.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class HttpDaemon:
    def __init__(self, home: Path, *, upstream: str | None = None, host: str = "127.0.0.1", port: int | None = None,
                 args: tuple = (), env: dict | None = None, prefix: tuple = ()) -> None:
        self.home, self.upstream, self.host = Path(home), upstream, host
        self.port = port or free_port(host if not prefix else "127.0.0.1")
        self.args, self.env, self.prefix = tuple(args), env or {}, tuple(prefix)
        self.proc: subprocess.Popen | None = None
        self.log = self.home.parent / f"{self.home.name}-http-daemon.log"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> "HttpDaemon":
        self.home.mkdir(parents=True, exist_ok=True)
        cmd = [*self.prefix, sys.executable, "-m", "zoo", "daemon", "--store", str(self.home),
               "--http", f"{self.host}:{self.port}", *(("--upstream", self.upstream) if self.upstream else ()),
               *self.args]
        env = {**os.environ, "ZOO_HOME": str(self.home), **self.env}
        if "HF_TOKEN" not in self.env:
            env.pop("HF_TOKEN", None)  # the daemon's own token only when a test gives it one
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the daemon exited: {self.log.read_text()}"
            if self._answers():
                return self
            time.sleep(0.05)
        raise AssertionError(f"the daemon did not start: {self.log.read_text()}")

    def _answers(self) -> bool:
        if self.prefix:  # in another network namespace: ask from there
            probe = [*self.prefix, sys.executable, "-c",
                     f"import socket; socket.create_connection(({self.host!r}, {self.port}), 1).close()"]
            return subprocess.run(probe, capture_output=True).returncode == 0
        try:
            socket.create_connection((self.host, self.port), 1).close()
            return True
        except OSError:
            return False

    def status(self) -> dict:
        out = subprocess.run([*self.prefix, sys.executable, "-m", "zoo", "daemon", "status", "--json",
                              "--store", str(self.home)], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "ZOO_HOME": str(self.home)})
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def get(self, path: str, headers: dict | None = None, method: str = "GET") -> tuple[int, dict, bytes]:
        """One request from this process (the daemon must be reachable from here)."""
        request = urllib.request.Request(self.endpoint + path, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
                raise AssertionError(f"the daemon did not stop on SIGTERM: {self.log.read_text()[-3000:]}")
        return self.proc.returncode if self.proc else 0

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def __enter__(self) -> "HttpDaemon":
        return self.start()

    def __exit__(self, *exc) -> None:
        code = self.stop()
        assert code == 0, self.log.read_text()[-3000:]
