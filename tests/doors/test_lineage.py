"""Lineage and the registry's record, through the doors: ``zoo lineage`` (and ``zoo.lineage``) draws the bases
above a name and the versions made from it below, with aliases and the exact tensors each shares with its base;
``zoo du`` counts the bytes fine-tunes store again; ``zoo info NAME`` shows description, labels, card title,
aliases, base, who and when; ``zoo gc`` removes the per-object tensor records of objects that are gone. A
damaged stored object is a note, never a crash.

The family (one store for the module, each step a fresh process)::

    google-bert/bert-base-cased (hub, not stored)    base-bert@v1
    └── hubby@v1                                     ├── ft-bert@v1 [prod]   layer 1 changed (one tensor copied)
                                                     │   ├── card-bert@v1    import, card base_model: ft-bert
                                                     │   └── ft-bert@v3      loaded from ft-bert@v1, pooler changed
                                                     └── ft-bert@v2          layer 0 changed
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_BERT

pytestmark = pytest.mark.slow  # several processes that import torch

ZOO = Path(sys.executable).with_name("zoo")  # the console script a user runs

# What a process computes from state dicts: each tensor's sha256 and size, as the model holds it.
DIGESTS = """
import hashlib, json, sys, torch, zoo

def digests(model):
    out = {}
    for name, t in model.state_dict().items():
        t = t.detach().contiguous().cpu()
        out[name] = [hashlib.sha256(t.numpy().tobytes()).hexdigest(), t.numel() * t.element_size()]
    return out

def expected(tuned, base):
    known = {d for d, _ in base.values()}
    shared = [n for n, (d, _) in tuned.items() if d in known]
    return {"tensors": len(shared), "of_tensors": len(tuned),
            "unchanged": sum(base.get(n, [None])[0] == tuned[n][0] for n in shared),
            "bytes": sum(tuned[n][1] for n in shared), "of_bytes": sum(s for _, s in tuned.values())}
"""

SAVE_BASE = DIGESTS + f"""
torch.manual_seed(0)
model = zoo.build({TINY_BERT!r})
zoo.save(model, "base-bert", description="the base", labels={{"team": "search"}})
"""

TUNE = DIGESTS + """
layer, name, source = int(sys.argv[1]), sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "base-bert"
torch.manual_seed(layer + 1)
model = zoo.load(source)                           # a fresh process: the base is found from the load
base = digests(model)
with torch.no_grad():
    for p in (model.encoder.layer[layer] if layer >= 0 else model.pooler).parameters():
        p.add_(torch.randn_like(p))
    if layer == 1:  # one tensor made byte-identical to a base tensor of another name
        model.encoder.layer[1].attention.output.dense.weight.copy_(model.encoder.layer[0].attention.output.dense.weight)
