"""Several upstreams, asked in turn (``zoo daemon --upstream A --upstream B``; zoo.store.upstreams).

In this process: zoo's hub client with a refusing upstream and the test hub (a request goes on to the next;
the one that answered stays first; a 404 is the answer; a download cut off mid-body resumes on the next).
In processes: two central daemons and a node in front of both; a central killed with SIGKILL loses nothing
but its connections.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from http_daemon import HttpDaemon
from zoo.errors import InvalidArgumentError, RemoteError, RemoteNotFoundError
from zoo.store import hub as hubclient
from zoo.store import upstreams

REPO = "sentence-transformers/all-MiniLM-L6-v2"
OTHER = "google-bert/bert-base-cased"
TRUST = "3600"  # --revalidate: a branch's commit is trusted for the whole test


@pytest.fixture(autouse=True)
def _one_upstream_again():
    yield
    upstreams.configure(None)  # HF_ENDPOINT alone, nothing remembered


class Refusing:
    """A TCP port that accepts each connection and closes it at once (a daemon dying as it is asked);
    ``count`` is how many connections it took."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.count = 0
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.count += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def refusing():
    r = Refusing()
    yield r
    r.close()


class _CutHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        data = self.server.data
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:len(data) // 2])  # half, then the connection goes
        self.wfile.flush()
        self.server.gets += 1
        self.close_connection = True


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- zoo's hub client, in this process ---------------------------------------------------------------------------

def test_a_request_goes_on_to_the_next_upstream_and_the_one_that_answered_stays_first(hub, hub_env, refusing):
    upstreams.configure([refusing.endpoint, hub.endpoint])
    remote = hubclient.fetch_revision(REPO, "main")
    assert "config.json" in {f.path for f in remote.files}
    assert refusing.count >= 1
    state = {s["url"]: s for s in upstreams.status()}
    assert state[hub.endpoint]["answered_last"] and not state[hub.endpoint]["down"]
    assert state[refusing.endpoint]["down"] and not state[refusing.endpoint]["answered_last"]
    assert hubclient.endpoint() == hub.endpoint

    asked = refusing.count
    hubclient.fetch_revision(OTHER, "main")
    assert refusing.count == asked, "the upstream that answered last was not asked first"


def test_an_upstream_down_is_asked_again_later(hub, hub_env, refusing, monkeypatch):
    monkeypatch.setattr(upstreams, "DOWN_FOR", 0.3)
    upstreams.configure(f"{hub.endpoint},{refusing.endpoint}")
    upstreams.failed(hub.endpoint, "test")  # the first one failed a moment ago: the second is asked first
    assert upstreams.order() == [refusing.endpoint, hub.endpoint]
    hubclient.fetch_revision(REPO, "main")  # the second refuses: the first answers, though it is still "down"
    assert refusing.count >= 1 and upstreams.order()[0] == hub.endpoint
    time.sleep(0.4)
    assert upstreams.order() == [hub.endpoint, refusing.endpoint], "sticky: the one that answered stays first"
    assert not any(s["down"] for s in upstreams.status() if s["url"] == refusing.endpoint)


def test_a_404_is_the_answer_and_not_asked_of_the_next_upstream(hub, hub_env, refusing):
    upstreams.configure([hub.endpoint, refusing.endpoint])
    with pytest.raises(RemoteNotFoundError):
        hubclient.fetch_revision("nobody/no-such-model", "main")
    assert refusing.count == 0


def test_when_no_upstream_can_be_asked_the_error_names_each_and_the_fix(refusing):
    gone = socket.socket()
    gone.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{gone.getsockname()[1]}"
    gone.close()  # nothing listens there: connection refused
    upstreams.configure([dead, refusing.endpoint])
    with pytest.raises(RemoteError) as err:
        hubclient.fetch_revision(REPO, "main")
    message = str(err.value)
    assert dead in message and refusing.endpoint in message, message
    assert "none of the upstreams could be asked" in message and "Check that one of them runs" in message, message
    assert hubclient.transient(err.value)


