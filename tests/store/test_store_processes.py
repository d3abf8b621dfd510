"""The store under real concurrent processes, a lock that lies, and kill -9 at random moments."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
from filelock import FileLock

from zoo.store import Store
from zoo.store.layout import repo_folder

from conftest import run_python

REPO = "google-bert/bert-base-cased"
NEEDED = {"config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json",
          "tokenizer_config.json", "vocab.txt"}

LOAD_AND_DIGEST = """
import hashlib, warnings, zoo
warnings.simplefilter("ignore")
model = zoo.load("bert-base-cased")
digest = hashlib.sha256()
for name, tensor in sorted(model.state_dict().items()):
    digest.update(name.encode()); digest.update(tensor.contiguous().view(-1).view(__import__("torch").uint8).numpy().tobytes())
print(digest.hexdigest())
"""


def _gets(hub, path):
    return sum(1 for m, p in hub.requests() if m == "GET" and "/resolve/" in p and p.split("?")[0].endswith("/" + path))


def _leftovers(store):
    tmp = list(store.tmp.iterdir()) if store.tmp.exists() else []
    stray = [p for p in store.hub.rglob("*") if p.name.endswith(".tmp")]
    return tmp + stray


def _spawn(code_or_args, env, **kw):
    args = [sys.executable, "-c", code_or_args] if isinstance(code_or_args, str) else [sys.executable, *code_or_args]
    return subprocess.Popen(args, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


@pytest.mark.slow
def test_eight_processes_load_one_uncached_model(hub_env, hub):
    procs = [_spawn(LOAD_AND_DIGEST, hub_env) for _ in range(8)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    digests = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(digests) == 1  # every process got the same weights
    for path in NEEDED:
        assert _gets(hub, path) == 1, (path, hub.requests())
    store = Store()
    assert _leftovers(store) == []
    assert len(store.versions(REPO)) == 1 and store.verify() == []


@pytest.mark.slow
def test_a_lock_that_always_succeeds_still_leaves_a_correct_store(hub_env, hub):
    env = {**hub_env, "ZOO_LOCKS": "off"}  # what flock does on Lustre and some NFS
    procs = [_spawn(["-m", "zoo", "pull", "bert-base-cased", "-q"], env) for _ in range(6)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    store = Store()
    versions = store.versions(REPO)
    assert len(versions) == 1  # racing writers of one content leave one version
    assert all(store.missing_files(v) == [] for v in versions)
    assert store.verify() == []
    assert _leftovers(store) == []
    objects = [p for p in store.objects.rglob("*") if p.is_file()]
    assert len(objects) == len(NEEDED)  # each content once, however many wrote it
    result = run_python(LOAD_AND_DIGEST, env={**env, "ZOO_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]


def _pull(env):
    return subprocess.run([sys.executable, "-m", "zoo", "pull", "bert-base-cased", "-q"],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_kill_9_at_random_moments_never_shows_a_partial_version(hub_env, hub):
    """20 kill -9s at random moments; whatever is visible after each is complete; the next pull completes."""
    store = Store()
    rng = random.Random(1234)
    completed = 0
    for attempt in range(20):
        proc = _spawn(["-m", "zoo", "pull", "bert-base-cased", "-q"], hub_env)
        time.sleep(rng.uniform(1.0, 7.0))  # start-up takes ~1.5 s, the 90 MB download ~5 s
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for version in store.versions(REPO):  # whatever is visible is complete and intact
            assert store.missing_files(version) == [], attempt
            assert store.verify(REPO) == [], attempt
        if store.versions(REPO):  # this pull finished before its kill: start over from nothing
            completed += 1
            subprocess.run(["rm", "-rf", str(store.home)], check=True)
    assert completed < 20, "no kill landed mid-pull"
    result = _pull(hub_env)
    assert result.returncode == 0, result.stderr
    assert store.verify() == []
    assert [p for p in store.hub.rglob("*") if p.name.endswith(".tmp")] == []


@pytest.mark.slow
def test_resume_after_kill_fetches_only_the_rest(hub_env, hub):
    store = Store()
    proc = _spawn(["-m", "zoo", "pull", "bert-base-cased", "-q"], hub_env)
    deadline = time.monotonic() + 120
    part = None
    while time.monotonic() < deadline and part is None:
        parts = list(store.tmp.glob("*.part")) if store.tmp.exists() else []
        if parts and parts[0].stat().st_size > 20_000_000:
            part = parts[0]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert part is not None, "the download never got going"
    have = part.stat().st_size
    assert store.versions(REPO) == []
    hub.wait_idle()
    hub.reset_counts()
    result = _pull(hub_env)
    assert result.returncode == 0, result.stderr
    version = store.find(REPO)
    full = next(f.size for f in version.files if f.path == "model.safetensors")
    sent = hub.bytes_sent("model.safetensors")
    assert sent <= full - have, (sent, full, have)  # only the missing tail crossed the network
    assert store.verify() == [] and _leftovers(store) == []


@pytest.mark.slow
def test_lock_wait_logs_and_times_out(hub_env, hub):
    store = Store()
    lock_path = store.locks / f"{repo_folder(REPO)}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path)):
        result = subprocess.run([sys.executable, "-m", "zoo", "pull", "bert-base-cased", "-q"],
                                env={**os.environ, **hub_env, "ZOO_LOCK_TIMEOUT": "3"},
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "waiting for the name 'google-bert/bert-base-cased'" in result.stderr
    assert "zoo: error: gave up waiting" in result.stderr and "ZOO_LOCK_TIMEOUT" in result.stderr


@pytest.mark.slow
def test_concurrent_cold_loads_ask_the_hub_once(hub_env, hub):
    """Waiting processes find the version another one pulled: one set of metadata requests in all."""
    procs = [_spawn(["-m", "zoo", "info", "bert-base-cased"], hub_env) for _ in range(4)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    assert hub.count("GET", "/revision/") == 1, hub.requests()
    assert _gets(hub, "model.safetensors") == 1
