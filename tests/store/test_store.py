"""The store behind names: pulls from a real hub-compatible server, dedupe, versions, HF readability."""

import hashlib
import json
import os
import time
import warnings
from pathlib import Path

import pytest
import torch

import zoo
from zoo.store import Store
from zoo.store import content as content_module
from zoo.store import ingest as ingest_module
from zoo.store import pulling as pulling_module
from zoo import atomic as store_module
from zoo.store.maintenance import gc_plan, removal_plan, usage
from zoo import InvalidNameError
from zoo import AmbiguousNameError, UnknownNameError

from conftest import EXTRA_FILES, run_python

NEEDED = {"config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json",
          "tokenizer_config.json", "vocab.txt"}


def _gets(hub, path):
    return hub.count("GET", f"/resolve/") and sum(
        1 for m, p in hub.requests() if m == "GET" and "/resolve/" in p and p.split("?")[0].endswith("/" + path))


def _quiet_load(ref, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", zoo.VersionWarning)
        return zoo.load(ref, **kw)


@pytest.mark.slow
def test_pull_takes_only_what_loading_needs(hub_env, hub):
    version = Store().pull("google-bert/bert-base-cased")
    assert {f.path for f in version.files} == NEEDED
    for path in NEEDED:
        assert _gets(hub, path) == 1, path
    for path in EXTRA_FILES:
        assert _gets(hub, path) == 0, path
    assert version.model_type == "bert" and version.transformers_version == "4.8.2"
    assert version.architectures == ("BertModel",) and version.source.startswith("hub:")
    everything = Store().pull("google-bert/bert-base-cased", all_files=True)
    assert set(EXTRA_FILES) <= {f.path for f in everything.files}
    assert _gets(hub, "model.safetensors") == 1  # already stored: not fetched again


@pytest.mark.slow
def test_load_by_name_then_warm_with_zero_requests_and_no_hashing(hub_env, hub, minilm_dir, monkeypatch):
    model = _quiet_load("bert-base-cased")
    assert _gets(hub, "model.safetensors") == 1
    reference = _quiet_load(minilm_dir)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    hub.reset_counts()

    def no_hashing(*args, **kwargs):
        raise AssertionError("the warm path must not hash")

    for module in (pulling_module, content_module, ingest_module):
        monkeypatch.setattr(module, "hash_file", no_hashing)
    again = _quiet_load("bert-base-cased")
    assert hub.requests() == []
    assert torch.equal(again.embeddings.word_embeddings.weight, model.embeddings.word_embeddings.weight)
    tokenizer = zoo.load_tokenizer("bert-base-cased")
    assert tokenizer("hello world")["input_ids"] == [101, 7592, 2088, 102]
    assert hub.requests() == []


@pytest.mark.slow
def test_hub_repo_id_and_revisions(hub_env, hub, minilm_dir):
    commit = Store().pull("sentence-transformers/all-MiniLM-L6-v2").id
    assert len(commit) == 40
    assert type(_quiet_load("sentence-transformers/all-MiniLM-L6-v2@main")).__name__ == "BertModel"
    assert type(_quiet_load(f"hf:sentence-transformers/all-MiniLM-L6-v2@{commit}")).__name__ == "BertModel"
    assert type(_quiet_load(f"sentence-transformers/all-MiniLM-L6-v2@{commit[:10]}")).__name__ == "BertModel"
    with pytest.raises(zoo.CheckpointNotFoundError, match="no such version.*v1"):
        zoo.load("sentence-transformers/all-MiniLM-L6-v2@v7")


@pytest.mark.slow
def test_new_commit_on_the_hub_becomes_a_new_version(hub_env, hub, minilm_dir, tmp_path):
    store = Store()
    repo = "acme/evolving"
    hub.add_repo(repo, {p.name: p for p in minilm_dir.iterdir() if p.is_file()})
    v1 = store.pull(repo)
    config = json.loads((minilm_dir / "config.json").read_text())
    config["hidden_dropout_prob"] = 0.2
    commit2 = hub.add_repo(repo, {"config.json": json.dumps(config).encode()}, tag="v2-tag")
    hub.reset_counts()
    v2 = store.pull(repo)
    assert (v1.number, v2.number) == (1, 2) and v2.id == commit2
    assert _gets(hub, "model.safetensors") == 0  # same content: stored once, not fetched again
    assert _quiet_load(f"{repo}@v1").config.hidden_dropout_prob == 0.1
    assert _quiet_load(repo).config.hidden_dropout_prob == 0.2
    assert _quiet_load(f"{repo}@v2-tag").config.hidden_dropout_prob == 0.2


@pytest.mark.slow
def test_store_is_a_huggingface_hub_cache(hub_env, hub):
    _quiet_load("bert-base-cased")
    Store().import_dir(Store().snapshot(Store().find("google-bert/bert-base-cased")), "mine")
    hub_cache = Store().hub
    code = f"""
        import warnings, torch
        from huggingface_hub import scan_cache_dir
        from transformers import AutoModel
        info = scan_cache_dir({str(hub_cache)!r})
        assert not info.warnings, info.warnings
        repos = sorted(r.repo_id for r in info.repos)
        assert repos == ["google-bert/bert-base-cased", "local/mine"], repos
        a = AutoModel.from_pretrained("google-bert/bert-base-cased")
        b = AutoModel.from_pretrained("local/mine")
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
        print("ok", info.size_on_disk)
    """
    env = {"HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    result = run_python(code, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok")


def test_same_checkpoint_under_three_names_is_one_blob(minilm_dir, tmp_path):
    store = Store()
    for name in ("first", "second", "third"):
        store.import_dir(minilm_dir, name)
    weights = [f for f in store.versions("local/first")[0].files if f.path == "model.safetensors"][0]
    obj = store.object_path(weights.sha256)
    # objects/ + one blob link per name = 4 links to one inode; no other copy of the 90 MB anywhere.
    assert obj.stat().st_nlink == 4
    big = [p for p in store.home.rglob("*") if p.is_file() and not p.is_symlink() and p.stat().st_size > 80e6]
    assert {(p.stat().st_dev, p.stat().st_ino) for p in big} == {(obj.stat().st_dev, obj.stat().st_ino)}
    for name in ("first", "second", "third"):
        snap = store.snapshot(store.find(f"local/{name}"))
        assert os.path.samefile(snap / "model.safetensors", obj)
        assert os.readlink(snap / "model.safetensors") == f"../../blobs/{weights.sha256}"
    u = usage(store)
    assert u.logical == 3 * u.physical and u.saved == 2 * u.physical


def test_import_copies_by_default_and_links_when_asked(minilm_dir, tmp_path, tiny_bert):
    source = zoo.save(zoo.build(tiny_bert), tmp_path / "saved")
    before = {p.name: p.stat() for p in source.iterdir()}
    store = Store()
    version = store.import_dir(source, "copied")
    entry = [f for f in version.files if f.path == "model.safetensors"][0]
    assert not os.path.samefile(source / "model.safetensors", store.object_path(entry.sha256))
    assert {p.name: (p.stat().st_mode, p.stat().st_ino) for p in source.iterdir()} == {
        n: (st.st_mode, st.st_ino) for n, st in before.items()}  # the user's files: untouched
    other = zoo.save(zoo.build(tiny_bert), tmp_path / "other")  # new content, hard-linked as asked
    linked = store.import_dir(other, "linked", link=True)
    entry = [f for f in linked.files if f.path == "model.safetensors"][0]
    assert os.path.samefile(other / "model.safetensors", store.object_path(entry.sha256))
    assert not (other / "model.safetensors").stat().st_mode & 0o222  # the README says: read-only now


def test_versions_are_immutable_and_numbered(tmp_path, tiny_bert):
    store = Store()
    model = zoo.build(tiny_bert).eval()
    source = zoo.save(model, tmp_path / "d")
    v1 = store.import_dir(source, "mybert")
    again = store.import_dir(source, "mybert")
    assert again == v1 and len(store.versions("local/mybert")) == 1  # identical content: no new version
    other = zoo.build(tiny_bert).eval()
    v2 = zoo.save(other, "mybert")
    assert (v1.name, v2.name) == ("v1", "v2") and v1.id != v2.id
    assert v2.source == "zoo.save" and v1.source == f"import:{source.resolve()}"
    manifest = json.loads(v1.manifest.read_text())
    assert manifest["model_type"] == "bert" and manifest["architectures"] == ["BertModel"]
    assert manifest["transformers_version"] == __import__("transformers").__version__
    assert {f["path"] for f in manifest["files"]} == {"config.json", "model.safetensors"}
    weights = [f for f in manifest["files"] if f["path"] == "model.safetensors"][0]
    assert weights["sha256"] == hashlib.sha256((source / "model.safetensors").read_bytes()).hexdigest()
    assert weights["size"] == (source / "model.safetensors").stat().st_size
    ids = torch.randint(1, 99, (1, 8))
    with torch.no_grad():
        assert torch.equal(zoo.load("mybert@v1")(ids).last_hidden_state, model(ids).last_hidden_state)
        assert torch.equal(zoo.load("mybert")(ids).last_hidden_state, other(ids).last_hidden_state)
        assert torch.equal(zoo.load("local:mybert@v2")(ids).last_hidden_state, other(ids).last_hidden_state)


def test_names_are_validated(tmp_path, tiny_bert):
    source = zoo.save(zoo.build(tiny_bert), tmp_path / "d")
    for bad in ("../escape", "/abs", "a/b", "", "..", ".hidden"):
        with pytest.raises(InvalidNameError):
            Store().import_dir(source, bad)
    for bad in ("local:../x", "hf:a/../b", "hf:/etc/passwd", "hf:a/b/c", "bert-base-cased@../x", "zz:thing",
                "hf:local/x"):
        with pytest.raises(InvalidNameError):
            zoo.load(bad)
    with pytest.raises(InvalidNameError):
        zoo.Checkpoint("ok", "../../etc")


def test_ambiguous_and_unknown_names_give_the_fix(tmp_path, tiny_bert):
    zoo.save(zoo.build(tiny_bert), "bert-base-cased")
    with pytest.raises(AmbiguousNameError, match="hf:google-bert/bert-base-cased.*local:bert-base-cased"):
        zoo.load("bert-base-cased")
    assert type(zoo.load("local:bert-base-cased")).__name__ == "BertModel"
    with pytest.raises(UnknownNameError, match="Did you mean: bert-base-cased"):
        zoo.load("bert-base-casd")


@pytest.mark.slow
def test_offline_switch(hub_env, hub, monkeypatch):
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(zoo.store.OfflineError, match="offline mode is on"):
        zoo.load("bert-base-cased")
    assert hub.requests() == []
    monkeypatch.delenv("ZOO_OFFLINE")
    _quiet_load("bert-base-cased")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.reset_counts()
    assert type(_quiet_load("bert-base-cased")).__name__ == "BertModel"
    assert hub.requests() == []


def test_unknown_repo_on_the_hub(hub_env):
    with pytest.raises(zoo.store.RemoteNotFoundError, match="acme/nothing-here@main: not found.*no directory"):
        zoo.load("acme/nothing-here")
    with pytest.raises(zoo.CheckpointNotFoundError, match="no such directory"):
        zoo.load("some/relative/path")  # two slashes: a path, never a hub id


@pytest.mark.slow
def test_verify_quarantines_and_pull_fetches_again(hub_env, hub):
    store = Store()
    version = store.pull("google-bert/bert-base-cased")
    entry = [f for f in version.files if f.path == "model.safetensors"][0]
    obj = store.object_path(entry.sha256)
    os.chmod(obj, 0o644)
    with open(obj, "r+b") as f:  # flip bytes in place: same size, so only a re-hash can tell
        f.seek(1000)
        f.write(b"\xff" * 16)
    problems = store.verify()
    assert [(v.name, e.path) for v, e, _ in problems] == [("v1", "model.safetensors")]
    assert list(store.quarantine.iterdir())
    assert store.missing_files(version) == [entry]
    hub.reset_counts()
    model = _quiet_load("bert-base-cased")
    assert _gets(hub, "model.safetensors") == 1
    # the manifest records the new object's stat: the next load takes it as unchanged (no hashing)
    assert store.missing_files(store.find("google-bert/bert-base-cased", "v1")) == []
    assert store.verify() == []
    assert model.embeddings.word_embeddings.weight.abs().sum() > 0


def test_rm_and_gc(tmp_path, tiny_bert):
    store = Store()
    zoo.save(zoo.build(tiny_bert), "a")
    zoo.save(zoo.build(tiny_bert), "a")
    v1, v2 = store.versions("local/a")
    plan = removal_plan(store, "local/a", [v1])
    size = [f for f in v1.files if f.path == "model.safetensors"][0].size
    assert plan.freed >= size
    assert store.find("local/a", "v1") is not None  # a plan deletes nothing until executed
    plan.execute()
    assert store.find("local/a", "v1") is None and store.find("local/a").name == "v2"
    assert not store.snapshot(v1).exists()
    leftover = store.tmp / f"{store_module.HOST}.999999.abc.deadbeef.part"  # a dead process's
    leftover.write_bytes(b"x" * 10)
    live = store.tmp / f"{store_module.HOST}.{os.getpid()}.abc.cafe.part"  # a live one's: kept
    live.write_bytes(b"z" * 5)
    stray = store.objects / "00" / ("00" * 32)
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"y" * 20)
    assert stray not in gc_plan(store).files  # younger than the grace period: a pull may be using it
    plan = gc_plan(store, grace=0)
    assert plan.freed == 30 and leftover in plan.files and live not in plan.files
    plan.execute()
    assert not stray.exists() and list(store.tmp.iterdir()) == [live]
    assert type(zoo.load("a")).__name__ == "BertModel"


