"""The registry against hostile input and a hostile group member: each case is a defect a review found, reproduced
as it was reported (the CLI in a subprocess, a raw request to a real daemon, a file planted in the store)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_python
from test_registry_doors import folders, ok, two_versions, zoo_cli  # noqa: F401 - fixtures

from zoo.errors import InvalidNameError
from zoo.names import validate_name, version_number
from zoo.store import Store


def test_a_revision_is_never_a_path_the_store_reads(two_versions):
    """A revision such as ../../../../dev/zero (sent raw to the daemon, or through the Python API) was joined to
    refs/ and read whole: the daemon ran out of memory. It is refused as a revision; nothing is read."""
    store = Store(two_versions)
    for spec in ("../../../../../../dev/zero", "a/../../x", "..", "x\n"):
        with pytest.raises(InvalidNameError):
            store.tag("tiny", "prod", spec)
        with pytest.raises(InvalidNameError):
            store.find("local/tiny", spec)
    assert not (two_versions / "marks").exists()


def test_a_fifo_or_symlink_planted_as_a_ref_is_not_followed(two_versions):
    refs = two_versions / "hub" / "models--local--tiny" / "refs"
    os.mkfifo(refs / "fifo")
    (refs / "link").symlink_to(refs / "main")
    start = time.monotonic()
    store = Store(two_versions)
    assert store.find("local/tiny", "fifo") is None  # did block forever, holding the name's lock in a writer
    assert store.find("local/tiny", "link") is None
    assert time.monotonic() - start < 5


def test_a_history_log_or_aliases_file_replaced_by_a_symlink_or_fifo(two_versions, tmp_path):
    """A group member replaces the history log with a symlink to another user's file, or with a FIFO: zoo never
    writes through the link, never blocks; zoo verify reports it, zoo history says so."""
    victim = tmp_path / "notes.txt"
    victim.write_text("mine\n")
    log = two_versions / "history" / "models--local--tiny.jsonl"
    log.unlink()
    log.symlink_to(victim)
    ok(zoo_cli("tag", "tiny@v1", "prod"))  # the change stands; the history could not be written
    assert victim.read_text() == "mine\n"
    verify = zoo_cli("verify", "tiny")
    assert verify.returncode == 1 and "DAMAGED history" in verify.stdout and "not a regular file" in verify.stdout
    log.unlink()
    os.mkfifo(log)
    marks = two_versions / "marks" / "models--local--tiny.json"
    marks.unlink()
    os.mkfifo(marks)
    for args in (("history", "tiny"), ("versions", "tiny"), ("tag", "tiny@v2", "canary"), ("verify", "tiny")):
        result = zoo_cli(*args, timeout=60)  # did hang forever
        assert "Traceback" not in result.stderr, (args, result.stderr)
    tagged = zoo_cli("tag", "tiny@v2", "canary")
    assert tagged.returncode == 2 and "not a readable zoo aliases file" in tagged.stderr


def test_writers_refuse_to_decide_from_an_unreadable_aliases_file(two_versions):
    """One stray byte in the aliases file made it read as "no aliases": zoo rm removed an aliased version and the
    next zoo tag wrote the file again from nothing, losing every alias and label."""
    ok(zoo_cli("tag", "tiny@v1", "prod"))
    ok(zoo_cli("label", "tiny@v1", "approved=yes"))
    marks = two_versions / "marks" / "models--local--tiny.json"
    damaged = marks.read_bytes().replace(b'"aliases": {', b'"aliases": {,', 1)
    marks.chmod(0o644)
    marks.write_bytes(damaged)
    for args in (("rm", "tiny@v1"), ("rm", "tiny"), ("tag", "tiny@v2", "canary"), ("untag", "tiny", "prod"),
                 ("label", "tiny@v2", "x=1")):
        result = zoo_cli(*args)
        assert result.returncode == 2 and "not a readable zoo aliases file" in result.stderr, (args, result.stderr)
    assert marks.read_bytes() == damaged
    assert (two_versions / "versions" / "models--local--tiny" / "v0001.json").exists()
    verify = zoo_cli("verify", "tiny")
    assert verify.returncode == 1 and "DAMAGED aliases" in verify.stdout


@pytest.mark.parametrize("alias", ["V2", "Main", "MAIN", "Head", "Latest", "prod\n", "NEWEST"])
def test_look_alikes_of_versions_and_reserved_words_are_refused(two_versions, alias):
    result = zoo_cli("tag", "tiny", alias)
    assert result.returncode == 2 and "invalid alias" in result.stderr


def test_names_and_versions_with_a_trailing_newline_are_refused():
    assert version_number("v3\n") is None
    with pytest.raises(InvalidNameError):
        validate_name("tiny\n")


def test_labels_of_a_version_removed_by_hand_do_not_pass_to_the_next_content(two_versions, folders, tmp_path):
    ok(zoo_cli("label", "tiny@v2", "approved=yes"))
    (two_versions / "versions" / "models--local--tiny" / "v0002.json").unlink()  # by hand, not zoo rm
    other = tmp_path / "other"
    other.mkdir()
    for f in folders["v2"].iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    (other / "extra.txt").write_text("other content")
    ok(zoo_cli("import", str(other), "--name", "tiny"))
    marks = json.loads((two_versions / "marks" / "models--local--tiny.json").read_text()) \
        if (two_versions / "marks" / "models--local--tiny.json").exists() else {"labels": {}}
    assert "v2" not in marks["labels"]


def test_the_label_limit_holds_across_calls_and_long_labels_reach_the_history(two_versions):
    for i in range(4):
        ok(zoo_cli("label", "tiny@v1", *[f"k{i}_{j}=v" for j in range(16)]))
    refused = zoo_cli("label", "tiny@v1", "one=more")
    assert refused.returncode == 2 and "at most 64 labels" in refused.stderr
    ok(zoo_cli("label", "tiny@v2", *[f"e{j}={'😀' * 256}" for j in range(64)]))
    events = json.loads(ok(zoo_cli("history", "tiny", "--json")))
    assert events[-1]["event"] == "labels_changed" and len(events[-1]["labels"]) == 64


def test_a_description_with_control_characters_is_refused_and_a_source_is_one_line(two_versions, folders):
    result = zoo_cli("import", str(folders["v1"]), "--name", "other", "--description", "ok\x1b[2J")
    assert result.returncode == 2 and "printable" in result.stderr
    assert not (two_versions / "versions" / "models--local--other").exists()
    result = run_python(f"""
        import zoo
        from zoo.store import Store
        v = Store().import_dir({str(folders['v1'])!r}, "other", source="x\\nforged line\\x1b[2J")
        print(repr(v.source))
    """)
    assert result.returncode == 0, result.stderr
    assert "\\n" not in result.stdout.strip() and "\\x1b" not in result.stdout.strip()


def test_an_alias_whose_version_went_says_which_and_how_to_fix_it(two_versions):
    ok(zoo_cli("tag", "tiny@v1", "prod"))
    (two_versions / "versions" / "models--local--tiny" / "v0001.json").unlink()  # by hand
    result = run_python("import zoo\nzoo.load_config('tiny@prod')")
    assert result.returncode != 0
    assert "tiny@prod points at v1" in result.stderr and "zoo untag tiny prod" in result.stderr


def test_an_alias_of_a_hub_repository_goes_when_a_pull_learns_the_upstream_has_that_ref(hub_env, hub, minilm_dir):
    """zoo tag org/x dev is accepted while the store knows no upstream ref dev; once a pull learns of the upstream's
    branch dev, the upstream's ref wins (as NAME@dev then loads it): the alias is removed and the history says why,
    so zoo versions never shows an alias that loads something else."""
    repo = "org/later-branch"
    files = {p.name: p for p in minilm_dir.iterdir() if p.name in ("config.json", "model.safetensors")}
    hub.add_repo(repo, files)
    ok(zoo_cli("pull", repo))
    ok(zoo_cli("tag", repo, "dev"))
    hub.add_repo(repo, {**files, "extra.txt": b"dev branch"}, branch="dev")
    ok(zoo_cli("pull", f"{repo}@dev"))
    versions = ok(zoo_cli("versions", repo))
    assert " dev " not in versions and ",dev" not in versions
    events = json.loads(ok(zoo_cli("history", repo, "--json")))
    gone = [e for e in events if e["event"] == "alias_moved" and e["alias"] == "dev" and e["version"] is None]
    assert gone and "upstream" in gone[-1]["note"]


@pytest.mark.slow
def test_hostile_requests_to_the_daemon_are_refused_and_logged_on_one_line(two_versions, tmp_path):
    """Raw requests on the daemon's socket: a revision that is a path, a FIFO-named ref, a log line with a newline
    and escape codes. Each is a zoo error; the daemon's log gets one line per request; it keeps serving."""
    from zoo.daemon import wire

    log = tmp_path / "daemon.log"
    daemon = subprocess.Popen([sys.executable, "-m", "zoo", "daemon", "--store", str(two_versions)],
                              stderr=open(log, "wb"), stdout=subprocess.DEVNULL)
    sock_path = two_versions / "daemon.sock"
    try:
        deadline = time.monotonic() + 60
        while not sock_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)

        def ask(op: str, **args) -> dict:
            with socket.socket(socket.AF_UNIX) as conn:
                conn.settimeout(30)
                conn.connect(str(sock_path))
                wire.send(conn, {"op": op, "args": args})
                return wire.Reader(conn).line()

        reply = ask("tag", repo="local/tiny", alias="y", revision="../../../../../../dev/zero")
        assert reply["error"]["type"] == "InvalidNameError"
        reply = ask("label", repo="local/tiny", revision="v1\nFORGED zoo line", labels={"a": "b"}, remove=[])
        assert "error" in reply
        reply = ask("tag", repo="local/tiny", alias="prod", revision="v1")
        assert reply.get("ok", {}).get("version") == "v1"
        assert not any("FORGED" in line and "uid" not in line for line in log.read_text().splitlines())
        assert "\x1b" not in log.read_text()
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