version = zoo.save(model, name, description=f"layer {layer} tuned" if layer >= 0 else "pooler tuned")
print(json.dumps({"version": version.name, "expected": expected(digests(model), base)}))
"""


def zoo_cli(*args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(ZOO), *args], capture_output=True, text=True, timeout=300,
                            env={**os.environ, **env})
    if check:
        assert result.returncode == 0, f"zoo {' '.join(args)}: rc {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def python(code: str, *args: str, env: dict) -> str:
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def snapshot(home: Path, name: str) -> Path:
    snaps = sorted((home / "hub" / f"models--local--{name}" / "snapshots").iterdir())
    return snaps[-1]


def copy_folder(src: Path, dest: Path, card: str) -> Path:
    shutil.copytree(src, dest, symlinks=False)  # the files, read through the snapshot's links
    for path in dest.iterdir():
        path.chmod(0o644)
    (dest / "README.md").write_text(card)
    return dest


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("lineage")
    home = root / "zoo-home"
    env = {"ZOO_HOME": str(home), "HF_HOME": str(root / "hf"), "ZOO_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "ZOO_QUIET": "1", "OMP_NUM_THREADS": "1"}
    python(SAVE_BASE, env=env)
    first = json.loads(python(TUNE, "1", "ft-bert", env=env).splitlines()[-1])
    zoo_cli("tag", "ft-bert", "prod", env=env)
    card = "---\nlicense: mit\nbase_model: ft-bert\ntags: [ner]\n---\n\n# NER tagger for search\n\nTuned on ...\n"
    copy_folder(snapshot(home, "ft-bert"), root / "card-bert", card)
    zoo_cli("import", str(root / "card-bert"), "--name", "card-bert", "--description", "from a card",
            "--label", "task=ner", env=env)
    second = json.loads(python(TUNE, "0", "ft-bert", env=env).splitlines()[-1])
    third = json.loads(python(TUNE, "-1", "ft-bert", "ft-bert@v1", env=env).splitlines()[-1])
    copy_folder(snapshot(home, "base-bert"), root / "hubby",
                "---\nbase_model:\n  - google-bert/bert-base-cased\n---\n# Hubby\n")
    zoo_cli("import", str(root / "hubby"), "--name", "hubby", env=env)
    assert (first["version"], second["version"], third["version"]) == ("v1", "v2", "v3")
    return {"home": home, "env": env, "root": root, "v1": first["expected"], "v2": second["expected"],
            "v3": third["expected"]}


def manifest(home: Path, name: str, version: int = 1) -> dict:
    return json.loads((home / "versions" / f"models--local--{name}" / f"v{version:04d}.json").read_text())


def shares_of(expected: dict) -> dict:
    return {**expected, "again": expected["bytes"], "whole_files": 0, "note": None}


def test_lineage_shows_the_base_above_and_the_exact_tensors_shared(family):
    env, v1 = family["env"], family["v1"]
    assert v1["tensors"] > 0 and v1["tensors"] < v1["of_tensors"] and v1["unchanged"] == v1["tensors"] - 1
    tree = json.loads(zoo_cli("lineage", "ft-bert@prod", "--json", env=env).stdout)
    assert (tree["name"], tree["version"], tree["aliases"]) == ("ft-bert", "v1", ["prod"])
    assert tree["shares"] == shares_of(v1)
    assert [(b["name"], b["version"], b["stored"]) for b in tree["bases"]] == [("base-bert", "v1", True)]
    assert tree["bases"][0]["id"] == manifest(family["home"], "base-bert")["id"]
    assert [(d["name"], d["version"], d["shares"]["whole_files"]) for d in tree["derived"]] == [
        ("card-bert", "v1", 1), ("ft-bert", "v3", 0)]

    text = zoo_cli("lineage", "ft-bert@prod", env=env).stdout.splitlines()
    assert text[0].startswith("base-bert@v1  ")
    assert text[1].startswith("└── ft-bert@v1  ") and text[1].endswith("[prod]  <- this")
    from zoo.store.progress import human

    assert (f"shares {v1['tensors']} of {v1['of_tensors']} tensors (1 of them identical to a base tensor of another name), "
            f"{human(v1['bytes'])} of {human(v1['of_bytes'])} with its base base-bert@v1") in text[2]
    assert "card-bert@v1" in text[3] and f"shares {v1['of_tensors']} of {v1['of_tensors']} tensors" in text[4]
    assert "ft-bert@v3" in text[5]


def test_lineage_below_lists_every_version_made_from_the_name_with_aliases(family):
    env = family["env"]
    tree = json.loads(zoo_cli("lineage", "base-bert", "--json", env=env).stdout)
    assert tree["bases"] == [] and tree["shares"] is None
    below = {(d["name"], d["version"]): d for d in tree["derived"]}
    assert set(below) == {("ft-bert", "v1"), ("ft-bert", "v2")}
    assert below["ft-bert", "v1"]["aliases"] == ["prod"] and below["ft-bert", "v2"]["aliases"] == []
    assert below["ft-bert", "v2"]["shares"] == shares_of(family["v2"])
    assert [(d["name"], d["version"], d["from"]) for d in below["ft-bert", "v1"]["derived"]] == [
        ("card-bert", "v1", "ft-bert@v1"), ("ft-bert", "v3", "ft-bert@v1")]
    text = zoo_cli("lineage", "base-bert", env=env).stdout
    assert text.splitlines()[0].endswith("<- this") and "├── ft-bert@v1" in text and "└── ft-bert@v2" in text
    assert "│   ├── card-bert@v1" in text and "│   └── ft-bert@v3" in text


def test_versions_made_from_an_earlier_version_of_the_name_hang_under_it(family):
    env = family["env"]
    tree = json.loads(zoo_cli("lineage", "ft-bert", "--json", env=env).stdout)  # the newest: v3
    assert tree["version"] == "v3" and tree["shares"] == shares_of(family["v3"])
    assert [(b["name"], b["version"]) for b in tree["bases"]] == [("ft-bert", "v1"), ("base-bert", "v1")]
    assert [(d["name"], d["from"]) for d in tree["derived"]] == [("card-bert", "ft-bert@v1")]  # not ft-bert@v2
    lines = zoo_cli("lineage", "ft-bert", env=env).stdout.splitlines()
    drawn = [(m.group(1), line.endswith("<- this")) for line in lines if (m := re.match(r"^([│├└─ ]*\S+@v\d+)  ", line))]
    # the version the newest was made from is drawn with what else was made from it, card-bert included
    assert drawn == [("base-bert@v1", False), ("└── ft-bert@v1", False), ("    ├── ft-bert@v3", True),
                     ("    └── card-bert@v1", False)]


def test_zoo_lineage_in_python_is_the_cli_tree(family):
    code = "import json, zoo; print(json.dumps(zoo.lineage('card-bert')))"
    in_python = json.loads(python(code, env=family["env"]))
    assert in_python == json.loads(zoo_cli("lineage", "card-bert", "--json", env=family["env"]).stdout)
    assert [(b["name"], b["version"]) for b in in_python["bases"]] == [("ft-bert", "v1"), ("base-bert", "v1")]


def test_a_base_the_store_does_not_hold_is_shown_as_such(family):
    assert manifest(family["home"], "hubby")["base"] == {"name": "google-bert/bert-base-cased",
                                                        "repo": "google-bert/bert-base-cased",
                                                        "version": None, "id": None}
    text = zoo_cli("lineage", "hubby", env=family["env"]).stdout.splitlines()
    assert text[0] == "google-bert/bert-base-cased  (a hub repository the store does not hold; no commit recorded)"
    assert text[1].startswith("└── hubby@v1  ") and text[1].endswith("<- this")
    # and what was made from a hub repository the store never pulled is found from it
    tree = json.loads(zoo_cli("lineage", "google-bert/bert-base-cased", "--json", env=family["env"]).stdout)
    assert (tree["stored"], tree["version"], tree["bases"]) == (False, None, [])
    assert [(d["name"], d["from"]) for d in tree["derived"]] == [("hubby", "google-bert/bert-base-cased")]
    assert zoo_cli("lineage", "google-bert/bert-base-cased", env=family["env"]).stdout.splitlines()[1].startswith(
        "└── hubby@v1  ")


def _tensor_bytes(path: Path) -> dict[str, list]:
    """Each tensor's sha256 and size, read with json and struct (not zoo's parser)."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    return {name: [hashlib.sha256(data[8 + n + s:8 + n + e]).hexdigest(), e - s]
            for name, (s, e) in ((k, v["data_offsets"]) for k, v in header.items())}


