"""The central tier on object storage, as a team meets it: real ``zoo daemon --http --object-store s3://...``
processes on one real S3 server (SeaweedFS's ``weed mini`` on loopback), an unmodified huggingface_hub client,
the test hub (olah behind a counting proxy) as the upstream, and the bucket read back with boto3."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from http_daemon import HttpDaemon
from hubserver import SlowUpstream

REPO = "sentence-transformers/all-MiniLM-L6-v2"
FOLDER = "models--sentence-transformers--all-MiniLM-L6-v2"
WEIGHTS = "model.safetensors"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def central(home: Path, bucket: str, env: dict, upstream: str, *args: str) -> HttpDaemon:
    return HttpDaemon(home, upstream=upstream, env={**env, "ZOO_CENTRAL_SYNC": "1"},
                      args=("--object-store", f"s3://{bucket}/team", "--revalidate", "3600", *args))


def hf(daemon: HttpDaemon, cache: Path, code: str, timeout: int = 300) -> str:
    env = {**os.environ, "HF_ENDPOINT": daemon.endpoint, "HF_HOME": str(cache), "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DOWNLOAD_TIMEOUT": "120"}
    env.pop("HF_TOKEN", None)
    out = subprocess.run([sys.executable, "-c", f"import huggingface_hub as h\n{code}"], env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout.strip().splitlines()[-1]


def zoo_cli(home: Path, env: dict, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, timeout=300,
                         env={**os.environ, **env, "ZOO_HOME": str(home)})
    if ok:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def bucket_objects(s3, bucket: str, prefix: str = "team/") -> dict[str, int]:
    out = {}
    for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", ()):
            out[item["Key"][len(prefix):]] = item["Size"]
    return out


def read_key(s3, bucket: str, key: str) -> bytes:
    return s3.client().get_object(Bucket=bucket, Key=f"team/{key}")["Body"].read()


def wait_for(what: str, check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def check_bucket_complete(s3, bucket: str) -> list[str]:
    """The promise: every version record lists only objects the bucket holds whole (sha256 and size), and every
    object is the bytes its key names. Returns the record keys."""
    objects = bucket_objects(s3, bucket)
    records = sorted(k for k in objects if k.startswith("versions/"))
    for key in [k for k in objects if k.startswith("objects/sha256/")]:
        data = read_key(s3, bucket, key)
        assert sha256(data) == key.rsplit("/", 1)[1], f"{key} holds other bytes"
    for key in records:
        record = json.loads(read_key(s3, bucket, key))
        for f in record["files"]:
            assert objects.get(f"objects/sha256/{f['sha256'][:2]}/{f['sha256']}") == f["size"], (key, f["path"])
    return records


@pytest.mark.slow
def test_a_pull_lands_in_the_bucket_and_a_daemon_with_an_empty_disk_serves_it_without_the_upstream(
        tmp_path, hub, minilm_dir, s3, s3_bucket, s3_env):
    hub.reset_counts()
    with central(tmp_path / "a", s3_bucket, s3_env, hub.endpoint) as a:
        snap = Path(hf(a, tmp_path / "c1", f"print(h.snapshot_download({REPO!r}))"))
        for p in minilm_dir.rglob("*"):
            if p.is_file():
                assert (snap / p.relative_to(minilm_dir)).read_bytes() == p.read_bytes()
        record_key = f"versions/{FOLDER}/v0001.json"
        wait_for("the version record", lambda: record_key in bucket_objects(s3, s3_bucket))
        record = json.loads(read_key(s3, s3_bucket, record_key))
        assert {f["path"] for f in record["files"]} == {p.relative_to(minilm_dir).as_posix()
                                                        for p in minilm_dir.rglob("*") if p.is_file()}
        for f in record["files"]:  # keyed by content: the bytes read back with the S3 client are the file's
            data = read_key(s3, s3_bucket, f"objects/sha256/{f['sha256'][:2]}/{f['sha256']}")
            assert sha256(data) == f["sha256"] == sha256((minilm_dir / f["path"]).read_bytes())
        assert check_bucket_complete(s3, s3_bucket) == [record_key]

    hub.reset_counts()  # a new machine: an empty disk, the same bucket
    with central(tmp_path / "b", s3_bucket, s3_env, hub.endpoint) as b:
        snap = Path(hf(b, tmp_path / "c2", f"print(h.snapshot_download({REPO!r}))"))
        for p in minilm_dir.rglob("*"):
            if p.is_file():
                assert (snap / p.relative_to(minilm_dir)).read_bytes() == p.read_bytes(), p
        assert hub.requests() == []  # not one request reached the upstream hub
        listing = zoo_cli(b.home, s3_env, "versions", REPO).stdout
        assert "v1" in listing and f"object store s3://{s3_bucket}/team: 1 of these versions on this disk" in listing, \
            listing
        status = b.status()["object_store"]
        assert status["reachable"] and status["url"] == f"s3://{s3_bucket}/team", status

    # the CLI on a third machine's store, synced from the bucket and nothing fetched: what is where
    with central(tmp_path / "c", s3_bucket, s3_env, hub.endpoint) as c:
        wait_for("the sync", lambda: (c.home / "versions" / FOLDER / "v0001.json").exists())
        listing = zoo_cli(c.home, s3_env, "ls").stdout
        assert REPO in listing and f"in the bucket only: {REPO}@v1" in listing, listing
        du = zoo_cli(c.home, s3_env, "du").stdout
        assert f"in s3://{s3_bucket}/team: {len(list(p for p in minilm_dir.rglob('*') if p.is_file()))} objects, " \
               "1 versions" in du and "of them on this disk too (0 objects)" in du, du
        out = zoo_cli(c.home, s3_env, "verify", "--bucket").stdout
        assert "all objects present, all intact" in out, out
        assert not (c.home / "objects").exists() or not any((c.home / "objects").rglob("*/*"))  # verify fetched nothing


@pytest.mark.slow
def test_two_daemons_pulling_one_cold_file_at_once_store_one_object_from_one_upstream_get(
        tmp_path, hub, minilm_dir, s3, s3_bucket, s3_env):
    hub.reset_counts()
    with SlowUpstream(hub.endpoint, rate=24 << 20) as slow, \
            central(tmp_path / "a", s3_bucket, s3_env, slow.endpoint) as a, \
            central(tmp_path / "b", s3_bucket, s3_env, slow.endpoint) as b:
        got: dict[str, str] = {}
        errors: list[BaseException] = []

        def fetch(daemon: HttpDaemon, name: str) -> None:
            try:
                got[name] = hf(daemon, tmp_path / name, f"print(h.hf_hub_download({REPO!r}, {WEIGHTS!r}))")
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=fetch, args=(d, n)) for d, n in ((a, "ca"), (b, "cb"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors
        reference = (minilm_dir / WEIGHTS).read_bytes()
        for path in got.values():
            assert Path(path).read_bytes() == reference
        assert hub.gets_per_file().get(WEIGHTS) == 1, hub.requests()  # one upstream GET for both daemons
        objects = [k for k in bucket_objects(s3, s3_bucket) if k.endswith(sha256(reference))]
        assert objects == [f"objects/sha256/{sha256(reference)[:2]}/{sha256(reference)}"]


@pytest.mark.slow
def test_a_daemon_killed_during_uploads_leaves_no_version_of_missing_or_partial_objects(
        tmp_path, minilm_dir, s3, s3_bucket, s3_env):
    home = tmp_path / "a"
    rng = random.Random(19)
    trials = 10
    for trial in range(trials):  # each import brings new content (its config differs), so each uploads 90 MB
        src = tmp_path / f"src{trial}"
        src.mkdir()
        for p in minilm_dir.iterdir():
            if p.is_file():
                (src / p.name).write_bytes(p.read_bytes())
        cfg = json.loads((src / "config.json").read_text())
        (src / "config.json").write_text(json.dumps({**cfg, "zoo_trial": trial}))
        (src / WEIGHTS).write_bytes((src / WEIGHTS).read_bytes()[:-8] + trial.to_bytes(8, "little"))
        daemon = central(home, s3_bucket, s3_env, "http://127.0.0.1:9").start()
        importer = subprocess.Popen([sys.executable, "-m", "zoo", "import", str(src), "--name", "killed"],
                                    env={**os.environ, **s3_env, "ZOO_HOME": str(home)},
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.2, 2.5))
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(timeout=30)
        importer.communicate(timeout=120)
        check_bucket_complete(s3, s3_bucket)  # after every kill: nothing visible that is not whole
    records = check_bucket_complete(s3, s3_bucket)
    # the store itself: every local version is in the bucket (none was made visible before its record)
    local = sorted(p.name for p in (home / "versions" / "models--local--killed").glob("v*.json")) \
        if (home / "versions" / "models--local--killed").is_dir() else []
    assert {f"versions/models--local--killed/{name}" for name in local} <= set(records)
    # multipart uploads a killed daemon left are invisible, and zoo gc (without a daemon) aborts them
    left = s3.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    print(f"{len(left)} unfinished multipart uploads after {trials} kills; {len(records)} versions in the bucket")
    (home / "daemon.sock").unlink()
    out = zoo_cli(home, {**s3_env, "ZOO_GC_GRACE": "0"}, "gc").stdout
    assert "unfinished uploads aborted" in out, out
    assert s3.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    check_bucket_complete(s3, s3_bucket)
    # and the store still works: the next import completes, in the bucket too
    with central(home, s3_bucket, s3_env, "http://127.0.0.1:9"):
        zoo_cli(home, s3_env, "import", str(tmp_path / "src0"), "--name", "killed")
    assert any(r.startswith("versions/models--local--killed/") for r in check_bucket_complete(s3, s3_bucket))


@pytest.mark.slow
def test_an_unreachable_bucket_refuses_writes_clearly_and_local_reads_go_on(
        tmp_path, tiny_bert, s3, s3_bucket, s3_env):
    import zoo

    home = tmp_path / "a"
    saved = zoo.save(zoo.build(tiny_bert), tmp_path / "tiny")
    with central(home, s3_bucket, s3_env, "http://127.0.0.1:9") as a:
        zoo_cli(home, s3_env, "import", str(saved), "--name", "here")
        before = a.get("/api/models/local/here/tree/main")
        s3.stop()  # the object store is gone: connections refused
        try:
            out = zoo_cli(home, s3_env, "import", str(saved), "--name", "other", ok=False)
            assert out.returncode != 0
            assert "object store" in out.stderr and "no version was made" in out.stderr, out.stderr
            assert "Traceback" not in out.stderr
            assert "other" not in zoo_cli(home, s3_env, "ls").stdout
            # what is local is still served: through the Hub protocol and to zoo.load in a fresh process
            assert a.get("/api/models/local/here/tree/main")[0] == before[0] == 200
            status, _, body = a.get("/local/here/resolve/main/config.json")
            assert status == 200 and body == (saved / "config.json").read_bytes()
            load = subprocess.run([sys.executable, "-c", "import zoo; print(type(zoo.load('here')).__name__)"],
                                  env={**os.environ, **s3_env, "ZOO_HOME": str(home)}, capture_output=True,
                                  text=True, timeout=300)
            assert load.returncode == 0 and "BertModel" in load.stdout, load.stderr[-3000:]
            state = a.status()["object_store"]
            assert state["url"] == f"s3://{s3_bucket}/team"
        finally:
            s3.start()


@pytest.mark.slow
def test_a_damaged_object_in_the_bucket_is_never_served(tmp_path, hub, minilm_dir, tiny_bert, s3, s3_bucket, s3_env):
    import zoo

    reference = (minilm_dir / WEIGHTS).read_bytes()
    key = f"team/objects/sha256/{sha256(reference)[:2]}/{sha256(reference)}"
    saved = zoo.save(zoo.build(tiny_bert), tmp_path / "tiny")
    with central(tmp_path / "a", s3_bucket, s3_env, hub.endpoint) as a:
        hf(a, tmp_path / "c1", f"print(h.snapshot_download({REPO!r}))")
        zoo_cli(a.home, s3_env, "import", str(saved), "--name", "mine")
        wait_for("the version record", lambda: f"versions/{FOLDER}/v0001.json" in bucket_objects(s3, s3_bucket))
    damaged = bytearray(reference)
    damaged[len(damaged) // 2] ^= 0xFF
    s3.client().put_object(Bucket=s3_bucket, Key=key, Body=bytes(damaged))  # same size, one byte flipped
    local_weights = next(f for f in json.loads(read_key(s3, s3_bucket, "versions/models--local--mine/v0001.json"))
                         ["files"] if f["path"] == WEIGHTS)
    mine_key = f"team/objects/sha256/{local_weights['sha256'][:2]}/{local_weights['sha256']}"
    good_mine = s3.client().get_object(Bucket=s3_bucket, Key=mine_key)["Body"].read()
    s3.client().put_object(Bucket=s3_bucket, Key=mine_key, Body=good_mine[:-1] + bytes([good_mine[-1] ^ 1]))

    hub.reset_counts()
    with central(tmp_path / "b", s3_bucket, s3_env, hub.endpoint) as b:
        # a hub file: the damaged object is refused, the file fetched from the upstream again: right bytes
        path = hf(b, tmp_path / "c2", f"print(h.hf_hub_download({REPO!r}, {WEIGHTS!r}))")
        assert Path(path).read_bytes() == reference
        assert hub.gets_per_file().get(WEIGHTS) == 1
        # an import has no upstream: the load fails and says why; the damaged bytes are never loaded or served
        load = subprocess.run([sys.executable, "-c", "import zoo; zoo.load('mine')"], capture_output=True, text=True,
                              env={**os.environ, **s3_env, "ZOO_HOME": str(b.home)}, timeout=300)
        assert load.returncode != 0 and "damaged in the bucket" in load.stderr, load.stderr[-3000:]
        try:  # through the Hub protocol: an error, or the connection cut before the last byte (never a whole file)
            status, _, body = b.get(f"/local/mine/resolve/main/{WEIGHTS}")
            assert status != 200 or body != good_mine[:-1] + bytes([good_mine[-1] ^ 1])
        except http.client.IncompleteRead as cut:
            assert len(cut.partial) < len(good_mine)
        assert not any(p.read_bytes() == bytes(damaged) for p in (b.home / "objects").rglob("*") if p.is_file())
        # zoo verify names what is wrong in the bucket
        out = zoo_cli(b.home, s3_env, "verify", "--bucket", ok=False)
        assert out.returncode == 1 and "damaged" in out.stdout, out.stdout + out.stderr


@pytest.mark.slow
def test_versions_made_on_one_daemon_are_numbered_and_removed_on_all(tmp_path, tiny_bert, s3, s3_bucket, s3_env):
    import zoo

    first = zoo.save(zoo.build(tiny_bert), tmp_path / "first")
    second = zoo.save(zoo.build({**tiny_bert, "hidden_dropout_prob": 0.2}), tmp_path / "second")
    with central(tmp_path / "a", s3_bucket, s3_env, "http://127.0.0.1:9") as a, \
            central(tmp_path / "b", s3_bucket, s3_env, "http://127.0.0.1:9") as b:
        zoo_cli(a.home, s3_env, "import", str(first), "--name", "shared")
        out = zoo_cli(b.home, s3_env, "import", str(second), "--name", "shared").stdout
        assert "shared v2" in out, out  # B took the next number: v1 was A's, in the bucket
        wait_for("A to see v2", lambda: "v2" in zoo_cli(a.home, s3_env, "versions", "shared").stdout)
        zoo_cli(a.home, s3_env, "rm", "shared@v1")
        assert "versions/models--local--shared/v0001.json" not in bucket_objects(s3, s3_bucket)
        wait_for("B to drop v1", lambda: "  v1 " not in zoo_cli(b.home, s3_env, "versions", "shared").stdout)
        assert "v2" in zoo_cli(b.home, s3_env, "versions", "shared").stdout


@pytest.mark.slow
def test_a_store_given_a_bucket_sends_its_versions_and_later_takes_removals_made_while_it_was_down(
        tmp_path, tiny_bert, s3, s3_bucket, s3_env):
    import zoo

    saved = zoo.save(zoo.build(tiny_bert), tmp_path / "tiny")
    home = tmp_path / "b"
    zoo_cli(home, {}, "import", str(saved), "--name", "before")  # a store without an object store, yet
    with central(home, s3_bucket, s3_env, "http://127.0.0.1:9"):
        wait_for("the store's versions sent", lambda: "versions/models--local--before/v0001.json"
                 in bucket_objects(s3, s3_bucket))
    check_bucket_complete(s3, s3_bucket)
    with central(tmp_path / "a", s3_bucket, s3_env, "http://127.0.0.1:9") as a:  # B is down meanwhile
        wait_for("A's sync", lambda: "v1" in zoo_cli(a.home, s3_env, "versions", "before", ok=False).stdout)
        zoo_cli(a.home, s3_env, "rm", "before")
    with central(home, s3_bucket, s3_env, "http://127.0.0.1:9"):
        wait_for("B to take the removal", lambda: "v1" not in zoo_cli(home, s3_env, "versions", "before", ok=False).stdout)
    assert not any(k.startswith("versions/") for k in bucket_objects(s3, s3_bucket))  # never sent back


@pytest.mark.slow
def test_a_new_or_emptied_bucket_costs_no_local_copy(tmp_path, tiny_bert, s3, s3_bucket, s3_env):
    """A daemon drops a version only when the bucket records its removal (number and id), never because a
    listing lacks it: pointed at an empty bucket (a new one, a wrong endpoint, a server restarted empty), it
    keeps every version and sends them there."""
    import zoo

    saved = zoo.save(zoo.build(tiny_bert), tmp_path / "tiny")
    home = tmp_path / "a"
    with central(home, s3_bucket, s3_env, "http://127.0.0.1:9"):
        zoo_cli(home, s3_env, "import", str(saved), "--name", "kept")
    s3.empty_bucket(s3_bucket)  # the same address, emptied: a server restarted on a fresh disk, a lifecycle rule
    assert bucket_objects(s3, s3_bucket) == {}
    with central(home, s3_bucket, s3_env, "http://127.0.0.1:9"):
        wait_for("the version sent again", lambda: "versions/models--local--kept/v0001.json"
                 in bucket_objects(s3, s3_bucket))
        time.sleep(3)  # several syncs
        assert "v1" in zoo_cli(home, s3_env, "versions", "kept").stdout
    load = subprocess.run([sys.executable, "-c", "import zoo; zoo.load('kept')"], capture_output=True, text=True,
                          env={**os.environ, **s3_env, "ZOO_HOME": str(home), "ZOO_OFFLINE": "1"}, timeout=300)
    assert load.returncode == 0, load.stderr[-2000:]


@pytest.mark.slow
def test_a_bucket_that_does_not_answer_never_holds_up_what_is_local(tmp_path, tiny_bert, s3, s3_bucket, s3_env):
    """Requests that would ask the bucket (made-up commits) while it is down run beside the event loop: a local
    file is still served at once (the bound is generous: one bucket call alone takes 3 s or more to fail)."""
    import zoo

    saved = zoo.save(zoo.build(tiny_bert), tmp_path / "tiny")
    with central(tmp_path / "a", s3_bucket, s3_env, "http://127.0.0.1:9") as a:
        zoo_cli(a.home, s3_env, "import", str(saved), "--name", "here")
        s3.pause()  # connections accepted, nothing answers: every bucket call waits for its timeout
        try:
            threads = [threading.Thread(target=a.get, args=(f"/api/models/org/m{i}/revision/{os.urandom(20).hex()}",))
                       for i in range(6)]
            for t in threads:
                t.start()
            time.sleep(0.5)
            start = time.monotonic()
            status, _, body = a.get("/local/here/resolve/main/config.json")
            took = time.monotonic() - start
            assert status == 200 and body == (saved / "config.json").read_bytes()
            assert took < 2.5, f"a local file waited {took:.1f} s on the bucket"
        finally:
            s3.resume()
        for t in threads:
            t.join(timeout=120)