def test_gc_counts_an_object_and_its_blob_link_once(tmp_path):
    """An object no version lists and its blob (a hard link of it) free its bytes when both go; gc used to
    count nothing for linked files, so the daemon's quota saw nothing to gain from collecting them."""
    store = Store()
    store.disk.prepare()
    data = b"w" * 1000
    sha = hashlib.sha256(data).hexdigest()
    obj = store.object_path(sha)
    obj.parent.mkdir(parents=True, exist_ok=True)
    obj.write_bytes(data)
    blob = store.layout.blob_path("org/name", sha)
    blob.parent.mkdir(parents=True)
    os.link(obj, blob)
    plan = gc_plan(store, grace=0)
    assert obj in plan.files and blob in plan.files and plan.freed == len(data)
    os.unlink(blob)
    os.link(obj, tmp_path / "elsewhere")  # a link the plan does not remove: nothing is freed
    assert gc_plan(store, grace=0).freed == 0


def test_second_import_of_unchanged_files_hashes_nothing(tmp_path, tiny_bert, monkeypatch):
    source = zoo.save(zoo.build(tiny_bert), tmp_path / "d")
    store = Store()
    first = store.import_dir(source, "fast")

    def no_hashing(*args, **kwargs):
        raise AssertionError("unchanged files must not be read or hashed again")

    monkeypatch.setattr(ingest_module, "hash_file", no_hashing)
    monkeypatch.setattr(ingest_module, "copy_hashing", no_hashing)
    assert store.import_dir(source, "fast") == first


