"""Aliases, labels, records and history, through the doors a user uses: the ``zoo`` command in a subprocess and
``zoo.load`` in a fresh process, checking the store's files (marks, history) and the loaded tensors themselves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_BERT, run_python


def zoo_cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "zoo", "-q", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"rc {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Two saved tiny BERTs (different weights), as a user has them: written by save_pretrained."""
    root = tmp_path_factory.mktemp("models")
    result = run_python(f"""
        import torch, zoo
        for seed in (1, 2):
            torch.manual_seed(seed)
            zoo.build({TINY_BERT!r}).save_pretrained({str(root)!r} + f"/m{{seed}}")
    """)
    assert result.returncode == 0, result.stderr
    return {"v1": root / "m1", "v2": root / "m2"}


@pytest.fixture
def two_versions(folders) -> Path:
    """``tiny`` with versions v1 and v2 in this test's store; returns the store's home."""
    ok(zoo_cli("import", str(folders["v1"]), "--name", "tiny"))
    ok(zoo_cli("import", str(folders["v2"]), "--name", "tiny"))
    return Path(os.environ["ZOO_HOME"])


def state_of(spec: str) -> dict:
    """What ``zoo.load(spec)`` gives in a fresh process: the sum of every tensor, by name."""
    result = run_python(f"""
        import json, zoo
        m = zoo.load({spec!r})
        print(json.dumps({{k: float(v.double().sum()) for k, v in m.state_dict().items()}}))
    """)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def reference(folder: Path) -> dict:
    from safetensors.numpy import load_file

    return {k.removeprefix("bert."): float(v.astype("float64").sum())
            for k, v in load_file(str(folder / "model.safetensors")).items()}


def test_an_alias_is_set_moved_and_removed_and_loads_the_version_it_names(two_versions, folders):
    assert "tiny@prod -> v1" in ok(zoo_cli("tag", "tiny@v1", "prod"))
    versions = ok(zoo_cli("versions", "tiny"))
    row = {line.split()[0]: line for line in versions.splitlines()[1:]}
    assert "prod" in row["v1"].split() and "prod" not in row["v2"].split()
    got = state_of("tiny@prod")
    want = reference(folders["v1"])
    assert {k: got[k] for k in want if k in got} == {k: want[k] for k in want if k in got}
    assert len(set(want) & set(got)) >= 10

    assert "moved v1 -> v2" in ok(zoo_cli("tag", "tiny", "prod"))  # no @REV: the newest
    assert "nothing changed" in ok(zoo_cli("tag", "tiny", "prod"))
    got = state_of("tiny@prod")
    want = reference(folders["v2"])
    assert {k: got[k] for k in want if k in got} == {k: want[k] for k in want if k in got}

    ok(zoo_cli("untag", "tiny", "prod"))
    gone = run_python("import zoo\nzoo.load_config('tiny@prod')")
    assert gone.returncode != 0 and "CheckpointNotFoundError" in gone.stderr
    events = json.loads(ok(zoo_cli("history", "tiny", "--json")))
    moves = [(e["alias"], e["previous"], e["version"]) for e in events if e["event"] == "alias_moved"]
    assert moves == [("prod", None, "v1"), ("prod", "v1", "v2"), ("prod", "v2", None)]
    assert [e["version"] for e in events if e["event"] == "version_created"] == ["v1", "v2"]
    assert all(e["who"]["uid"] == os.getuid() for e in events)


@pytest.mark.parametrize("alias, rule", [
    ("v3", "zoo's version"), ("abcdef12", "commit or content id"), ("main", "reserved"), ("HEAD", "reserved"),
    ("a/b", "no '/'"), ("a..b", "no '/'"), ("_x", "starts with a letter"), ("x" * 65, "at most 64"),
    ("zoo:v1", "starts with a letter"), ("pr od", "starts with a letter"),
])
def test_bad_aliases_are_refused_with_the_rule_and_change_nothing(two_versions, alias, rule):
    ok(zoo_cli("tag", "tiny@v1", "prod"))
    marks = (two_versions / "marks" / "models--local--tiny.json").read_bytes()
    history = (two_versions / "history" / "models--local--tiny.jsonl").read_bytes()
    result = zoo_cli("tag", "tiny", alias)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("zoo: error: invalid alias") and rule in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert (two_versions / "marks" / "models--local--tiny.json").read_bytes() == marks
    assert (two_versions / "history" / "models--local--tiny.jsonl").read_bytes() == history