def test_tensor_records_are_each_objects_tensor_digests_with_the_stores_mode(family):
    home = family["home"]
    zoo_cli("lineage", "base-bert", env=family["env"])
    file_mode = home.stat().st_mode & 0o444
    for name, number in (("base-bert", 1), ("ft-bert", 1), ("ft-bert", 2)):
        sha = next(f["sha256"] for f in manifest(home, name, number)["files"] if f["path"] == "model.safetensors")
        record = home / "tensors" / f"{sha}.json"
        assert record.stat().st_mode & 0o777 == file_mode
        data = json.loads(record.read_text())
        obj = home / "objects" / "sha256" / sha[:2] / sha
        assert data["sha256"] == sha and data["tensors"] == _tensor_bytes(obj)


def test_du_counts_the_bytes_fine_tunes_store_again(family):
    # by hand: each fine-tune's own file holds the tensors it shares with its base again; card-bert's weights
    # are ft-bert@v1's file itself (stored once) and hubby's base is not stored: neither adds anything
    expected = sum(family[v]["bytes"] for v in ("v1", "v2", "v3"))
    tensors = sum(family[v]["tensors"] for v in ("v1", "v2", "v3"))
    out = zoo_cli("du", env=family["env"])
    line = next(line for line in out.stdout.splitlines() if line.startswith("again"))
    assert f"stored again: {expected:,} bytes in {tensors} tensors of 3 files of fine-tunes" in line
    assert out.stderr == ""


def test_import_keeps_the_card_and_records_its_base_model(family):
    home = family["home"]
    files = {f["path"] for f in manifest(home, "card-bert")["files"]}
    assert files == {"README.md", "config.json", "model.safetensors"}
    ft = manifest(home, "ft-bert")
    assert manifest(home, "card-bert")["base"] == {"name": "ft-bert", "repo": "local/ft-bert", "version": "v1",
                                                   "id": ft["id"]}
    assert "README.md" not in {f["path"] for f in ft["files"]}  # zoo.save writes no card


