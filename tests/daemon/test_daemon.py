"""The cache daemon as users meet it: a real `zoo daemon` process, real client processes, a real hub server."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import zoo
from zoo.store import Store
from zoo.daemon.client import DaemonStore, DaemonUnavailableError

from conftest import TINY_BERT, run_python

NEEDED = {"config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json",
          "tokenizer_config.json", "vocab.txt"}


def wait_until(condition, seconds: float) -> None:
    """Poll ``condition`` every 20 ms until it holds or ``seconds`` pass (the caller asserts after)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not condition():
        time.sleep(0.02)


class DaemonProcess:
    def __init__(self, home: Path, env: dict | None = None, args: tuple = ()) -> None:
        self.home, self.env, self.args = home, env or {}, args
        self.proc: subprocess.Popen | None = None
        self.log = home.parent / f"{home.name}-daemon.log"

    def start(self) -> "DaemonProcess":
        sock = self.home / "daemon.sock"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zoo", "daemon", "--store", str(self.home), *self.args],
            env={**os.environ, "ZOO_HOME": str(self.home), **self.env},
            stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"),
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if sock.exists():
                try:
                    with socket.socket(socket.AF_UNIX) as probe:
                        probe.connect(str(sock))
                    return self
                except OSError:
                    pass
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.05)
        raise AssertionError(f"the daemon did not start: {self.log.read_text()}")

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout=60)
        return self.proc.returncode if self.proc else 0

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture
def daemon(tmp_path):
    d = DaemonProcess(Path(os.environ["ZOO_HOME"])).start()
    yield d
    assert d.stop() == 0, d.log.read_text()  # SIGTERM: a clean exit


def test_clients_write_through_the_daemon(daemon, tiny_bert):
    store = zoo.api.default_store()
    assert isinstance(store, DaemonStore)
    model = zoo.build(tiny_bert).eval()
    version = zoo.save(model, "through")
    assert version.name == "v1" and "uid" in version.source  # the daemon wrote it, and says for whom
    ids = torch.randint(1, 99, (1, 7))
    with torch.no_grad():
        assert torch.equal(zoo.load("through")(ids).last_hidden_state, model(ids).last_hidden_state)
    log = daemon.log.read_text()
    assert "import name=through" in log and "(uid 0" in log  # who asked what


def test_warm_loads_need_no_daemon(daemon, tiny_bert):
    zoo.save(zoo.build(tiny_bert), "warm")
    daemon.kill()  # kill -9: the socket stays behind
    assert type(zoo.load("warm")).__name__ == "BertModel"  # read directly from the store
    with pytest.raises(DaemonUnavailableError, match="does not answer.*Start it"):
        zoo.save(zoo.build(tiny_bert), "warm")
    daemon.start()  # a restarted daemon takes over its socket
    assert zoo.save(zoo.build(tiny_bert), "warm").name == "v2"


def test_import_sends_open_files_not_paths(daemon, tmp_path, tiny_bert):
    source = zoo.save(zoo.build(tiny_bert), tmp_path / "mine")
    (source / "extra").mkdir()
    (source / "extra" / "notes.txt").write_text("hello")
    version = zoo.api.default_store().import_dir(source, "imported")
    assert {f.path for f in version.files} == {"config.json", "model.safetensors", "extra/notes.txt"}
    result = subprocess.run([sys.executable, "-m", "zoo", "verify", "imported"], capture_output=True, text=True)
    assert result.returncode == 0 and "all files intact" in result.stdout, result.stdout + result.stderr


def test_bad_requests_get_errors_and_the_daemon_keeps_serving(daemon):
    sock_path = str(daemon.home / "daemon.sock")
    silent = socket.socket(socket.AF_UNIX)  # connects and sends nothing: others are served meanwhile
    silent.connect(sock_path)
    for garbage in (b"not json\n", b"[1, 2]\n", b'{"op": "nope"}\n', b'{"op": "ensure", "args": {"repo": "../x"}}\n',
                    b'{"op": "import", "args": {"name": "x", "files": [{"path": "../../etc/passwd"}]}}\n'):
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(30)
            conn.connect(sock_path)
            conn.sendall(garbage)
            conn.shutdown(socket.SHUT_WR)
            reply = conn.recv(65536)
        assert b"ok" not in reply[:10]  # an error reply, or the connection closed: never a crash
    assert DaemonStore(daemon.home).status()["pid"] == daemon.proc.pid
    silent.close()