def test_a_bad_upstream_url_is_refused():
    with pytest.raises(InvalidArgumentError, match="not an http"):
        upstreams.configure(["http://a:1,central:8090"])


def test_a_download_cut_off_resumes_on_the_next_upstream_with_range(hub, hub_env, minilm_dir, tmp_path):
    reference = minilm_dir / "tokenizer.json"
    listing = hubclient.fetch_revision(REPO, "main")  # of the hub alone (HF_ENDPOINT)
    remote = {f.path: f for f in listing.files}["tokenizer.json"]
    cut = ThreadingHTTPServer(("127.0.0.1", 0), _CutHandler)
    cut.daemon_threads = True
    cut.data, cut.gets = reference.read_bytes(), 0
    threading.Thread(target=cut.serve_forever, daemon=True).start()
    try:
        upstreams.configure([f"http://127.0.0.1:{cut.server_address[1]}", hub.endpoint])
        hub.reset_counts()
        dest = tmp_path / "tokenizer.json.part"
        got = []
        hubclient.download(REPO, listing.commit, remote, dest, got.append)
    finally:
        cut.shutdown()
        cut.server_close()
    assert cut.gets == 1
    assert _sha256(dest) == _sha256(reference)
    assert sum(got) == remote.size
    sent = hub.bytes_sent("tokenizer.json")
    assert 0 < sent <= remote.size - remote.size // 2, f"the second upstream sent {sent} of {remote.size} bytes"


# ---- daemons: two centrals, a node in front of both -------------------------------------------------------------