def test_tagging_or_labelling_what_does_not_exist_is_a_one_line_error(two_versions):
    for args, said in ((("tag", "tiny@v9", "prod"), "no such version"),
                       (("label", "nothing-here", "task=ner"), "not a directory"),
                       (("label", "tiny", "task"), "key=value"),
                       (("label", "tiny", "bad key=1"), "invalid label key"),
                       (("untag", "tiny", "never"), "has no alias")):
        result = zoo_cli(*args)
        assert result.returncode == 2 and said in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (two_versions / "marks").exists()


def test_an_aliased_version_is_not_removed_until_the_alias_moves(two_versions):
    ok(zoo_cli("tag", "tiny@v1", "prod"))
    refused = zoo_cli("rm", "tiny@v1")
    assert refused.returncode == 2 and "aliased as prod" in refused.stderr and "zoo untag tiny prod" in refused.stderr
    assert (two_versions / "versions" / "models--local--tiny" / "v0001.json").exists()
    assert zoo_cli("rm", "tiny").returncode == 2  # every version: v1 among them
    ok(zoo_cli("tag", "tiny@v2", "prod"))
    ok(zoo_cli("rm", "tiny@v1"))
    assert not (two_versions / "versions" / "models--local--tiny" / "v0001.json").exists()
    events = json.loads(ok(zoo_cli("history", "tiny", "--json")))
    assert events[-1]["event"] == "version_removed" and events[-1]["version"] == "v1"
    assert events[-1]["reason"] == "removed"


def test_labels_and_records_of_a_save_and_an_import(two_versions, folders):
    ok(zoo_cli("label", "tiny@v1", "task=ner", "team=search"))
    ok(zoo_cli("label", "tiny@v1", "stage=dev", "--rm", "team"))
    marks = json.loads((two_versions / "marks" / "models--local--tiny.json").read_text())
    assert marks["labels"] == {"v1": {"task": "ner", "stage": "dev"}}
    result = run_python(f"""
        import json, zoo
        m = zoo.load("tiny@v1")
        v = zoo.save(m, "tiny-ft", description="fine-tuned on nothing", labels={{"task": "ner"}})
        print(json.dumps([v.name, v.base, v.description, v.user, v.uid, v.host]))
    """)
    assert result.returncode == 0, result.stderr
    name, base, description, user, uid, host = json.loads(result.stdout.strip().splitlines()[-1])
    manifest = json.loads((two_versions / "versions" / "models--local--tiny-ft" / "v0001.json").read_text())
    v1 = json.loads((two_versions / "versions" / "models--local--tiny" / "v0001.json").read_text())
    assert base == manifest["base"] == {"name": "tiny", "repo": "local/tiny", "version": "v1", "id": v1["id"]}
    assert description == manifest["description"] == "fine-tuned on nothing"
    assert uid == manifest["uid"] == os.getuid() and user and host == os.uname().nodename
    assert json.loads((two_versions / "marks" / "models--local--tiny-ft.json").read_text())["labels"] == \
        {"v1": {"task": "ner"}}


def test_an_import_records_the_base_its_card_names(two_versions, folders, tmp_path):
    import shutil

    card = tmp_path / "card"
    shutil.copytree(folders["v2"], card)
    (card / "README.md").write_text("---\nlicense: mit\nbase_model:\n  - tiny\n---\n# A fine-tune\n")
    ok(zoo_cli("import", str(card), "--name", "carded", "--description", "with a card", "--label", "k=v"))
    manifest = json.loads((two_versions / "versions" / "models--local--carded" / "v0001.json").read_text())
    assert manifest["base"]["name"] == "tiny" and manifest["base"]["version"] == "v2"
    assert manifest["description"] == "with a card"
    assert any(f["path"] == "README.md" for f in manifest["files"])  # the card is a file of the version