def test_progress_only_on_a_terminal(monkeypatch):
    import types

    from zoo.store import progress

    monkeypatch.setattr(progress.sys, "stderr", types.SimpleNamespace(isatty=lambda: True))
    assert progress.enabled(None) is True
    assert progress.enabled(True) is False  # -q
    monkeypatch.setenv("ZOO_QUIET", "1")
    assert progress.enabled(None) is False
    monkeypatch.delenv("ZOO_QUIET")
    monkeypatch.setattr(progress.sys, "stderr", types.SimpleNamespace(isatty=lambda: False))
    assert progress.enabled(None) is False  # not a terminal: CI logs stay clean
    assert isinstance(progress.bar(10, "x"), progress._Silent)


def test_incomplete_sharded_import_makes_no_version(tmp_path, tiny_bert):
    out = zoo.save(zoo.build(tiny_bert), tmp_path / "sharded", max_shard_size="20KB")
    sorted(out.glob("model-*.safetensors"))[1].unlink()
    store = Store()
    with pytest.raises(zoo.CorruptCheckpointError, match="lists 5 shards but 1 are missing.*incomplete"):
        store.import_dir(out, "broken")  # refused by the check loads make, before anything is stored
    assert store.versions("local/broken") == []


def test_sharded_pull_is_complete(hub_env, hub, tmp_path, tiny_bert):
    out = zoo.save(zoo.build(tiny_bert, task="fill-mask"), tmp_path / "sharded", max_shard_size="20KB")
    hub.add_repo("acme/sharded", {p.name: p for p in out.iterdir()})
    version = Store().pull("acme/sharded")
    shards = {p.name for p in out.glob("model-*.safetensors")}
    assert shards <= {f.path for f in version.files} and len(shards) > 2
    assert type(zoo.load("acme/sharded")).__name__ == "BertForMaskedLM"


@pytest.mark.slow
def test_hf_token_is_sent(hub_env, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_zoo_test_token")
    Store().pull("sentence-transformers/all-MiniLM-L6-v2")
    auth = hub.authorization()
    assert auth and set(auth) == {"Bearer hf_zoo_test_token"}


def test_gc_removes_old_upstream_listings_of_commits_no_version_holds(tmp_path, tiny_bert):
    """The hub server keeps the upstream's listing of each commit it was asked for; gc removes the old
    ones whose commit no version holds (the server asks again if a client wants one)."""
    store = Store()
    version = store.import_dir(zoo.save(zoo.build(tiny_bert), tmp_path / "m"), "kept")
    held = store.layout.listing_path(version.repo, version.id)
    stale = store.layout.listing_path("org/name", "a" * 40)
    young = store.layout.listing_path("org/name", "b" * 40)
    for path in (held, stale, young):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    for path in (held, stale):
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    plan = gc_plan(store)
    assert stale in plan.files and held not in plan.files and young not in plan.files