def test_status_reports_the_daemon(daemon):
    result = subprocess.run([sys.executable, "-m", "zoo", "daemon", "status", "--store", str(daemon.home)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"zoo daemon pid {daemon.proc.pid}" in result.stdout and "serving" in result.stdout


@pytest.mark.slow
def test_sixteen_cold_clients_one_download(tmp_path, hub, hub_env):
    home = Path(os.environ["ZOO_HOME"])
    d = DaemonProcess(home, env=hub_env).start()
    try:
        code = "import warnings; warnings.simplefilter('ignore'); import zoo; m = zoo.load('bert-base-cased'); print(sum(p.sum().item() for p in m.parameters()))"
        procs = [subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "ZOO_HOME": str(home)},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(16)]
        outs = [p.communicate(timeout=600) for p in procs]
        assert all(p.returncode == 0 for p in procs), [o[1][-800:] for o in outs if o[1]]
        assert len({o[0].strip() for o in outs}) == 1  # identical weights everywhere
        gets = hub.gets_per_file()
        assert gets == {name: 1 for name in NEEDED}, gets  # one download per file, however many asked
        assert "ensure repo=google-bert/bert-base-cased" in d.log.read_text()
    finally:
        assert d.stop() == 0


@pytest.mark.slow
def test_kill_9_during_a_pull_then_the_restarted_daemon_finishes(tmp_path, hub, hub_env):
    home = Path(os.environ["ZOO_HOME"])
    d = DaemonProcess(home, env=hub_env).start()
    client = subprocess.Popen([sys.executable, "-c", "import zoo; zoo.load('bert-base-cased')"],
                              env={**os.environ, "ZOO_HOME": str(home)}, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: list((home / "tmp").glob("*.part")), 120)
    d.kill()
    _, err = client.communicate(timeout=120)
    assert client.returncode != 0 and "DaemonUnavailableError" in err and "went away" in err or \
        "does not answer" in err, err[-1500:]
    d.start()
    try:
        assert type(zoo.load("bert-base-cased")).__name__ == "BertModel"
        assert Store(home).verify() == []
    finally:
        assert d.stop() == 0


def test_quota_evicts_the_least_recently_used_unpinned_version(tmp_path, tiny_bert):
    home = Path(os.environ["ZOO_HOME"])
    d = DaemonProcess(home, args=("--max-size", "300KB")).start()
    try:
        for _ in range(3):
            zoo.save(zoo.build(tiny_bert), "q")
        result = subprocess.run([sys.executable, "-m", "zoo", "pin", "q@v1"], capture_output=True, text=True)
        assert result.returncode == 0 and "pinned" in result.stdout, result.stderr
        zoo.save(zoo.build(tiny_bert), "q")  # 4 x ~84 KB > 300 KB: one version must go
        names = [v.name for v in Store(home).versions("local/q")]
        assert names == ["v1", "v3", "v4"]  # v1 pinned, v4 newest; v2 least recently used
        assert "evicted local/q@v2" in d.log.read_text() or "evicted q@v2" in d.log.read_text()
        with pytest.raises(zoo.QuotaError, match=r"cannot make room.*pinned: q@v1"):
            zoo.save(zoo.build(dict(tiny_bert, vocab_size=2000)), "huge")  # more than eviction can free
        status = DaemonStore(home).status()
        assert status["quota"]["max_size"] == 300_000 and "local/q@v1" in status["quota"]["pinned"]
    finally:
        assert d.stop() == 0


def test_drop_folder_becomes_a_version(tmp_path, tiny_bert):
    import transformers

    home, drop = Path(os.environ["ZOO_HOME"]), tmp_path / "drop"
    drop.mkdir()
    config = transformers.BertConfig(**{k: v for k, v in tiny_bert.items() if k != "model_type"})
    torch.manual_seed(0)
    before = transformers.BertModel(config).eval()
    before.save_pretrained(drop / "early")  # there before the daemon starts: the start-up scan takes it
    d = DaemonProcess(home, args=("--watch", str(drop), "--quiet-period", "0.5")).start()
    try:
        model = transformers.BertModel(config).eval()
        model.save_pretrained(drop / "fine-tune")
        (drop / "fine-tune" / ".zoo-ready").touch()
        store = Store(home)
        wait_until(lambda: (store.versions("local/fine-tune") and store.versions("local/early")), 60)
        assert [v.name for v in store.versions("local/fine-tune")] == ["v1"], d.log.read_text()[-2000:]
        assert store.versions("local/early") and store.versions("local/early")[0].source.startswith("drop:")
        ids = torch.randint(1, 99, (1, 6))
        with torch.no_grad():
            assert torch.equal(zoo.load("fine-tune")(ids).last_hidden_state, model(ids).last_hidden_state)
        status = DaemonStore(home).status()
        assert status["watched"][0]["path"] == str(drop.resolve())
        (drop / "evil").mkdir()
        (drop / "evil" / "config.json").symlink_to("/etc/passwd")  # outside the drop folder
        time.sleep(2)
        assert not store.versions("local/evil")
        assert "evil" in d.log.read_text()
    finally:
        assert d.stop() == 0


@pytest.mark.parametrize("args, message", [
    (("--group", "no-such-group-zoo"), "no such group"),
    (("--max-size", "lots"), "not like 5GB"),
    (("--watch", "/nonexistent/drop"), "drop"),
    (("--config", "/nonexistent.toml"), "cannot read the daemon config"),
])
def test_bad_settings_exit_non_zero_with_a_message(tmp_path, args, message):
    result = subprocess.run([sys.executable, "-m", "zoo", "daemon", "--store", str(tmp_path / "s"), *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert message in result.stderr


def test_config_file_and_flags_win(tmp_path):
    config = tmp_path / "zoo.toml"
    config.write_text('[daemon]\nstore = "/elsewhere"\nmax-size = "lots"\n')
    result = subprocess.run([sys.executable, "-m", "zoo", "daemon", "--config", str(config), "--max-size", "1GB",
                             "--store", str(tmp_path / "s"), "status"], capture_output=True, text=True, timeout=60)
    # the flags won (no error about "lots", the store given on the command line); no daemon runs there
    assert "lots" not in result.stderr and str(tmp_path / "s") in result.stderr, result.stderr


@pytest.mark.slow
def test_kill_9_at_random_moments_during_pulls_imports_and_drops(tmp_path, hub, hub_env, tiny_bert):
    """20 kill -9s of the daemon while it pulls, imports or ingests a drop folder: after each restart verify is
    clean, every visible version is complete, and the interrupted work completes."""
    import random

    home, drop = Path(os.environ["ZOO_HOME"]), tmp_path / "drop"
    drop.mkdir()
    source = zoo.save(zoo.build(dict(tiny_bert, vocab_size=3000)), tmp_path / "src")  # ~1.5 MB
    d = DaemonProcess(home, env=hub_env, args=("--watch", str(drop), "--quiet-period", "0.3")).start()
    rng = random.Random(7)
    client_env = {**os.environ, "ZOO_HOME": str(home)}
    try:
        for i in range(20):
            kind = ("pull", "import", "drop")[i % 3]
            if kind == "pull":
                proc = subprocess.Popen([sys.executable, "-m", "zoo", "-q", "pull", "bert-base-cased"], env=client_env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            elif kind == "import":
                proc = subprocess.Popen([sys.executable, "-m", "zoo", "-q", "import", str(source), "--name", f"imp{i}"],
                                        env=client_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            else:
                shutil.copytree(source, drop / f"drop{i}")
                proc = None
            time.sleep(rng.uniform(0.0, 2.5))
            d.kill()
            if proc is not None:
                proc.wait(timeout=120)
            d.start()
            store = Store(home)
            assert store.verify() == [], i
            for version in store.iter_versions():
                assert store.missing_files(version) == [], (i, version)
            # the interrupted work completes
            if kind == "pull":
                assert DaemonStore(home).ensure("google-bert/bert-base-cased").files
                DaemonStore(home).remove("google-bert/bert-base-cased")  # cold again for the next round
            elif kind == "import":
                assert DaemonStore(home).import_dir(source, f"imp{i}").name == "v1"
            else:
                wait_until(lambda: store.versions(f"local/drop{i}"), 60)
                assert [v.name for v in store.versions(f"local/drop{i}")] == ["v1"], d.log.read_text()[-1500:]
    finally:
        assert d.stop() == 0


@pytest.mark.slow
def test_a_client_that_goes_away_does_not_cancel_the_pull(tmp_path, hub, hub_env):
    home = Path(os.environ["ZOO_HOME"])
    d = DaemonProcess(home, env=hub_env).start()
    try:
        first = subprocess.Popen([sys.executable, "-c", "import zoo; zoo.load('bert-base-cased')"],
                                 env={**os.environ, "ZOO_HOME": str(home)}, stderr=subprocess.DEVNULL)
        wait_until(lambda: list((home / "tmp").glob("*.part")), 120)
        first.kill()  # the client dies mid-pull
        assert type(zoo.load("bert-base-cased")).__name__ == "BertModel"
        gets = hub.gets_per_file()
        assert gets == {name: 1 for name in NEEDED}, gets  # the pull went on; nothing fetched twice
    finally:
        assert d.stop() == 0


@pytest.mark.slow
@pytest.mark.parametrize("mode", [(), ("--poll", "0.5")], ids=["inotify", "polling"])
def test_slow_writer_never_yields_an_early_version(tmp_path, tiny_bert, mode):
    """config.json first, then the weights in chunks over 15 s (a copy or a checkpoint written piece by piece):
    exactly one version, complete, made after the last byte."""
    home, drop = Path(os.environ["ZOO_HOME"]), tmp_path / "drop"
    drop.mkdir()
    source = zoo.save(zoo.build(tiny_bert), tmp_path / "src")
    d = DaemonProcess(home, args=("--watch", str(drop), "--quiet-period", "2", *mode)).start()
    try:
        target = drop / "slow"
        target.mkdir()
        shutil.copy(source / "config.json", target / "config.json")
        data = (source / "model.safetensors").read_bytes()
        store = Store(home)
        chunks = 16
        with open(target / "model.safetensors", "wb") as f:
            for i in range(chunks):
                f.write(data[i * len(data) // chunks:(i + 1) * len(data) // chunks])
                f.flush()
                time.sleep(1.0)
                assert store.versions("local/slow") == [], f"a version appeared after chunk {i}"
        last_byte = time.time()
        wait_until(lambda: store.versions("local/slow"), 30)
        versions = store.versions("local/slow")
        assert [v.name for v in versions] == ["v1"], d.log.read_text()[-1500:]
        assert store.missing_files(versions[0]) == []
        assert zoo.load("slow") is not None
        time.sleep(3)
        assert len(store.versions("local/slow")) == 1  # and no second one for the same content
        assert last_byte <= time.time()
    finally:
        assert d.stop() == 0


def test_drop_folder_that_fills_the_disk(tmp_path, tiny_bert):
    """The ingest fails, no version appears, the space is given back, and the daemon keeps serving."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount tmpfs here")
    try:
        home, drop = disk / "zoo", tmp_path / "drop"
        drop.mkdir()
        d = DaemonProcess(home, args=("--watch", str(drop), "--quiet-period", "0.3")).start()
        try:
            zoo.save(zoo.build(dict(tiny_bert, vocab_size=9000)), drop / "too-big")  # ~1.2 MB of weights
            (drop / "too-big" / ".zoo-ready").touch()
            wait_until(lambda: "too-big" in d.log.read_text(), 30)
            time.sleep(0.5)
            assert "free disk space" in d.log.read_text() or "no space" in d.log.read_text(), d.log.read_text()
            assert Store(home).versions("local/too-big") == []
            assert [p for p in (home / "tmp").rglob("*") if p.is_file()] == []  # the space is given back
            assert DaemonStore(home).status()["pid"] == d.proc.pid
            status = DaemonStore(home).status()["drop_folders"]
            assert any(f["name"] == "too-big" and f["state"] == "refused" for f in status), status
        finally:
            assert d.stop() == 0
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_sighup_leaves_the_daemon_serving(daemon):
    """systemd's `reload` sends SIGHUP: it must never stop a daemon (one without --tokens has nothing to read)."""
    daemon.proc.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    assert daemon.proc.poll() is None
    assert DaemonStore(daemon.home).status()["pid"] == daemon.proc.pid