def _download(node: HttpDaemon, home: Path, repo: str, filename: str) -> subprocess.CompletedProcess:
    """An unmodified huggingface_hub client (hf_hub_download) in its own process, HF_ENDPOINT = the node."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "ZOO_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=node.endpoint, HF_HOME=str(home / "hf"), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", ZOO_HOME=str(home / "zoo"))
    code = ("import sys\nfrom huggingface_hub import hf_hub_download\n"
            "print(hf_hub_download(sys.argv[1], sys.argv[2]))")
    return subprocess.run([sys.executable, "-c", code, repo, filename], env=env, capture_output=True, text=True,
                          timeout=180)


def _requests(daemon: HttpDaemon) -> int:
    return sum(n for status, n in daemon.status()["http"]["requests"].items() if status.isdigit())


@pytest.fixture
def centrals(hub, tmp_path):
    a = HttpDaemon(tmp_path / "central-a", upstream=hub.endpoint, args=("--revalidate", TRUST))
    b = HttpDaemon(tmp_path / "central-b", upstream=hub.endpoint, args=("--revalidate", TRUST))
    node = HttpDaemon(tmp_path / "node", args=("--upstream", a.endpoint, "--upstream", b.endpoint,
                                               "--revalidate", TRUST))
    try:
        a.start()
        b.start()
        node.start()
        yield a, b, node
    finally:
        codes = {"node": node.stop(), "central-b": b.stop()}
        a.kill()
        assert codes == {"node": 0, "central-b": 0}, _logs(node, b)


def _logs(*daemons: HttpDaemon) -> str:
    return "\n".join(f"--- {d.log} ---\n{d.log.read_text(errors='replace')[-3000:]}" for d in daemons
                     if d.log.exists())


@pytest.mark.slow
def test_a_central_killed_loses_nothing_but_its_connections(centrals, minilm_dir, tmp_path):
    a, b, node = centrals
    first = _download(node, tmp_path / "client1", REPO, "config.json")
    assert first.returncode == 0, f"{first.stderr[-3000:]}\n{_logs(node, a, b)}"
    assert Path(first.stdout.split()[-1]).read_bytes() == (minilm_dir / "config.json").read_bytes()

    missing = _download(node, tmp_path / "client404", "nobody/no-such-model", "config.json")
    assert missing.returncode != 0 and "RepositoryNotFoundError" in missing.stderr, missing.stderr[-3000:]
    assert a.status()["http"]["requests"].get("404", 0) >= 1, a.status()
    assert _requests(b) == 0, f"the second central was asked: {b.status()['http']}\n{_logs(node)}"
    listed = {u["url"]: u for u in node.status()["upstreams"]}
    assert list(listed) == [a.endpoint, b.endpoint] and listed[a.endpoint]["answered_last"], listed

    a.proc.kill()  # SIGKILL: no goodbye, its connections just break
    a.proc.wait(timeout=30)
    second = _download(node, tmp_path / "client2", OTHER, "tokenizer.json")
    assert second.returncode == 0, f"{second.stderr[-3000:]}\n{_logs(node, b)}"
    assert _sha256(Path(second.stdout.split()[-1])) == _sha256(minilm_dir / "tokenizer.json")
    assert b.status()["http"]["requests"].get("200", 0) >= 1, b.status()
    listed = {u["url"]: u for u in node.status()["upstreams"]}
    assert listed[b.endpoint]["answered_last"] and listed[a.endpoint]["down"], listed
    text = subprocess.run([sys.executable, "-m", "zoo", "daemon", "status", "--store", str(node.home)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "ZOO_HOME": str(node.home)})
    assert a.endpoint in text.stdout and b.endpoint in text.stdout and "answered_last" in text.stdout, text.stdout


@pytest.mark.slow
def test_a_central_killed_mid_file_the_node_resumes_on_the_next(hub, minilm_dir, tmp_path):
    """The node is fetching model.safetensors from central A (which gets it slowly) when A is killed: the node
    asks B for the rest (Range), and the client receives the whole file, its digest checked."""
    from hubserver import SlowUpstream

    with SlowUpstream(hub.endpoint, rate=2 << 20) as slow:
        a = HttpDaemon(tmp_path / "central-a", upstream=slow.endpoint, args=("--revalidate", TRUST))
        b = HttpDaemon(tmp_path / "central-b", upstream=hub.endpoint, args=("--revalidate", TRUST))
        node = HttpDaemon(tmp_path / "node", args=("--upstream", f"{a.endpoint},{b.endpoint}", "--revalidate", TRUST))
        try:
            a.start()
            b.start()
            node.start()
            with ThreadingDownload(node, tmp_path / "client", REPO, "model.safetensors") as client:
                deadline = time.monotonic() + 60
                while not slow.started and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert slow.started, f"central A never asked for the file\n{_logs(node, a)}"
                time.sleep(1.5)  # a few MB on their way through A
                a.proc.kill()
                a.proc.wait(timeout=30)
                out = client.result(timeout=180)
            assert out.returncode == 0, f"{out.stderr[-3000:]}\n{_logs(node, b)}"
            assert _sha256(Path(out.stdout.split()[-1])) == _sha256(minilm_dir / "model.safetensors")
            assert not slow.finished, "A sent the whole file: it was not killed mid-file"
            assert b.status()["http"]["requests"].get("206", 0) >= 1, f"{b.status()}\n{_logs(node)}"
        finally:
            codes = {"node": node.stop(), "central-b": b.stop()}
            a.kill()
        assert codes == {"node": 0, "central-b": 0}, _logs(node, b)


class ThreadingDownload:
    """:func:`_download` in a thread, so that the test can act while it runs."""

    def __init__(self, node: HttpDaemon, home: Path, repo: str, filename: str) -> None:
        self.args, self.out, self.error = (node, home, repo, filename), None, None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.out = _download(*self.args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self.error = exc

    def __enter__(self) -> "ThreadingDownload":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.thread.join(timeout=200)

    def result(self, timeout: float) -> subprocess.CompletedProcess:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the client did not finish"
        if self.error is not None:
            raise self.error
        return self.out
