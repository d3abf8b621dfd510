"""The store against an in-process fetcher (the seam a transport is in httpx): the store's own rules,
checked without any server. The real hub protocol is tested against olah (tests/hubserver.py)."""

import hashlib
import json
from pathlib import Path

import pytest

import zoo
from zoo.store import Store
from zoo.store.hub import RemoteFile, RemoteRevision
from zoo.errors import IntegrityError, RemoteNotFoundError


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """One commit per repository, held in memory; ``damage`` makes a file's bytes arrive wrong."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.damage: set[str] = set()
        self.downloads: list[str] = []

    def endpoint(self) -> str:
        return "fake://hub"

    def add(self, repo: str, folder: Path) -> None:
        self.repos[repo] = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}

    def fetch_revision(self, repo: str, revision: str) -> RemoteRevision:
        if repo not in self.repos:
            raise RemoteNotFoundError(f"{repo}: no such repository on the fake hub")
        files = self.repos[repo]
        commit = hashlib.sha1(json.dumps(sorted((k, len(v)) for k, v in files.items())).encode()).hexdigest()
        listed = tuple(RemoteFile(name, len(data), hashlib.sha256(data).hexdigest()
                                  if name.endswith(".safetensors") else None, _git_sha1(data))
                       for name, data in sorted(files.items()))
        return RemoteRevision(repo, revision, commit, listed)

    def download(self, repo, commit, file, dest, on_bytes) -> None:
        self.downloads.append(file.path)
        data = self.repos[repo][file.path]
        if file.path in self.damage:
            data = data[:-1] + bytes([data[-1] ^ 1])
        offset = dest.stat().st_size if dest.exists() else 0
        with open(dest, "ab") as f:
            f.write(data[offset:])
        on_bytes(len(data) - offset)


@pytest.fixture
def fake(tmp_path, tiny_bert):
    hub = FakeHub()
    hub.add("acme/tiny", zoo.save(zoo.build(tiny_bert), tmp_path / "tiny"))
    return hub


def test_a_pull_through_an_injected_fetcher_is_a_complete_version(tmp_path, fake):
    store = Store(tmp_path / "store", fetcher=fake)
    version = store.pull("acme/tiny")
    assert version.source == "hub:fake://hub"
    assert {f.path for f in version.files} == set(fake.repos["acme/tiny"])
    for entry in version.files:
        assert (store.snapshot(version) / entry.path).read_bytes() == fake.repos["acme/tiny"][entry.path]
    fake.downloads.clear()
    assert store.ensure("acme/tiny") == version and fake.downloads == []  # warm: nothing asked


def test_bytes_that_fail_their_digest_twice_are_refused_and_nothing_is_visible(tmp_path, fake):
    fake.damage.add("model.safetensors")
    store = Store(tmp_path / "store", fetcher=fake)
    with pytest.raises(IntegrityError, match="model.safetensors.*twice.*nothing was stored"):
        store.pull("acme/tiny")
    assert fake.downloads.count("model.safetensors") == 2
    assert store.versions("acme/tiny") == []


def test_a_pulled_checkpoint_no_load_could_use_is_refused_with_the_reason(tmp_path, fake):
    """The check loads make runs on a pull too: a model.safetensors the hub serves whole (its digest
    matches) but that is not safetensors makes no version, and the error names the file."""
    fake.repos["acme/tiny"]["model.safetensors"] = b"not safetensors at all, but long enough" * 20
    store = Store(tmp_path / "store", fetcher=fake)
    with pytest.raises(zoo.CorruptCheckpointError, match="acme/tiny@.*not a checkpoint zoo can load.*model.safetensors"):
        store.pull("acme/tiny")
    assert store.versions("acme/tiny") == []


def test_a_pull_of_a_repository_without_weights_is_not_a_checkpoint_check(tmp_path, fake):
    fake.repos["acme/tokenizer"] = {"tokenizer.json": b"{}", "config.json": b'{"model_type": "bert"}'}
    version = Store(tmp_path / "store", fetcher=fake).pull("acme/tokenizer")
    assert {f.path for f in version.files} == {"tokenizer.json", "config.json"}