def test_info_shows_the_registry_record_of_a_stored_name(family):
    env = family["env"]
    card = json.loads(zoo_cli("info", "card-bert", "--json", env=env).stdout)
    assert card["model_type"] == "bert"  # the folder's figures are still there
    assert {k: card[k] for k in ("name", "version", "description", "labels", "card_title", "aliases")} == {
        "name": "card-bert", "version": "v1", "description": "from a card", "labels": {"task": "ner"},
        "card_title": "NER tagger for search", "aliases": []}
    assert (card["base"]["name"], card["base"]["version"]) == ("ft-bert", "v1")
    assert (card["user"], card["uid"], card["host"]) == (getpass.getuser(), os.getuid(), socket.gethostname())
    assert card["created"] == manifest(family["home"], "card-bert")["created"]

    text = zoo_cli("info", "ft-bert@prod", env=env).stdout
    for line in ("name:                 ft-bert@v1 (", "description:          layer 1 tuned",
                 "model card:           (no README.md title)", "aliases:              prod",
                 "base:                 base-bert@v1 (", f"by {getpass.getuser()} (uid {os.getuid()}) on "
                 f"{socket.gethostname()}, from zoo.save"):
        assert line in text, (line, text)
    base = zoo_cli("info", "base-bert", env=env).stdout
    assert "labels:               team=search" in base and "base:                 (none recorded)" in base
    hubby = json.loads(zoo_cli("info", "hubby", "--json", env=env).stdout)
    assert hubby["card_title"] == "Hubby" and hubby["base"]["version"] is None


def test_info_of_a_folder_has_no_registry_record(family):
    result = json.loads(zoo_cli("info", str(family["root"] / "card-bert"), "--json", env=family["env"]).stdout)
    assert "aliases" not in result and result["model_type"] == "bert"


@pytest.mark.parametrize("name, says", [
    ("no-such-name", "'no-such-name' is not a directory"),
    ("ft-bert@v9", "ft-bert@v9: no such version of ft-bert in the store"),
    ("ft-bert@nope", "ft-bert@nope: no such version of ft-bert in the store"),
    ("org/never-seen", "org/never-seen is not in the store"),
])
def test_lineage_of_an_unknown_name_is_a_one_line_error(family, name, says):
    before = sorted(p.relative_to(family["home"]) for p in family["home"].rglob("*") if "tmp" not in p.parts)
    result = zoo_cli("lineage", name, env=family["env"], check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"zoo: error: {says}") and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.relative_to(family["home"]) for p in family["home"].rglob("*") if "tmp" not in p.parts) == before


# -- a store of its own per test: damage, removal -------------------------------------------------------------

