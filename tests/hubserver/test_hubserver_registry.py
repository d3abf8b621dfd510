"""The registry over the Hub protocol (#17, part 6): unmodified huggingface_hub (and transformers) clients against
a real ``zoo daemon --http`` see aliases as tags, versions as commits (who made them, when), each file's last
commit with ``expand=true``, the ``raw`` route and the revision ``HEAD``; a node daemon in a tier serves its
central daemon's ``local/`` names and aliases; a token's ``read=`` scope limits what it opens."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from http_daemon import HttpDaemon, free_port

REPO = "sentence-transformers/all-MiniLM-L6-v2"


def _save_versions(home: Path, name: str, count: int, monkeypatch, tiny_bert: dict, seed: int = 0) -> list:
    """``count`` versions of ``name`` in the store at ``home`` (zoo.save; each with other weights, the same
    config); their :class:`Version` records, oldest first."""
    import torch
    import zoo

    monkeypatch.setenv("ZOO_HOME", str(home))
    model = zoo.build(tiny_bert)
    for i in range(count):
        torch.manual_seed(seed * 100 + i)
        torch.nn.init.normal_(model.embeddings.word_embeddings.weight)
        zoo.save(model, name, description=f"round {i + 1}")
    return zoo.api.default_store().versions(f"local/{name}")


def _file(home: Path, version, path: str) -> bytes:
    from zoo.store.reader import StoreReader

    return (StoreReader(home).snapshot(version) / path).read_bytes()


def _client_env(endpoint: str, home: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "ZOO_"))}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", **extra)
    return env


def _embedding_sum(endpoint: str, home: Path, repo: str, revision: str, **extra: str) -> float:
    """transformers.AutoModel.from_pretrained(repo, revision=...) in a fresh process, through HF_ENDPOINT."""
    code = ("import sys, transformers\n"
            "m = transformers.AutoModel.from_pretrained(sys.argv[1], revision=sys.argv[2])\n"
            "print(m.embeddings.word_embeddings.weight.double().sum().item())\n")
    out = subprocess.run([sys.executable, "-c", code, repo, revision], env=_client_env(endpoint, home, **extra),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return float(out.stdout.split()[-1])


def _weights_sum(data: bytes) -> float:
    from safetensors.numpy import load

    return float(load(data)["embeddings.word_embeddings.weight"].astype("float64").sum())


# ---- a local name: aliases are tags, versions are commits --------------------------------------------------------

@pytest.mark.slow
def test_aliases_are_tags_and_versions_are_commits(tmp_path, hub, tiny_bert, monkeypatch):
    import zoo
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.errors import RevisionNotFoundError

    home = tmp_path / "served"
    v1, v2, v3 = _save_versions(home, "team-bert", 3, monkeypatch, tiny_bert)
    zoo.tag("team-bert", "prod", "v2")
    with HttpDaemon(home, upstream=hub.endpoint) as daemon:
        api = HfApi(endpoint=daemon.endpoint)
        refs = api.list_repo_refs("local/team-bert")
        assert [(b.name, b.ref, b.target_commit) for b in refs.branches] == [("main", "refs/heads/main", v3.id)]
        tags = {t.name: (t.ref, t.target_commit) for t in refs.tags}
        assert tags == {"prod": ("refs/tags/prod", v2.id), "v1": ("refs/tags/v1", v1.id),
                        "v2": ("refs/tags/v2", v2.id), "v3": ("refs/tags/v3", v3.id)}

        # the alias is a revision for every client
        assert api.model_info("local/team-bert", revision="prod").sha == v2.id
        got = hf_hub_download("local/team-bert", "model.safetensors", revision="prod", cache_dir=tmp_path / "c1",
                              endpoint=daemon.endpoint)
        assert Path(got).read_bytes() == _file(home, v2, "model.safetensors") != _file(home, v3, "model.safetensors")
        snap = Path(snapshot_download("local/team-bert", revision="prod", cache_dir=tmp_path / "c2",
                                      endpoint=daemon.endpoint))
        assert f"/snapshots/{v2.id}" in str(snap)
        assert {p.name: p.read_bytes() for p in snap.iterdir()} == {
            e.path: _file(home, v2, e.path) for e in v2.files}

        # moved while the daemon runs (through its socket): the next request gets the new target
        zoo.tag("team-bert", "prod", "v1")
        assert api.model_info("local/team-bert", revision="prod").sha == v1.id
        assert _embedding_sum(daemon.endpoint, tmp_path / "tf", "local/team-bert", "prod") == pytest.approx(
            _weights_sum(_file(home, v1, "model.safetensors")), rel=1e-6)

        # versions are commits, newest first, titled with who made them; up to the revision asked for
        commits = api.list_repo_commits("local/team-bert")
        assert [c.commit_id for c in commits] == [v3.id, v2.id, v1.id]
        for c, v in zip(commits, (v3, v2, v1)):
            assert v.user and c.title.startswith(f"{v.name} by {v.user}"), c.title
            assert v.host in c.title and c.authors == [v.user]
            assert c.created_at.isoformat()[:19] == v.created[:19]
            assert v.description in c.message
        assert [c.commit_id for c in api.list_repo_commits("local/team-bert", revision="prod")] == [v1.id]
        with pytest.raises(RevisionNotFoundError):
            api.list_repo_commits("local/team-bert", revision="staging")

        # HEAD is the default branch, as @huggingface/hub's modelInfo asks for it
        assert api.model_info("local/team-bert", revision="HEAD").sha == v3.id
        assert hf_hub_download("local/team-bert", "config.json", revision="HEAD", cache_dir=tmp_path / "c3",
                               endpoint=daemon.endpoint)

        # expand=true: each file's last commit (the config never changed since v1; the weights did in v3)
        for entries in (api.get_paths_info("local/team-bert", ["config.json", "model.safetensors"], expand=True),
                        list(api.list_repo_tree("local/team-bert", expand=True))):
            last = {e.path: e.last_commit for e in entries}
            assert last["config.json"].oid == v1.id and last["config.json"].title.startswith("v1 by ")
            assert last["model.safetensors"].oid == v3.id
            assert last["model.safetensors"].date.isoformat()[:19] == v3.created[:19]
        plain = api.get_paths_info("local/team-bert", ["config.json"])
        assert plain[0].last_commit is None  # only asked for with expand


@pytest.mark.slow
def test_raw_serves_small_files_and_lfs_pointers(tmp_path, hub, tiny_bert, monkeypatch, minilm_dir):
    """What @huggingface/hub's fileExists (HEAD raw) and downloadFile({raw: true}) (GET with Range: bytes=0-0)
    read: an LFS file's pointer text, a small (non-LFS) file's bytes, 404 EntryNotFound for a missing file."""
    import zoo

    home = tmp_path / "served"
    (v1,) = _save_versions(home, "raw-bert", 1, monkeypatch, tiny_bert)
    zoo.tag("raw-bert", "prod")
    weights = next(e for e in v1.files if e.path == "model.safetensors")
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{weights.sha256}\nsize {weights.size}\n"
    with HttpDaemon(home, upstream=hub.endpoint) as daemon:
        status, headers, body = daemon.get("/local/raw-bert/raw/prod/model.safetensors")
        assert status == 200 and body.decode() == pointer
        assert headers["X-Repo-Commit"] == v1.id
        status, headers, body = daemon.get("/local/raw-bert/raw/HEAD/model.safetensors", method="HEAD")
        assert status == 200 and body == b"" and int(headers["Content-Length"]) == len(pointer)
        status, headers, body = daemon.get("/local/raw-bert/raw/main/model.safetensors", {"Range": "bytes=0-0"})
        assert status == 206 and body == b"v" and headers["Content-Range"] == f"bytes 0-0/{len(pointer)}"
        # a local name's files are stored and listed by their sha256, as LFS files (its tree says so): raw gives
        # each one's pointer, consistent with the listing
        config = next(e for e in v1.files if e.path == "config.json")
        status, headers, body = daemon.get("/local/raw-bert/raw/prod/config.json")
        assert status == 200 and f"oid sha256:{config.sha256}\nsize {config.size}\n" in body.decode()
        _, _, tree = daemon.get("/api/models/local/raw-bert/tree/prod")
        assert next(e for e in json.loads(tree) if e["path"] == "config.json")["lfs"]["oid"] == config.sha256
        status, headers, _ = daemon.get("/local/raw-bert/raw/prod/missing.json", method="HEAD")
        assert status == 404 and headers["X-Error-Code"] == "EntryNotFound"
        status, headers, _ = daemon.get("/local/raw-bert/raw/staging/config.json", method="HEAD")
        assert status == 404 and headers["X-Error-Code"] == "RevisionNotFound"
        # a hub repository's file through raw: its bytes, fetched from the upstream as resolve does
        status, _, body = daemon.get(f"/{REPO}/raw/main/config.json")
        assert status == 200 and body == (minilm_dir / "config.json").read_bytes()
        # and an LFS file's pointer, from the upstream's listing (nothing downloaded for it)
        hub.reset_counts()
        status, _, body = daemon.get(f"/{REPO}/raw/main/model.safetensors")
        digest = hashlib.sha256((minilm_dir / "model.safetensors").read_bytes()).hexdigest()
        assert status == 200 and f"oid sha256:{digest}\n" in body.decode()
        assert not [p for _, p in hub.requests() if "/resolve/" in p]


# ---- a hub repository: aliases never shadow the upstream's refs -----------------------------------------------------

@pytest.mark.slow
def test_a_hub_repositorys_alias_is_served_until_the_upstream_has_that_ref(tmp_path, hub):
    from huggingface_hub import HfApi, hf_hub_download

    repo = f"zoo-tests/aliased-{os.getpid()}-{time.monotonic_ns()}"
    first = hub.add_repo(repo, {"config.json": b'{"model_type": "bert", "n": 1}'})
    home = tmp_path / "served"
    env = {**os.environ, "ZOO_HOME": str(home), "HF_ENDPOINT": hub.endpoint}
    for args in (["pull", repo], ["tag", repo, "stable"]):
        out = subprocess.run([sys.executable, "-m", "zoo", *args], env=env, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr
    second = hub.add_repo(repo, {"config.json": b'{"model_type": "bert", "n": 2}'})
    with HttpDaemon(home, upstream=hub.endpoint, args=("--revalidate", "1")) as daemon:
        api = HfApi(endpoint=daemon.endpoint)
        assert api.model_info(repo).sha == second  # main is the upstream's
        assert api.model_info(repo, revision="stable").sha == first  # no such ref upstream: the alias
        got = hf_hub_download(repo, "config.json", revision="stable", cache_dir=tmp_path / "c1",
                              endpoint=daemon.endpoint)
        assert json.loads(Path(got).read_text())["n"] == 1
        refs = api.list_repo_refs(repo)
        assert ("stable", first) in {(t.name, t.target_commit) for t in refs.tags}
        assert ("main", second) in {(b.name, b.target_commit) for b in refs.branches}
        assert api.model_info(repo, revision="HEAD").sha == second
        # a hub repository's commits are its upstream's (olah names authors "name": read as huggingface_hub does)
        (stable,) = api.list_repo_commits(repo, revision="stable")
        assert stable.commit_id == first and stable.title == "update" and stable.authors == ["zoo-tests"]
        assert [c.commit_id for c in api.list_repo_commits(repo)] == [second, first]
        (entry,) = api.get_paths_info(repo, ["config.json"], revision="stable", expand=True)
        assert entry.last_commit.oid == first
        # the upstream makes a tag of that name: it wins, once the daemon asks again
        third = hub.add_repo(repo, {"config.json": b'{"model_type": "bert", "n": 3}'}, tag="stable")
        deadline, seen = time.monotonic() + 20, []
        while time.monotonic() < deadline and (not seen or seen[-1] != third):
            time.sleep(0.2)
            seen.append(api.model_info(repo, revision="stable").sha)
        assert seen[-1] == third and set(seen) <= {first, third}, seen
        got = hf_hub_download(repo, "config.json", revision="stable", cache_dir=tmp_path / "c2",
                              endpoint=daemon.endpoint)
        assert json.loads(Path(got).read_text())["n"] == 3
    out = subprocess.run([sys.executable, "-m", "zoo", "tag", f"{repo}@v1", "gold"], env={**env, "ZOO_OFFLINE": "1"},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    hub.reset_counts()
    with HttpDaemon(home, upstream=hub.endpoint, args=("--offline",)) as daemon:
        # offline, the store is all there is: the upstream's tag as recorded still wins over the old alias; another
        # alias is served; zoo's versions are the commits
        api = HfApi(endpoint=daemon.endpoint)
        assert api.model_info(repo, revision="stable").sha == third
        assert api.model_info(repo, revision="gold").sha == first
        (gold,) = api.list_repo_commits(repo, revision="gold")
        assert gold.commit_id == first and gold.title.startswith("v1 by "), gold.title
        tags = {t.name: t.target_commit for t in api.list_repo_refs(repo).tags}
        assert tags["gold"] == first and "stable" not in tags  # the alias stable is shadowed: not listed
    assert hub.requests() == []


# ---- access: every new route, and scoped tokens -----------------------------------------------------------------

def _tokens_file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


@pytest.mark.slow
def test_new_routes_keep_the_access_rules_and_tokens_have_scopes(tmp_path, hub, tiny_bert, monkeypatch):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    home = tmp_path / "served"
    (ner,) = _save_versions(home, "search-ner", 1, monkeypatch, tiny_bert)
    (other,) = _save_versions(home, "ads-ctr", 1, monkeypatch, tiny_bert, seed=1)
    import zoo

    zoo.tag("search-ner", "prod")
    everything, search = "a" * 20 + "-everything", "b" * 20 + "-search"
    tokens = _tokens_file(tmp_path / "tokens", f"# old lines keep working\n{everything}  alice\n"
                                               f"{search} search-team read=local/search-*,org/none\n")
    with HttpDaemon(home, upstream=hub.endpoint, args=("--tokens", str(tokens))) as daemon:
        routes = [("GET", "/api/models/local/{n}/refs"), ("GET", "/api/models/local/{n}/commits/main"),
                  ("HEAD", "/local/{n}/raw/prod/config.json"), ("GET", "/local/{n}/raw/HEAD/model.safetensors"),
                  ("GET", "/api/models/local/{n}/tree/main?expand=true"), ("GET", "/api/models/local/{n}/revision/HEAD")]
        for method, route in routes:
            for name, token, allowed in (("search-ner", None, False), ("search-ner", search, True),
                                         ("search-ner", everything, True), ("ads-ctr", search, False),
                                         ("ads-ctr", everything, True), ("ads-ctr", "c" * 20, False)):
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                status, got, _ = daemon.get(route.format(n=name), headers, method=method)
                if name == "ads-ctr" and "prod" in route and allowed:
                    allowed = None  # no alias prod: 404 for a token that may read it, 401 for the others
                assert (status == 401) == (allowed is False), (method, route, name, token, status)
                if allowed is None:
                    assert status == 404 and got["X-Error-Code"] == "RevisionNotFound"
                elif allowed:
                    assert status in (200, 206), (method, route, name, token, status)
        api = HfApi(endpoint=daemon.endpoint)
        assert {t.name for t in api.list_repo_refs("local/search-ner", token=search).tags} == {"prod", "v1"}
        path = hf_hub_download("local/search-ner", "model.safetensors", revision="prod", token=search,
                               cache_dir=tmp_path / "c", endpoint=daemon.endpoint)
        assert Path(path).read_bytes() == _file(home, ner, "model.safetensors")
        with pytest.raises((GatedRepoError, RepositoryNotFoundError), match="scope"):
            api.list_repo_commits("local/ads-ctr", token=search)
        assert api.list_repo_commits("local/ads-ctr", token=everything)[0].commit_id == other.id


@pytest.mark.slow
def test_a_malformed_scope_is_an_error_naming_its_line(tmp_path):
    for line, why in (("read=", "not a scope pattern"), ("read=local/a*b", "not a scope pattern"),
                      ("read=a/b/c", "not a scope pattern"), ("write=local/x", "unknown setting 'write'"),
                      ("read=local/x read=local/y", "read= given twice")):
        tokens = _tokens_file(tmp_path / "tokens", f"{'a' * 20}  alice\n{'b' * 20} bob {line}\n")
        out = subprocess.run([sys.executable, "-m", "zoo", "daemon", "--store", str(tmp_path / "s"), "--http",
                              f"127.0.0.1:{free_port()}", "--tokens", str(tokens)], capture_output=True, text=True,
                             timeout=60, env={**os.environ, "ZOO_HOME": str(tmp_path / "s")})
        assert out.returncode == 2, (line, out.returncode, out.stderr[-2000:])
        assert f"{tokens}, line 2" in out.stderr and why in out.stderr, out.stderr[-2000:]
        assert "Traceback" not in out.stderr


# ---- tiers: a node serves its central's local/ names and aliases ----------------------------------------------------

@pytest.mark.slow
def test_a_node_serves_the_centrals_local_names_and_aliases(tmp_path, hub, tiny_bert, monkeypatch):
    import zoo
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.errors import GatedRepoError
    from zoo.store.reader import StoreReader

    central_home, node_home = tmp_path / "central", tmp_path / "node"
    c1, c2 = _save_versions(central_home, "team-ner", 2, monkeypatch, tiny_bert, seed=1)
    zoo.tag("team-ner", "prod", "v1")
    _save_versions(central_home, "secret-ner", 1, monkeypatch, tiny_bert, seed=4)  # outside the node's scope
    (own,) = _save_versions(node_home, "team-ner", 1, monkeypatch, tiny_bert, seed=2)  # the same spelling
    (mine,) = _save_versions(node_home, "node-only", 1, monkeypatch, tiny_bert, seed=3)
    token = "n" * 24 + "-node"  # the central serves local/ names to token holders; the node holds one
    tokens = _tokens_file(tmp_path / "tokens", f"{token} nodes read=local/team-*\n")
    central = HttpDaemon(central_home, upstream=hub.endpoint, args=("--tokens", str(tokens)))
    with central:
        node = HttpDaemon(node_home, upstream=central.endpoint, args=("--revalidate", "1"), env={"HF_TOKEN": token})
        with node:
            api = HfApi(endpoint=node.endpoint)
            # the central's name comes first: by name, by alias, as refs and commits
            assert api.model_info("local/team-ner").sha == c2.id
            assert api.model_info("local/team-ner", revision="prod").sha == c1.id
            refs = api.list_repo_refs("local/team-ner")
            assert {t.name: t.target_commit for t in refs.tags} == {"prod": c1.id, "v1": c1.id, "v2": c2.id}
            assert [c.commit_id for c in api.list_repo_commits("local/team-ner")] == [c2.id, c1.id]
            last = {e.path: e.last_commit for e in api.list_repo_tree("local/team-ner", expand=True)}
            assert last["config.json"].oid == c1.id and last["model.safetensors"].oid == c2.id
            assert last["model.safetensors"].title.startswith("v2 by ")
            snap = Path(snapshot_download("local/team-ner", revision="prod", cache_dir=tmp_path / "c1",
                                          endpoint=node.endpoint))
            assert (snap / "model.safetensors").read_bytes() == _file(central_home, c1, "model.safetensors")
            assert _embedding_sum(node.endpoint, tmp_path / "tf", "local/team-ner", "prod") == pytest.approx(
                _weights_sum(_file(central_home, c1, "model.safetensors")), rel=1e-6)
            # the node's own names that the central lacks (outside the node's scope there: the same answer) are
            # the node's
            got = hf_hub_download("local/node-only", "model.safetensors", cache_dir=tmp_path / "c2",
                                  endpoint=node.endpoint)
            assert Path(got).read_bytes() == _file(node_home, mine, "model.safetensors")
            with pytest.raises(GatedRepoError, match="read= scope"):
                api.model_info("local/secret-ner")
            # the central moves its alias: every node follows (after --revalidate)
            monkeypatch.setenv("ZOO_HOME", str(central_home))
            zoo.tag("team-ner", "prod", "v2")
            deadline, seen = time.monotonic() + 20, []
            while time.monotonic() < deadline and (not seen or seen[-1] != c2.id):
                time.sleep(0.2)
                seen.append(api.model_info("local/team-ner", revision="prod").sha)
            assert seen[-1] == c2.id, seen
        # the node stored the central's files as content, never as versions of its own local/team-ner
        assert [(v.name, v.id) for v in StoreReader(node_home).versions("local/team-ner")] == [("v1", own.id)]
        # without its central, the node's own name of that spelling is what it has
        node = HttpDaemon(node_home, upstream=f"http://127.0.0.1:{free_port()}", args=("--revalidate", "1"))
        with node:
            assert HfApi(endpoint=node.endpoint).model_info("local/team-ner").sha == own.id


@pytest.mark.slow
def test_local_names_never_go_to_an_upstream_that_is_not_a_zoo_daemon(tmp_path, hub, tiny_bert, monkeypatch):
    """A daemon in front of the Hub (or a mirror) asks it once what it is, and sends it no local/ name: a
    ``local`` organisation there would be someone else's."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    home = tmp_path / "served"
    (v1,) = _save_versions(home, "mine", 1, monkeypatch, tiny_bert)
    hub.reset_counts()
    with HttpDaemon(home, upstream=hub.endpoint) as daemon:
        api = HfApi(endpoint=daemon.endpoint)
        for _ in range(3):
            assert api.model_info("local/mine").sha == v1.id
            with pytest.raises(RepositoryNotFoundError):
                api.model_info("local/not-here")
    paths = [p for _, p in hub.requests()]
    assert [p for p in paths if "local" in p] == [], paths
    assert paths.count("/api/zoo") <= 1, paths