def test_history_survives_a_torn_last_line_and_verify_reports_damage(two_versions):
    log = two_versions / "history" / "models--local--tiny.jsonl"
    ok(zoo_cli("tag", "tiny@v1", "prod"))
    with open(log, "ab") as f:
        f.write(b'{"event": "alias_mo')  # a crash in the middle of an append
    events = json.loads(ok(zoo_cli("history", "tiny", "--json")))
    assert [e["event"] for e in events] == ["version_created", "version_created", "alias_moved"]
    assert "DAMAGED" not in ok(zoo_cli("verify", "tiny"))  # a torn last line is not damage
    ok(zoo_cli("tag", "tiny@v2", "prod"))  # appends on a line of its own
    events = json.loads(ok(zoo_cli("history", "tiny", "--json")))
    assert [e.get("previous") for e in events if e["event"] == "alias_moved"] == [None, "v1"]
    verify = zoo_cli("verify", "tiny")
    assert verify.returncode == 1 and "DAMAGED history" in verify.stdout and "lines 4" in verify.stdout
    history = zoo_cli("history", "tiny")
    assert history.returncode == 0 and "1 damaged lines" in history.stderr
    # a damaged history never stops a load
    result = run_python("import zoo\nprint(zoo.load_config('tiny@prod').path)")
    assert result.returncode == 0, result.stderr


def test_python_api_tag_untag_label_history(two_versions):
    result = run_python("""
        import json, zoo
        a = zoo.tag("tiny", "stable", version="v1")
        b = zoo.tag("tiny@v2", "canary")
        v = zoo.label("tiny@stable", {"task": "ner"})
        old = zoo.untag("tiny", "canary")
        kinds = [e.kind for e in zoo.history("tiny")]
        print(json.dumps([a.version, b.version, v.name, old.version, kinds]))
    """)
    assert result.returncode == 0, result.stderr
    a, b, v, old, kinds = json.loads(result.stdout.strip().splitlines()[-1])
    assert (a, b, v, old) == ("v1", "v2", "v1", "v2")
    assert kinds == ["version_created", "version_created", "alias_moved", "alias_moved", "labels_changed",
                     "alias_moved"]


@pytest.mark.slow
def test_a_load_while_the_alias_moves_gets_one_whole_version(two_versions, folders):
    """One process loads tiny@prod 30 times while another moves prod between v1 and v2: every load is exactly
    v1's or v2's tensors, never a mix, never an error."""
    ok(zoo_cli("tag", "tiny@v1", "prod"))
    want = {"v1": reference(folders["v1"]), "v2": reference(folders["v2"])}
    loader = subprocess.Popen([sys.executable, "-c", """
import json, zoo
for _ in range(30):
    m = zoo.load("tiny@prod")
    print(json.dumps({k: float(v.double().sum()) for k, v in m.state_dict().items()}), flush=True)
"""], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    moves = 0
    while loader.poll() is None and moves < 200:
        ok(zoo_cli("tag", f"tiny@v{2 - moves % 2}", "prod"))
        moves += 1
    out, err = loader.communicate(timeout=300)
    assert loader.returncode == 0, err
    for line in out.strip().splitlines():
        got = json.loads(line)
        matches = [name for name, ref in want.items() if all(got[k] == ref[k] for k in ref if k in got)]
        assert len(matches) == 1, "a load mixed two versions"
    assert moves > 0 and len(out.strip().splitlines()) == 30


def test_an_alias_of_a_hub_repository_never_shadows_an_upstream_ref(hub_env, hub, minilm_dir):
    """Aliases work for hub repositories in the store; one spelt like a branch or tag the upstream is known to have
    is refused, and NAME@ALIAS is resolved from the store without asking the upstream."""
    repo = "org/aliased"
    files = {p.name: p for p in minilm_dir.iterdir() if p.name in ("config.json", "model.safetensors")}
    hub.add_repo(repo, files, tag="release")
    ok(zoo_cli("pull", f"{repo}@release"))
    refused = zoo_cli("tag", repo, "release")
    assert refused.returncode == 2 and "the upstream has a branch or tag 'release'" in refused.stderr
    assert "org/aliased@stable -> v1" in ok(zoo_cli("tag", repo, "stable"))
    hub.reset_counts()
    result = run_python(f"import zoo\nprint(zoo.load_config({repo + '@stable'!r}).path)")
    assert result.returncode == 0, result.stderr
    assert hub.requests() == []
    versions = ok(zoo_cli("versions", repo))
    assert "stable" in versions.splitlines()[1].split()


def test_load_tokenizer_of_an_alias(minilm_dir):
    """zoo.load_tokenizer("NAME@ALIAS") loads the tokenizer of the version the alias points at."""
    ok(zoo_cli("import", str(minilm_dir), "--name", "mini"))
    ok(zoo_cli("tag", "mini", "prod"))
    result = run_python("""
        import zoo
        tok = zoo.load_tokenizer("mini@prod")
        print(tok("hello world")["input_ids"])
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[101, 7592, 2088, 102]"