@pytest.fixture
def pair(tmp_path):
    home = tmp_path / "zoo-home"
    env = {"ZOO_HOME": str(home), "ZOO_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "ZOO_QUIET": "1", "OMP_NUM_THREADS": "1"}
    python(SAVE_BASE + TUNE, "1", "ft-bert", env=env)  # one process: the family above tests a fresh one
    sha = next(f["sha256"] for f in manifest(home, "ft-bert")["files"] if f["path"] == "model.safetensors")
    return home, env, home / "objects" / "sha256" / sha[:2] / sha


def _rewrite(path: Path, offset: int, data: bytes) -> None:
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_a_damaged_header_in_a_stored_object_is_a_note_not_a_crash(pair):
    home, env, obj = pair
    _rewrite(obj, 0, struct.pack("<Q", 2**40))  # a header length past the file's end
    result = zoo_cli("lineage", "base-bert", env=env)
    assert "Traceback" not in result.stderr
    line = next(line for line in result.stdout.splitlines() if "shares" in line)
    assert "shares with its base base-bert@v1: not known (ft-bert@v1 model.safetensors: " in line
    assert "is not a valid safetensors file: header length 1099511627776 does not fit" in line
    du = zoo_cli("du", env=env)
    notes = du.stderr.splitlines()
    assert len(notes) == 1 and notes[0].startswith("  not compared: ft-bert@v1 model.safetensors: ")
    assert "not a valid safetensors file" in notes[0]
    assert "stored again: 0 bytes" in du.stdout
    assert not (home / "tensors" / f"{obj.name}.json").exists()


def test_bytes_changed_under_a_valid_header_are_never_recorded(pair):
    home, env, obj = pair
    size = obj.stat().st_size
    _rewrite(obj, size - 4, b"\xff\xff\xff\xff")  # the last tensor's bytes rot; the header still fits
    tree = json.loads(zoo_cli("lineage", "ft-bert", "--json", env=env).stdout)
    assert tree["shares"]["tensors"] == 0 and "no longer have the sha256 it is stored under" in tree["shares"]["note"]
    assert not (home / "tensors" / f"{obj.name}.json").exists()


def test_gc_removes_the_tensor_records_of_objects_gone(pair):
    home, env, obj = pair
    zoo_cli("lineage", "ft-bert", env=env)
    base_sha = next(f["sha256"] for f in manifest(home, "base-bert")["files"] if f["path"] == "model.safetensors")
    records = home / "tensors"
    assert {p.stem for p in records.iterdir()} == {obj.name, base_sha}
    zoo_cli("rm", "ft-bert", env=env)
    assert not obj.exists() and (records / f"{obj.name}.json").exists()
    dry = zoo_cli("gc", "--dry-run", env=env)
    assert (records / f"{obj.name}.json").exists(), dry.stdout
    zoo_cli("gc", env=env)
    assert {p.stem for p in records.iterdir()} == {base_sha}


# -- another user's store ------------------------------------------------------------------------------------

def _multi_user():
    """tests/daemon/test_multi_user.py's users and runner (a module of tests, loaded by its path)."""
    import importlib.util

    path = Path(__file__).parents[1] / "daemon" / "test_multi_user.py"
    spec = importlib.util.spec_from_file_location("zoo_test_multi_user_for_lineage", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


_mu = _multi_user()
users = _mu.users  # the fixture: a group with users a and b, an outsider c (skips unless root)


def test_a_reader_who_may_not_write_the_store_computes_in_memory(users):
    import tempfile

    store = Path(tempfile.mkdtemp(prefix="store-", dir=users["base"]))
    store.chmod(0o755)  # root's store: others may read it, never write it
    env = {"ZOO_HOME": str(store), "ZOO_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "ZOO_QUIET": "1"}
    expected = json.loads(python(SAVE_BASE + TUNE, "1", "ft-bert", env=env).splitlines()[-1])["expected"]
    theirs = json.loads(_mu.ok(_mu.zoo_cli(users, "c", store, "lineage", "ft-bert", "--json")))
    assert theirs["shares"] == shares_of(expected)
    assert not (store / "tensors").exists() and not any((store / "tmp").iterdir())
    du = _mu.ok(_mu.zoo_cli(users, "c", store, "du"))
    assert f"stored again: {expected['bytes']:,} bytes in {expected['tensors']} tensors of 1 file" in du
    assert json.loads(zoo_cli("lineage", "ft-bert", "--json", env=env).stdout) == theirs
    assert len(list((store / "tensors").iterdir())) == 2  # the owner's reader records them


def test_a_base_removed_since_is_drawn_as_gone(pair):
    home, env, obj = pair
    zoo_cli("rm", "base-bert", env=env)
    tree = json.loads(zoo_cli("lineage", "ft-bert", "--json", env=env).stdout)
    assert tree["shares"] is None and [(b["name"], b["stored"]) for b in tree["bases"]] == [("base-bert", False)]
    assert zoo_cli("lineage", "ft-bert", env=env).stdout.splitlines()[0] == \
        "base-bert@v1  (not in the store: removed since)"
    assert "stored again: 0 bytes in 0 tensors of 0 files" in zoo_cli("du", env=env).stdout


def test_through_a_daemon_lineage_records_and_gc_work_the_same(tmp_path):
    import signal
    import time

    home = tmp_path / "served"
    home.mkdir()
    env = {"ZOO_HOME": str(home), "ZOO_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "ZOO_QUIET": "1"}
    log = tmp_path / "daemon.log"
    with open(log, "ab") as err:
        proc = subprocess.Popen([sys.executable, "-m", "zoo", "daemon", "--store", str(home)],
                                env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 60
        while not (home / "daemon.sock").exists() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
        expected = json.loads(python(SAVE_BASE + TUNE, "1", "ft-bert", env=env).splitlines()[-1])["expected"]
        assert "import name=ft-bert" in log.read_text()  # the versions were made by the daemon
        tree = json.loads(zoo_cli("lineage", "ft-bert", "--json", env=env).stdout)
        assert tree["shares"] == shares_of(expected) and tree["bases"][0]["name"] == "base-bert"
        sha = next(f["sha256"] for f in manifest(home, "ft-bert")["files"] if f["path"] == "model.safetensors")
        assert (home / "tensors" / f"{sha}.json").exists()
        zoo_cli("rm", "ft-bert", env=env)
        zoo_cli("gc", env=env)
        assert [p.name for p in (home / "tensors").iterdir()] != [] and not (home / "tensors" / f"{sha}.json").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()


def test_lineage_info_and_du_never_import_torch(family):
    env = {**family["env"], "PYTHONPROFILEIMPORTTIME": "1"}
    for args in (("lineage", "base-bert"), ("info", "card-bert"), ("du",)):
        stderr = zoo_cli(*args, env=env).stderr
        imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in stderr.splitlines()
                    if line.startswith("import time:") and "|" in line}
        assert "zoo" in imported and not imported & {"torch", "transformers", "safetensors", "numpy"}, args
