"""zoo daemon --http as clients meet it: unmodified huggingface_hub, transformers and `hf download` against a
real daemon process, with the test hub (olah behind a counting proxy) as its upstream."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from http_daemon import HttpDaemon
from hubserver import SlowUpstream as _SlowUpstream

REPO = "sentence-transformers/all-MiniLM-L6-v2"
HF = [sys.executable, "-c"]


def client_env(daemon: HttpDaemon, home: Path, **extra: str) -> dict:
    env = {**os.environ, "HF_ENDPOINT": daemon.endpoint, "HF_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", **extra}
    if "HF_TOKEN" not in extra:
        env.pop("HF_TOKEN", None)
    env.pop("HF_HUB_OFFLINE", None)
    return env


def run_client(code: str, env: dict, timeout: int = 300) -> str:
    out = subprocess.run([*HF, code], env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout


def same_files(snapshot: Path, source: Path) -> list[str]:
    files = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
    for rel in files:
        assert (snapshot / rel).read_bytes() == (source / rel).read_bytes(), rel
    return files


@pytest.fixture
def daemon(tmp_path, hub):
    hub.reset_counts()
    with HttpDaemon(tmp_path / "served", upstream=hub.endpoint) as d:
        yield d


@pytest.mark.slow
def test_snapshot_download_then_hf_download_make_no_upstream_request(daemon, hub, minilm_dir, tmp_path):
    code = f"from huggingface_hub import snapshot_download; print(snapshot_download({REPO!r}))"
    snapshot = Path(run_client(code, client_env(daemon, tmp_path / "c1")).strip().splitlines()[-1])
    files = same_files(snapshot, minilm_dir)
    gets = [p.split("/resolve/", 1)[1].split("/", 1)[1] for m, p in hub.requests() if m == "GET" and "/resolve/" in p]
    assert sorted(gets) == files  # one GET per file reached the upstream

    hub.reset_counts()
    out = subprocess.run([str(Path(sys.executable).parent / "hf"), "download", REPO, "--local-dir",
                          str(tmp_path / "cli")], env=client_env(daemon, tmp_path / "c2"),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    same_files(tmp_path / "cli", minilm_dir)
    assert hub.requests() == []  # warm on the daemon: the upstream is not asked again

    # what was pulled through is a zoo version too: zoo.load on the server finds it
    listing = subprocess.run([sys.executable, "-m", "zoo", "versions", REPO], capture_output=True, text=True,
                             env={**os.environ, "ZOO_HOME": str(daemon.home), "ZOO_OFFLINE": "1"})
    assert "v1" in listing.stdout, listing.stdout + listing.stderr


def test_hf_hub_download_headers_and_errors(daemon, hub, minilm_dir, tmp_path):
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    cache = tmp_path / "cache"
    path = hf_hub_download(REPO, "config.json", cache_dir=cache, endpoint=daemon.endpoint)
    assert Path(path).read_bytes() == (minilm_dir / "config.json").read_bytes()
    meta = get_hf_file_metadata(hf_hub_url(REPO, "model.safetensors", endpoint=daemon.endpoint))
    upstream = get_hf_file_metadata(hf_hub_url(REPO, "model.safetensors", endpoint=hub.endpoint))
    assert (meta.commit_hash, meta.etag, meta.size) == (upstream.commit_hash, upstream.etag, upstream.size)
    assert meta.size == (minilm_dir / "model.safetensors").stat().st_size

    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "no-such-file.json", cache_dir=cache, endpoint=daemon.endpoint)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("nobody/no-such-repo", "config.json", cache_dir=cache, endpoint=daemon.endpoint)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="no-such-branch", cache_dir=cache, endpoint=daemon.endpoint)
    # a model of a checksum the hub would send: no Xet headers, ranges announced
    status, headers, _ = daemon.get(f"/{REPO}/resolve/main/model.safetensors", method="HEAD")
    assert status == 200 and headers["Accept-Ranges"] == "bytes"
    assert not any(k.lower().startswith("x-xet") for k in headers)


def test_ranges_206_and_416(daemon, minilm_dir):
    data = (minilm_dir / "vocab.txt").read_bytes()
    status, headers, body = daemon.get(f"/{REPO}/resolve/main/vocab.txt", {"Range": "bytes=100-199"})
    assert status == 206 and body == data[100:200]
    assert headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    status, _, body = daemon.get(f"/{REPO}/resolve/main/vocab.txt", {"Range": "bytes=-10"})
    assert status == 206 and body == data[-10:]
    status, headers, _ = daemon.get(f"/{REPO}/resolve/main/vocab.txt", {"Range": f"bytes={len(data)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(data)}"


def test_tree_paths_info_and_model_info_match_the_upstream(tmp_path, hub, minilm_dir):
    from huggingface_hub import HfApi

    with HttpDaemon(tmp_path / "served", upstream=hub.endpoint, args=("--tree-page-size", "2")) as daemon:
        ours, theirs = HfApi(endpoint=daemon.endpoint), HfApi(endpoint=hub.endpoint)
        files = sorted(p.relative_to(minilm_dir).as_posix() for p in minilm_dir.rglob("*") if p.is_file())
        assert sorted(ours.list_repo_files(REPO)) == files  # 2 entries a page: pages followed to the end
        tree = {e.path: e for e in ours.list_repo_tree(REPO, recursive=True)}
        upstream = {e.path: e for e in theirs.list_repo_tree(REPO, recursive=True)}
        for path in files:  # the same git blob ids, sizes and LFS digests as the hub's
            mine, real = tree[path], upstream[path]
            assert (mine.blob_id, mine.size) == (real.blob_id, real.size), path
            assert (mine.lfs.sha256 if mine.lfs else None) == (real.lfs.sha256 if real.lfs else None), path
        top = {e.path: type(e).__name__ for e in ours.list_repo_tree(REPO)}
        assert top["1_Pooling"] == "RepoFolder" and top["config.json"] == "RepoFile"
        info = ours.model_info(REPO, revision="main", files_metadata=True)
        assert info.sha == theirs.model_info(REPO, revision="main").sha
        sizes = {s.rfilename: s.size for s in info.siblings}
        assert sizes == {f: (minilm_dir / f).stat().st_size for f in files}
        paths = ours.get_paths_info(REPO, ["config.json", "1_Pooling", "missing.txt"])
        assert sorted(p.path for p in paths) == ["1_Pooling", "config.json"]


@pytest.mark.slow
def test_transformers_from_pretrained_through_the_daemon(daemon, minilm_dir, tmp_path):
    code = (
        "import torch, transformers\n"
        f"a = transformers.AutoModel.from_pretrained({REPO!r})\n"
        f"b = transformers.AutoModel.from_pretrained({str(minilm_dir)!r})\n"
        "sa, sb = a.state_dict(), b.state_dict()\n"
        "assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)\n"
        "print('same', len(sa))\n"
    )
    assert run_client(code, client_env(daemon, tmp_path / "c")).startswith("same")


@pytest.mark.slow
def test_local_names_and_versions_are_served(tmp_path, hub, tiny_bert, monkeypatch):
    import torch
    import zoo
    from huggingface_hub import HfApi, hf_hub_download

    home = tmp_path / "served"
    monkeypatch.setenv("ZOO_HOME", str(home))
    model = zoo.build(tiny_bert)
    zoo.save(model, "team-bert")
    torch.nn.init.normal_(model.embeddings.word_embeddings.weight)
    zoo.save(model, "team-bert")  # v2
    with HttpDaemon(home, upstream=hub.endpoint) as daemon:
        api = HfApi(endpoint=daemon.endpoint)
        v1, v2, main = (api.model_info("local/team-bert", revision=r).sha for r in ("v1", "v2", "main"))
        assert v1 != v2 and main == v2
        cache = tmp_path / "cache"
        for rev, version in (("v1", 1), ("main", 2)):
            got = hf_hub_download("local/team-bert", "model.safetensors", revision=rev, cache_dir=cache,
                                  endpoint=daemon.endpoint)
            stored = zoo.api.default_store().find("local/team-bert", f"v{version}")
            assert Path(got).read_bytes() == (zoo.api.default_store().snapshot(stored) / "model.safetensors").read_bytes()
        code = ("import transformers; m = transformers.AutoModel.from_pretrained('local/team-bert'); "
                "print(m.embeddings.word_embeddings.weight.sum().item())")
        out = run_client(code, client_env(daemon, tmp_path / "c"))
        assert abs(float(out.split()[-1]) - model.embeddings.word_embeddings.weight.sum().item()) < 1e-3


@pytest.mark.slow
def test_offline_serves_what_is_stored_and_says_what_is_not(tmp_path, hub, minilm_dir):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    home = tmp_path / "served"
    env = {"HF_ENDPOINT": hub.endpoint}
    subprocess.run([sys.executable, "-m", "zoo", "-q", "pull", REPO], check=True, timeout=300,
                   env={**os.environ, "ZOO_HOME": str(home), **env})
    hub.reset_counts()
    with HttpDaemon(home, upstream=hub.endpoint, args=("--offline",)) as daemon:
        cache = tmp_path / "cache"
        got = hf_hub_download(REPO, "model.safetensors", cache_dir=cache, endpoint=daemon.endpoint)
        assert Path(got).read_bytes() == (minilm_dir / "model.safetensors").read_bytes()
        with pytest.raises(EntryNotFoundError, match="offline"):
            hf_hub_download(REPO, "README.md", cache_dir=cache, endpoint=daemon.endpoint)  # not pulled
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download("google-bert/bert-base-uncased", "config.json", cache_dir=cache, endpoint=daemon.endpoint)
    assert hub.requests() == []


def test_a_branch_is_revalidated_and_a_commit_never_asked_again(tmp_path, hub):
    from huggingface_hub import HfApi, hf_hub_download

    repo = f"zoo-tests/moving-{os.getpid()}-{time.monotonic_ns()}"
    first = hub.add_repo(repo, {"config.json": b'{"model_type": "bert", "n": 1}'}, tag="release-1")
    with HttpDaemon(tmp_path / "served", upstream=hub.endpoint, args=("--revalidate", "1.5")) as daemon:
        api = HfApi(endpoint=daemon.endpoint)
        assert api.model_info(repo, revision="main").sha == first
        assert api.model_info(repo, revision="release-1").sha == first  # a tag
        second = hub.add_repo(repo, {"config.json": b'{"model_type": "bert", "n": 2}'})
        hub.reset_counts()
        assert api.model_info(repo, revision="main").sha == first  # within the interval: not asked
        assert hub.requests() == []
        time.sleep(1.6)
        # past the interval: the next answers ask the upstream once, in the background (a hit never waits),
        # and the new commit is served as soon as its answer is in
        deadline, seen = time.monotonic() + 10, []
        while time.monotonic() < deadline and (not seen or seen[-1] != second):
            seen.append(api.model_info(repo, revision="main").sha)
            time.sleep(0.05)
        assert seen[-1] == second and set(seen) <= {first, second}
        assert sum("/revision/main" in p for _, p in hub.requests()) == 1
        assert sum(second in p for _, p in hub.requests() if "/tree/" in p) >= 1  # the new commit is listed
        hub.reset_counts()
        for _ in range(3):
            path = hf_hub_download(repo, "config.json", revision=first, cache_dir=tmp_path / f"c{_}",
                                   endpoint=daemon.endpoint)
            assert json.loads(Path(path).read_text())["n"] == 1
        assert [p for _, p in hub.requests() if "/api/" in p and first in p] == []  # known commit: never asked
        assert sum("/resolve/" in p for _, p in hub.requests()) == 1  # and its file fetched once


@pytest.mark.slow
def test_a_cold_file_streams_while_it_arrives_and_a_killed_download_resumes_with_range(tmp_path, hub, minilm_dir):
    """The killed client is `zoo pull` (huggingface_hub 2.x no longer resumes across processes: each
    process downloads into a file of its own); zoo keeps its partial file and asks for the rest."""
    slow = _SlowUpstream(hub.endpoint, rate=15 << 20)  # 90 MB in about 6 s
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    try:
        with HttpDaemon(tmp_path / "served", upstream=slow.endpoint) as daemon:
            client_home = tmp_path / "client-store"
            env = {**os.environ, "ZOO_HOME": str(client_home), "HF_ENDPOINT": daemon.endpoint}
            pull = [sys.executable, "-m", "zoo", "-q", "pull", REPO]
            client = subprocess.Popen(pull, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline, seen = time.monotonic() + 60, 0
            while time.monotonic() < deadline and seen < 20 << 20 and client.poll() is None:
                seen = max((p.stat().st_size for p in (client_home / "tmp").glob("*.part")), default=0) \
                    if (client_home / "tmp").is_dir() else 0
                time.sleep(0.01)
            client.send_signal(signal.SIGKILL)
            client.wait(30)
            assert seen >= 20 << 20, "the client received less than 20 MB within a minute"
            # the client had 20 MB while the daemon was still receiving the file: streamed, not stored first
            assert not slow.finished, "the upstream had already sent the whole file"
            jobs = daemon.status()["jobs"]  # and zoo daemon status shows the download with its progress
            assert any(j["op"] == "http-pull" and 0 < j["done"] < j["total"] for j in jobs), jobs
            subprocess.run(pull, env=env, check=True, timeout=300)
            stored = next((client_home / "hub").rglob("snapshots/*/model.safetensors"))
            assert stored.read_bytes() == (minilm_dir / "model.safetensors").read_bytes()
            assert daemon.status()["http"]["requests"].get("ranges", 0) >= 1  # the rest only, with Range
        assert sum(p.endswith("/model.safetensors") for p in slow.finished) == 1  # fetched upstream once
    finally:
        slow.shutdown()
        slow.server_close()


def test_curl_resumes_a_cut_download_with_range(daemon, minilm_dir, tmp_path):
    source = (minilm_dir / "model.safetensors").read_bytes()
    daemon.get(f"/{REPO}/resolve/main/model.safetensors", method="HEAD")
    target = tmp_path / "model.safetensors"
    target.write_bytes(source[:12345])  # what a killed curl left
    url = f"{daemon.endpoint}/{REPO}/resolve/main/model.safetensors"
    out = subprocess.run(["curl", "-sS", "-f", "-L", "-C", "-", "-o", str(target), url], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert target.read_bytes() == source
    assert daemon.status()["http"]["requests"].get("ranges", 0) == 1


def test_an_upstream_that_sends_damaged_bytes_never_gives_a_client_a_whole_wrong_file(tmp_path, hub, minilm_dir):
    import http.client

    bad = _SlowUpstream(hub.endpoint, rate=1 << 30, corrupt=True, match="tokenizer.json")
    threading.Thread(target=bad.serve_forever, daemon=True).start()
    try:
        with HttpDaemon(tmp_path / "served", upstream=bad.endpoint) as daemon:
            size = (minilm_dir / "tokenizer.json").stat().st_size
            for _ in range(2):  # a client that tries again meets the same refusal
                conn = http.client.HTTPConnection(daemon.host, daemon.port, timeout=60)
                conn.request("GET", f"/{REPO}/resolve/main/tokenizer.json")
                response = conn.getresponse()
                if response.status == 200:  # the stream began before the digest failed: it is cut short
                    assert int(response.headers["Content-Length"]) == size
                    with pytest.raises(http.client.IncompleteRead) as cut:
                        response.read()
                    assert len(cut.value.partial) < size
                else:  # or the download failed before its first byte: an error status
                    assert response.status == 502, response.read()
                conn.close()
            objects = [p for p in (daemon.home / "objects").rglob("*") if p.is_file()]
            assert objects == []  # nothing damaged was stored
            assert "failed their digest" in daemon.log.read_text() or "expected" in daemon.log.read_text()
    finally:
        bad.shutdown()
        bad.server_close()


@pytest.mark.slow
def test_a_stored_file_changed_on_disk_is_checked_before_it_is_served(tmp_path, hub, minilm_dir):
    from huggingface_hub import hf_hub_download

    home = tmp_path / "served"
    subprocess.run([sys.executable, "-m", "zoo", "-q", "pull", REPO], check=True, timeout=300,
                   env={**os.environ, "ZOO_HOME": str(home), "HF_ENDPOINT": hub.endpoint})
    config = minilm_dir / "config.json"
    import hashlib

    obj = home / "objects" / "sha256"
    target = next(p for p in obj.rglob("*") if p.is_file() and p.name == hashlib.sha256(config.read_bytes()).hexdigest())
    os.chmod(target, 0o644)
    target.write_bytes(b"{" + b" " * (config.stat().st_size - 2) + b"}")  # same size, other content
    hub.reset_counts()
    with HttpDaemon(home, upstream=hub.endpoint) as daemon:
        got = hf_hub_download(REPO, "config.json", cache_dir=tmp_path / "cache", endpoint=daemon.endpoint)
        assert Path(got).read_bytes() == config.read_bytes()
    assert sum("/resolve/" in p and p.endswith("/config.json") for _, p in hub.requests()) == 1  # fetched again
    assert list((home / "quarantine").iterdir())  # the damaged copy was moved aside, not served


def _get(daemon: HttpDaemon, path: str, headers: dict | None = None) -> tuple[int, dict, bytes, bool]:
    """status, headers, body, and whether the body was cut short."""
    import http.client

    conn = http.client.HTTPConnection(daemon.host, daemon.port, timeout=120)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        try:
            return response.status, dict(response.headers), response.read(), False
        except http.client.IncompleteRead as cut:
            return response.status, dict(response.headers), cut.partial, True
    finally:
        conn.close()


def test_a_client_cut_off_a_damaged_download_gets_the_whole_file_when_it_resumes(tmp_path, hub, minilm_dir):
    """Bytes of a try that failed its digest were streamed: a Range request for the rest would glue a good
    tail to a bad head, so the daemon answers it with the whole file instead (200)."""
    good = (minilm_dir / "tokenizer.json").read_bytes()
    bad = _SlowUpstream(hub.endpoint, rate=400 << 10, corrupt=1, match="tokenizer.json")  # ~1 s a body
    threading.Thread(target=bad.serve_forever, daemon=True).start()
    try:
        with HttpDaemon(tmp_path / "served", upstream=bad.endpoint) as daemon:
            status, _, head, cut = _get(daemon, f"/{REPO}/resolve/main/tokenizer.json")
            assert status == 200 and cut and 0 < len(head) < len(good)
            assert head[:1] != good[:1]  # the client did receive a damaged first byte before the cut
            status, headers, body, cut = _get(daemon, f"/{REPO}/resolve/main/tokenizer.json",
                                              {"Range": f"bytes={len(head)}-"})
            assert (status, cut) == (200, False) and "Content-Range" not in headers
            assert body == good
            assert bad.bodies == 2  # the damaged try and the good one
    finally:
        bad.shutdown()
        bad.server_close()


def test_one_file_at_two_commits_and_one_content_in_two_repos_download_at_once(tmp_path, hub):
    """Transfers are keyed by content: the same path at two commits is two downloads, and one content in
    two repositories is one download that both get."""
    import concurrent.futures

    one, two = os.urandom(3 << 20), os.urandom(3 << 20)
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    repo_a, repo_b = f"zoo-tests/a-{tag}", f"zoo-tests/b-{tag}"
    first = hub.add_repo(repo_a, {"w.safetensors": one})
    second = hub.add_repo(repo_a, {"w.safetensors": two})
    hub.add_repo(repo_b, {"w.safetensors": two})
    slow = _SlowUpstream(hub.endpoint, rate=2 << 20)  # 1.5 s a body
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    try:
        with HttpDaemon(tmp_path / "served", upstream=slow.endpoint) as daemon:
            paths = [f"/{repo_a}/resolve/{first}/w.safetensors", f"/{repo_a}/resolve/{second}/w.safetensors",
                     f"/{repo_b}/resolve/main/w.safetensors"]
            with concurrent.futures.ThreadPoolExecutor(3) as pool:
                results = list(pool.map(lambda p: _get(daemon, p), paths))
            assert [(r[0], r[3]) for r in results] == [(200, False)] * 3
            assert [r[2] for r in results] == [one, two, two]
        assert slow.bodies == 2  # the content both repositories hold was fetched once
    finally:
        slow.shutdown()
        slow.server_close()


def test_an_absent_file_names_its_commit_so_clients_remember_it(daemon, tmp_path):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    status, headers, _, _ = _get(daemon, f"/{REPO}/resolve/main/model.safetensors.index.json")
    assert status == 404 and headers["X-Error-Code"] == "EntryNotFound" and len(headers["X-Repo-Commit"]) == 40
    cache = tmp_path / "cache"
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "model.safetensors.index.json", cache_dir=cache, endpoint=daemon.endpoint)
    # transformers asks for optional files on every load; this is what spares it the request next time
    assert list(cache.glob(f"models--*/.no_exist/{headers['X-Repo-Commit']}/model.safetensors.index.json"))


def test_a_bad_paths_info_body_is_a_400(daemon):
    request = urllib.request.Request(f"{daemon.endpoint}/api/models/{REPO}/paths-info/main", data=b"{",
                                     headers={"Content-Type": "application/json"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=30)
    assert err.value.code == 400
    assert "Traceback" not in daemon.log.read_text()


@pytest.mark.slow
def test_files_no_version_lists_yet_do_not_fill_the_quota_for_good(tmp_path, hub):
    """A file fetched for another machine joins a version only once the files a load needs are there; until
    then eviction (which removes versions) cannot see it. Under quota pressure it is collected."""
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    config = b'{"model_type": "bert"}'
    repo_x, repo_y = f"zoo-tests/x-{tag}", f"zoo-tests/y-{tag}"
    hub.add_repo(repo_x, {"config.json": config, "model.safetensors": os.urandom(40 << 20)})
    hub.add_repo(repo_y, {"config.json": config, "model.safetensors": os.urandom(40 << 20)})
    with HttpDaemon(tmp_path / "served", upstream=hub.endpoint,
                    args=("--max-size", "60MB", "--orphan-grace", "1")) as daemon:
        status, _, body, cut = _get(daemon, f"/{repo_x}/resolve/main/model.safetensors")
        assert (status, cut, len(body)) == (200, False, 40 << 20)
        assert not (daemon.home / "versions").exists() or not list((daemon.home / "versions").rglob("*.json"))
        time.sleep(1.5)
        status, _, body, cut = _get(daemon, f"/{repo_y}/resolve/main/model.safetensors")
        assert (status, cut, len(body)) == (200, False, 40 << 20), body[:300]


def test_content_stored_for_one_repository_is_served_under_another_only_if_the_upstream_serves_it(tmp_path, hub):
    """The store keeps each content once. A repository whose listing names content stored for another one
    (a gated one, say) gets it only after the upstream says it serves this repository that file."""
    data = os.urandom(2 << 20)
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    mine, theirs, other = f"zoo-tests/mine-{tag}", f"zoo-tests/theirs-{tag}", f"zoo-tests/other-{tag}"
    for repo in (mine, theirs, other):
        hub.add_repo(repo, {"w.safetensors": data})
    upstream = _SlowUpstream(hub.endpoint, rate=1 << 30, deny=theirs)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    try:
        with HttpDaemon(tmp_path / "served", upstream=upstream.endpoint) as daemon:
            assert _get(daemon, f"/{mine}/resolve/main/w.safetensors")[2] == data
            status, _, body, _ = _get(daemon, f"/{theirs}/resolve/main/w.safetensors")
            assert status == 404 and data not in body
            status, _, body, cut = _get(daemon, f"/{other}/resolve/main/w.safetensors")
            assert (status, cut, body == data) == (200, False, True)
            assert upstream.bodies == 1  # confirmed with a HEAD, not downloaded again
    finally:
        upstream.shutdown()
        upstream.server_close()


def test_no_answer_ends_on_bytes_of_a_damaged_download(tmp_path, hub, minilm_dir):
    """A range that ends before the file does, and a client that went away and resumes later: neither
    completes with bytes of a try that failed its digest."""
    import socket

    good = (minilm_dir / "tokenizer.json").read_bytes()
    bad = _SlowUpstream(hub.endpoint, rate=400 << 10, corrupt=2, match="tokenizer.json")  # both tries damaged
    threading.Thread(target=bad.serve_forever, daemon=True).start()
    try:
        with HttpDaemon(tmp_path / "served", upstream=bad.endpoint) as daemon:
            # a client reads a little of the damaged stream, then goes away
            leaver = socket.create_connection((daemon.host, daemon.port))
            leaver.sendall(f"GET /{REPO}/resolve/main/tokenizer.json HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            got = b""
            while len(got) < 4096:
                got += leaver.recv(65536)
            leaver.close()
            # a chunked downloader asks for the first 100 kB only
            status, _, body, cut = _get(daemon, f"/{REPO}/resolve/main/tokenizer.json", {"Range": "bytes=0-99999"})
            assert cut or status != 206 or body == good[:100000]
            deadline = time.monotonic() + 30  # the second try fails its digest too: the transfer ends
            while time.monotonic() < deadline and "the pull-through failed" not in daemon.log.read_text():
                time.sleep(0.05)
            assert bad.bodies == 2
        bad.corrupt = False
        with HttpDaemon(tmp_path / "served", upstream=bad.endpoint) as daemon:  # restarted; the upstream heals
            status, headers, body, cut = _get(daemon, f"/{REPO}/resolve/main/tokenizer.json", {"Range": "bytes=2000-"})
            assert (status, cut, body) == (200, False, good)  # whole: the leaver may hold damaged bytes
    finally:
        bad.shutdown()
        bad.server_close()


def test_content_stored_while_a_pull_waits_for_its_lock_is_still_confirmed(tmp_path, hub):
    """The file's lock is held (by another pull of the same content); meanwhile the content is stored. The
    waiting repository still asks the upstream before it serves it."""
    import hashlib

    from zoo.store.locks import locked

    data = os.urandom(1 << 20)
    sha = hashlib.sha256(data).hexdigest()
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    theirs = f"zoo-tests/locked-{tag}"
    hub.add_repo(theirs, {"w.safetensors": data})
    upstream = _SlowUpstream(hub.endpoint, rate=1 << 30, deny=theirs)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    home = tmp_path / "served"
    try:
        with HttpDaemon(home, upstream=upstream.endpoint) as daemon:
            answer = {}
            with locked(home / "locks" / f"blob-{sha}.lock", what="a test"):
                worker = threading.Thread(target=lambda: answer.update(
                    r=_get(daemon, f"/{theirs}/resolve/main/w.safetensors")))
                worker.start()
                time.sleep(1.0)  # the daemon's pull waits for the lock
                obj = home / "objects" / "sha256" / sha[:2] / sha
                obj.parent.mkdir(parents=True, exist_ok=True)
                obj.write_bytes(data)  # stored meanwhile, as for another repository
            worker.join(60)
            status, _, body, _ = answer["r"]
            assert status == 404 and data not in body
    finally:
        upstream.shutdown()
        upstream.server_close()


def test_http_settings_from_the_config_file(tmp_path, hub):
    config = tmp_path / "zoo.toml"
    config.write_text('[daemon]\noffline = true\nrevalidate = 5\ntree-page-size = 2\n')
    hub.reset_counts()
    with HttpDaemon(tmp_path / "served", upstream=hub.endpoint, args=("--config", str(config))) as daemon:
        status, headers, _ = daemon.get(f"/api/models/{REPO}/revision/main")
        assert status == 404 and "offline" in headers["X-Error-Message"]
    assert hub.requests() == []  # offline, from the file
    config.write_text('[daemon]\nhttp = 42\n')
    out = subprocess.run([sys.executable, "-m", "zoo", "daemon", "--config", str(config), "--store",
                          str(tmp_path / "other")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "http must be str" in out.stderr
