"""The hub protocol as data (zoo.hubserver.protocol) and the tokens file: no server, no network."""

import hashlib
import subprocess

import pytest

from zoo.hubserver import protocol
from zoo.hubserver.access import Access
from zoo.hubserver.protocol import HubError, ServedFile, parse, parse_range
from zoo.errors import InvalidArgumentError


@pytest.mark.parametrize("path, method, expected", [
    ("/api/models/bert-base-cased", "GET", ("info", "bert-base-cased", None, "")),
    ("/api/models/org/name/revision/main", "GET", ("info", "org/name", "main", "")),
    ("/api/models/org/name/revision/v3?blobs=true", "GET", ("info", "org/name", "v3", "")),
    ("/api/models/org/name/tree/abc/sub/dir", "GET", ("tree", "org/name", "abc", "sub/dir")),
    ("/api/models/name/tree/main", "GET", ("tree", "name", "main", "")),
    ("/api/models/org/name/paths-info/main", "POST", ("paths-info", "org/name", "main", "")),
    ("/org/name/resolve/main/1_Pooling/config.json", "HEAD", ("resolve", "org/name", "main", "1_Pooling/config.json")),
    ("/name/resolve/refs%2Fpr%2F1/config.json", "GET", ("resolve", "name", "refs/pr/1", "config.json")),
    ("/local/my-bert/resolve/v2/model.safetensors", "GET", ("resolve", "local/my-bert", "v2", "model.safetensors")),
])
def test_routes(path, method, expected):
    req = parse(path, method)
    assert (req.kind, req.repo, req.revision, req.path) == expected


@pytest.mark.parametrize("path", [
    "/org/name/resolve/main/../../../etc/passwd", "/org/name/resolve/main/%2e%2e/%2E%2E/x",
    "/org/%2e%2e/resolve/main/x", "/api/models/org/../revision/main", "/org/name/resolve/main//x",
    "/org/name/resolve/main/a%00b", "/org/name/resolve/main/a%5cb", "/org/name/resolve/main/%ff",
])
def test_paths_that_escape_or_hide_are_refused(path):
    with pytest.raises(HubError) as err:
        parse(path, "GET")
    assert err.value.status == 400


def test_writes_and_other_repo_types_are_refused():
    for path, method, status in (("/org/name/resolve/main/x", "PUT", 405), ("/api/models/a/paths-info/main", "GET", 405),
                                 ("/api/models/a/b/revision/main", "POST", 405), ("/api/models/a/tree/main", "POST", 405),
                                 ("/datasets/org/name/resolve/main/x", "GET", 404), ("/", "GET", 404)):
        with pytest.raises(HubError) as err:
            parse(path, method)
        assert err.value.status == status, path


@pytest.mark.parametrize("header, expected", [
    (None, None), ("bytes=0-", (0, 100)), ("bytes=10-19", (10, 20)), ("bytes=90-500", (90, 100)),
    ("bytes=-10", (90, 100)), ("bytes=-500", (0, 100)), ("bytes=100-", "unsatisfiable"), ("bytes=-0", "unsatisfiable"),
    ("bytes=5-1", None), ("bytes=0-1,5-9", None), ("items=0-1", None), ("bytes=-", None),
])
def test_ranges(header, expected):
    assert parse_range(header, 100) == expected


def test_lfs_blob_ids_are_gits(tmp_path):
    content = b"weights" * 1000
    sha256 = hashlib.sha256(content).hexdigest()
    f = ServedFile("model.safetensors", len(content), sha256, sha256)
    pointer = tmp_path / "pointer"
    pointer.write_text(protocol.LFS_POINTER.format(sha256=sha256, size=len(content)))
    git = subprocess.run(["git", "hash-object", str(pointer)], capture_output=True, text=True, check=True).stdout.strip()
    assert f.lfs and f.blob_id == git and f.entry()["lfs"]["pointerSize"] == pointer.stat().st_size
    small = ServedFile("config.json", 2, None, "a" * 40)
    assert not small.lfs and small.blob_id == "a" * 40 and "lfs" not in small.entry()


def test_tree_levels():
    files = [ServedFile(p, 1, None, "0" * 40) for p in ("a.json", "d/b.json", "d/e/c.json")]
    assert [e["path"] for e in protocol.tree(files, "", False)] == ["a.json", "d"]
    assert [e["path"] for e in protocol.tree(files, "", True)] == ["a.json", "d", "d/b.json", "d/e", "d/e/c.json"]
    assert [(e["path"], e["type"]) for e in protocol.tree(files, "d", False)] == [("d/b.json", "file"), ("d/e", "directory")]


def test_hub_time_is_what_huggingface_hub_parses():
    from huggingface_hub.utils import parse_datetime

    for text in ("2026-11-26T17:59:25+00:00", "2024-01-01T00:00:00Z", None, "garbage"):
        parse_datetime(protocol.hub_time(text))


def test_tokens_file(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("# team\nabcdefghijklmnopqrstuvwxyz alice\n")
    tokens.chmod(0o644)
    with pytest.raises(InvalidArgumentError, match="chmod 600"):
        Access(tokens)
    tokens.chmod(0o600)
    access = Access(tokens)
    access.check("org/x", "gated", "Bearer abcdefghijklmnopqrstuvwxyz")
    access.check("local/x", "local", "Bearer abcdefghijklmnopqrstuvwxyz")
    access.check("org/x", "public", None)
    for auth in (None, "Bearer wrong-token-of-some-length", "abcdefghijklmnopqrstuvwxyz"):
        with pytest.raises(HubError) as err:
            access.check("org/x", "gated", auth)
        assert (err.value.status, err.value.code) == (401, "GatedRepo")
        with pytest.raises(HubError) as err:
            access.check("org/x", "private", auth)
        assert err.value.code == "RepoNotFound"
        with pytest.raises(HubError):
            access.check("org/x", None, auth)  # access never recorded: restricted
        with pytest.raises(HubError):
            access.check("local/x", "local", auth)  # with a tokens file, local names need one too
    tokens.write_text("short\n")
    with pytest.raises(InvalidArgumentError, match="too short"):
        Access(tokens)
    open_access = Access(None)
    open_access.check("local/x", "local", None)
    with pytest.raises(HubError, match="no tokens file"):
        open_access.check("org/x", "gated", "Bearer abcdefghijklmnopqrstuvwxyz")


def test_a_taint_expires(tmp_path):
    import os
    import time

    from zoo.store.writer import Store
    from zoo.hubserver.catalog import Catalog
    from zoo.hubserver.pullthrough import TAINT_DAYS, PullThrough

    store = Store(tmp_path / "store")
    store.disk.prepare()  # as the daemon does when it starts
    pull = PullThrough(store, Catalog(store), lambda key, work: None)
    pull.taint("e" * 64)
    assert pull.tainted("e" * 64) and not pull.tainted("f" * 64)
    path = store.layout.tainted_path("e" * 64)
    old = time.time() - TAINT_DAYS * 86400 - 60
    os.utime(path, (old, old))
    assert not pull.tainted("e" * 64) and not path.exists()
