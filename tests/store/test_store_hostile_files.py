"""Defects found by trying to break the store, each reproduced: corrupted objects, symlinks in imports,
verify and the last good copy, hostile names, read-only and full stores, concurrent removal."""

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import zoo
from zoo.store import Store

from conftest import run_python


def _quiet_load(ref, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", zoo.VersionWarning)
        return zoo.load(ref, **kw)


def _weights_entry(version):
    return next(f for f in version.files if f.path == "model.safetensors")


def _flip_a_byte(path: Path) -> None:
    """Damage a file in place as a bad disk or a stray write would: same size, new mtime."""
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def _gets(hub, name):
    return sum(1 for m, p in hub.requests() if m == "GET" and p.split("?")[0].endswith("/" + name))


# -- 1. never load bytes whose digest is wrong --------------------------------------------------------

@pytest.mark.slow
def test_corrupted_object_is_fetched_again_and_the_next_load_is_warm(hub_env, hub):
    ids = torch.tensor([[101, 7592, 102]])
    with torch.no_grad():
        expected = _quiet_load("bert-base-cased")(ids).last_hidden_state
    store = Store()
    version = store.find("google-bert/bert-base-cased")
    obj = store.object_path(_weights_entry(version).sha256)
    _flip_a_byte(obj)
    hub.reset_counts()
    with torch.no_grad():
        again = _quiet_load("bert-base-cased")(ids).last_hidden_state
    assert torch.equal(again, expected)  # the damaged bytes never loaded
    assert _gets(hub, "model.safetensors") == 1  # fetched again, once
    assert list(store.quarantine.iterdir())  # the damaged copy is kept aside, not served
    hub.reset_counts()
    _quiet_load("bert-base-cased")
    assert hub.requests() == []  # repaired: warm again, 0 requests


@pytest.mark.slow
def test_corrupted_object_offline_is_an_integrity_error(hub_env, hub, monkeypatch):
    _quiet_load("bert-base-cased")
    store = Store()
    _flip_a_byte(store.object_path(_weights_entry(store.find("google-bert/bert-base-cased")).sha256))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(zoo.IntegrityError, match="model.safetensors: content changed.*offline mode is on"):
        _quiet_load("bert-base-cased")


def test_corrupted_import_is_an_integrity_error_naming_the_fix(tmp_path, tiny_bert):
    version = zoo.save(zoo.build(tiny_bert), "mine")
    _flip_a_byte(Store().object_path(_weights_entry(version).sha256))
    with pytest.raises(zoo.IntegrityError, match=r"local:mine@v1: 1 files failed their digest.*import or save"):
        zoo.load("mine")


def test_touched_but_intact_object_is_hashed_once_then_warm(tmp_path, tiny_bert, monkeypatch):
    version = zoo.save(zoo.build(tiny_bert), "touched")
    obj = Store().object_path(_weights_entry(version).sha256)
    os.utime(obj, ns=(obj.stat().st_atime_ns, obj.stat().st_mtime_ns + 5_000_000_000))  # e.g. a restore
    zoo.load("touched")  # hashed once: intact, and the new stat is recorded
    from zoo.store import content, pulling

    for module in (pulling, content):  # wherever the store hashes
        monkeypatch.setattr(module, "hash_file", lambda *a, **k: pytest.fail("hashed again"))
    zoo.load("touched")


def test_deleted_snapshot_link_is_rebuilt_without_a_request(tmp_path, tiny_bert):
    version = zoo.save(zoo.build(tiny_bert), "linkless")
    (Store().snapshot(version) / "model.safetensors").unlink()
    assert type(zoo.load("linkless")).__name__ == "BertModel"
    assert (Store().snapshot(version) / "model.safetensors").is_symlink()


# -- 3. imports store content, never symlinks, and never touch the user's files ------------------------

def test_import_of_absolute_symlinks_stores_content(tmp_path, tiny_bert):
    real = zoo.save(zoo.build(tiny_bert), tmp_path / "real")
    linked = tmp_path / "linked"
    linked.mkdir()
    for f in real.iterdir():
        (linked / f.name).symlink_to(f.resolve())
    version = Store().import_dir(linked, "via-links")
    shutil.rmtree(real)  # the originals go: the version must not depend on them
    obj = Store().object_path(_weights_entry(version).sha256)
    assert obj.is_file() and not obj.is_symlink()
    assert type(zoo.load("via-links")).__name__ == "BertModel"


def test_huggingface_cache_snapshot_imports(tmp_path, tiny_bert):
    saved = zoo.save(zoo.build(tiny_bert), tmp_path / "saved")
    repo = tmp_path / "hf" / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    for f in saved.iterdir():
        blob = repo / "blobs" / f"blob-{f.name}"
        shutil.copy(f, blob)
        (snap / f.name).symlink_to(f"../../blobs/{blob.name}")  # relative, as huggingface_hub makes them
    Store().import_dir(snap, "from-hf")
    assert type(zoo.load("from-hf")).__name__ == "BertModel"


def test_import_never_changes_the_users_files_even_when_it_fails(tmp_path, tiny_bert):
    out = zoo.save(zoo.build(tiny_bert), tmp_path / "sharded", max_shard_size="20KB")
    for f in out.iterdir():
        os.chmod(f, 0o664)
    before = {f.name: (f.stat().st_mode, f.stat().st_ino, f.stat().st_nlink) for f in out.iterdir()}
    Store().import_dir(out, "fine")
    sorted(out.glob("model-*.safetensors"))[1].rename(tmp_path / "away")
    with pytest.raises(zoo.CorruptCheckpointError):
        Store().import_dir(out, "broken")
    after = {f.name: (f.stat().st_mode, f.stat().st_ino, f.stat().st_nlink) for f in out.iterdir()}
    assert after == {k: v for k, v in before.items() if k in after}  # modes, inodes, link counts as they were


def test_dangling_symlink_in_an_import_is_named(tmp_path, tiny_bert):
    out = zoo.save(zoo.build(tiny_bert), tmp_path / "d")
    (out / "tokenizer.json").symlink_to(tmp_path / "nowhere")
    with pytest.raises(zoo.CorruptCheckpointError, match="tokenizer.json cannot be read.*dangling symlink"):
        Store().import_dir(out, "dangling")


# -- 4. verify never deletes the last good copy ----------------------------------------------------------

def test_verify_restores_a_missing_object_from_its_blob(tmp_path, tiny_bert):
    version = zoo.save(zoo.build(tiny_bert), "keep")
    store = Store()
    entry = _weights_entry(version)
    obj = store.object_path(entry.sha256)
    obj.unlink()  # what an rm/import race can leave: the blob (same content) is intact
    assert type(zoo.load("keep")).__name__ == "BertModel"
    assert store.verify() == []
    assert obj.is_file()
    assert (store.repo_path("local/keep") / "blobs" / entry.etag).is_file()  # not deleted
    assert type(zoo.load("keep")).__name__ == "BertModel"


def test_verify_of_a_damaged_import_says_to_import_again(tmp_path, tiny_bert, capsys):
    from zoo.cli import main

    version = zoo.save(zoo.build(tiny_bert), "dmg")
    _flip_a_byte(Store().object_path(_weights_entry(version).sha256))
    assert main(["verify", "dmg"]) == 1
    out = capsys.readouterr().out
    assert "CORRUPT local/dmg v1 model.safetensors" in out and "import or save it again" in out
    assert "zoo pull" not in out


# -- 8. names ----------------------------------------------------------------------------------------------

def test_directory_and_table_name_is_ambiguous(tmp_path, tiny_bert, monkeypatch):
    monkeypatch.chdir(tmp_path)
    zoo.save(zoo.build(tiny_bert), Path("bert-base-cased"))
    with pytest.raises(zoo.AmbiguousNameError, match=r"hf:google-bert/bert-base-cased.*\./bert-base-cased"):
        zoo.load("bert-base-cased")
    assert type(zoo.load("./bert-base-cased")).__name__ == "BertModel"


def test_double_dash_names_cannot_alias(tmp_path, tiny_bert):
    with pytest.raises(zoo.InvalidNameError, match="'--'"):
        zoo.save(zoo.build(tiny_bert), "x--y")
    with pytest.raises(zoo.InvalidNameError, match="'--'"):
        zoo.load("local--x/y")


def test_overlong_revision_and_name_are_refused_before_any_write(tmp_path, tiny_bert):
    with pytest.raises(zoo.InvalidNameError, match="at most 128"):
        zoo.load("google-bert/bert-base-cased@" + "a" * 300)
    with pytest.raises(zoo.InvalidNameError, match=r"5000 characters"):
        zoo.save(zoo.build(tiny_bert), "n" * 5000)
    assert not (Store().home / "versions").exists() or not any((Store().home / "versions").iterdir())


def test_unreadable_manifest_is_a_warning_not_silence(tmp_path, tiny_bert):
    v = zoo.save(zoo.build(tiny_bert), "m")
    os.chmod(v.manifest, 0o644)
    v.manifest.write_text("{ not json")
    with pytest.warns(zoo.CacheWarning, match=r"v0001.json is not a readable zoo manifest"):
        assert Store().versions("local/m") == []


# -- 9. a full disk ----------------------------------------------------------------------------------------

@pytest.fixture
def tiny_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)], capture_output=True)
    if result.returncode:
        pytest.skip(f"cannot mount tmpfs here: {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_save_to_a_name_on_a_full_disk(tiny_disk, monkeypatch, tiny_bert):
    monkeypatch.setenv("ZOO_HOME", str(tiny_disk / "zoo"))
    big = dict(tiny_bert, vocab_size=4000)  # about 512 KB of weights: more than the disk holds
    with pytest.raises(zoo.StoreFullError, match="no space left on the device.*zoo gc"):
        zoo.save(zoo.build(big), "too-big")
    leftovers = [p for p in (tiny_disk / "zoo" / "tmp").rglob("*") if p.is_file()]
    assert leftovers == []  # nothing partial kept
    assert Store().versions("local/too-big") == []


def test_import_on_a_full_disk_names_the_store(tiny_disk, monkeypatch, tiny_bert, tmp_path):
    monkeypatch.setenv("ZOO_HOME", str(tiny_disk / "zoo"))
    src = zoo.save(zoo.build(dict(tiny_bert, vocab_size=4000)), tmp_path / "src")
    with pytest.raises(zoo.StoreFullError, match=f"(device|disk) of {tiny_disk / 'zoo'}"):
        Store().import_dir(src, "too-big")
    assert [p for p in (tiny_disk / "zoo" / "tmp").rglob("*") if p.is_file()] == []


# -- concurrent removal: only zoo errors, never a raw FileNotFoundError ------------------------------------

RACER = """
import sys, zoo
from zoo.store import Store
ok = errors = 0
for i in range({n}):
    try:
        {body}
        ok += 1
    except zoo.ZooError:
        errors += 1
print(ok, errors)
"""


@pytest.mark.slow
def test_load_and_gc_while_rm_runs(tmp_path, tiny_bert):
    source = zoo.save(zoo.build(tiny_bert), tmp_path / "src")
    zoo.save(zoo.build(tiny_bert), "racy")
    remover = subprocess.Popen([sys.executable, "-c", RACER.format(n=25, body=(
        f"Store().remove('local/racy'); Store().import_dir({str(source)!r}, 'racy')"))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    loader = run_python(RACER.format(n=25, body="zoo.load('racy')"))
    collector = run_python(RACER.format(n=10, body="Store().gc(grace=0)"))
    out, err = remover.communicate(timeout=300)
    assert remover.returncode == 0, err[-2000:]
    for result in (loader, collector):
        assert result.returncode == 0, result.stderr[-2000:]  # any non-zoo exception fails the process
        ok, errors = map(int, result.stdout.split())
        assert ok + errors > 0


def test_integer_tensors_for_float_weights_are_refused(tmp_path, tiny_bert):
    from safetensors.torch import load_file, save_file

    out = zoo.save(zoo.build(tiny_bert), tmp_path / "ints")
    state = load_file(out / "model.safetensors")
    state["encoder.layer.0.output.dense.weight"] = state["encoder.layer.0.output.dense.weight"].to(torch.int32)
    save_file(state, str(out / "model.safetensors"))
    with pytest.raises(zoo.CorruptCheckpointError, match=r"output\.dense\.weight: int32 where the model has float32"):
        zoo.load(out)


def test_a_file_added_to_a_version_does_not_hide_a_damaged_one(hub_env, hub):
    """Adding a file to a stored version (the hub server's pull-through) refreshes the stat only of what
    was downloaded: a damaged file beside it stays visible to the next load, which fetches it again."""
    from zoo.store import hub as hub_client

    store = Store()
    version = store.pull("google-bert/bert-base-cased")
    weights = _weights_entry(version)
    _flip_a_byte(store.object_path(weights.sha256))
    assert [e.path for e in store.missing_files(version)] == ["model.safetensors"]
    remote = hub_client.fetch_revision("google-bert/bert-base-cased", version.id)
    extra = next(f for f in remote.files if f.path == "tf_model.h5")
    entry = store.fetch_file(remote.repo, remote.commit, extra)
    version = store.adopt(remote, [entry])
    assert "tf_model.h5" in {e.path for e in version.files}
    assert [e.path for e in store.missing_files(version)] == ["model.safetensors"]


def test_gc_during_a_pull_leaves_what_the_pull_stored(hub_env, hub, monkeypatch):
    """The daemon collects files no version lists when its quota needs room (zoo.daemon.server); a pull in
    progress has stored files that no version lists yet: they stay."""
    from zoo.store import hub as hub_client

    store = Store()
    real = hub_client.download
    calls = []

    def download(*args, **kwargs):
        calls.append(args[2].path)
        if len(calls) == 2:  # one file is stored; the quota asks for room now
            store.gc(grace=0)
        return real(*args, **kwargs)

    monkeypatch.setattr(hub_client, "download", download)
    version = store.pull("google-bert/bert-base-cased")
    assert len(calls) >= 2 and store.missing_files(version) == [] and store.verify() == []
    assert not [o for o in store.objects.glob("*/*")
                if o.name not in {e.sha256 for e in version.files}]  # and nothing else was kept
