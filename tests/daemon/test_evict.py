"""Quota, LRU eviction, pins and leases (zoo.daemon.evict) on a real store, with a real second process
holding a lease."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import textwrap
import time
from collections import namedtuple
from pathlib import Path

import pytest

import zoo

from conftest import ROOT, TINY_BERT
from zoo.store.maintenance import usage
from zoo.store.writer import Store
from zoo.store import disk, records
from zoo.daemon import evict
from zoo.daemon.evict import QuotaError
from zoo.errors import CacheError, CheckpointNotFoundError

T0 = 1_700_000_000.0  # recorded use times: far in the past, in a known order


@pytest.fixture
def store() -> Store:
    return Store(os.environ["ZOO_HOME"], quiet=True)


def quick_version(store: Store, name: str, tmp_path: Path, n: int = 2000):
    """A new version of ``name`` with distinct random weights, without torch (fast)."""
    import numpy as np
    from safetensors.numpy import save_file

    folder = tmp_path / f"src-{name}-{time.monotonic_ns()}"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_BERT))
    save_file({"w": np.random.rand(n).astype("float32")}, str(folder / "model.safetensors"))
    return store.import_dir(folder, name)


def bert_version(store: Store, name: str):
    """A new version of ``name``: a freshly built tiny BERT (random weights), saved with zoo.save."""
    import zoo

    return zoo.save(zoo.build(dict(TINY_BERT)), name, store=store)


def physical(store: Store) -> int:
    return usage(store).physical


def own_bytes(store: Store, version) -> int:
    """What removing ``version`` alone frees, as Store.remove computes it."""
    return store.remove(version.repo, version.name, dry_run=True).freed


class LeaseHolder:
    """A second process that loads nothing but holds the lease of a version until it is killed."""

    def __init__(self, store: Store, version) -> None:
        code = textwrap.dedent(f"""
            import sys, time
            from zoo.store.writer import Store
            from zoo.store import records
            store = Store({str(store.home)!r})
            version = store.find({version.repo!r}, {version.name!r})
            lease = records.hold_lease(store, version)
            print("held" if lease.held else "none", flush=True)
            time.sleep(120)
        """)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        line = self.proc.stdout.readline().strip() if ready else "timeout"
        if line != "held":
            self.stop()
            raise AssertionError(f"the lease holder said {line!r}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()

    def __enter__(self) -> "LeaseHolder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- pins ------------------------------------------------------------------------------------------


def test_pins_name_pins_newest_and_unpin(store, tmp_path):
    quick_version(store, "a", tmp_path)
    v2 = quick_version(store, "a", tmp_path)
    assert records.pins(store) == set()
    assert records.pin(store, "a") == v2  # NAME without @vN: the newest version, as it is now
    assert records.pins(store) == {("local/a", "v2")}
    assert records.pin(store, "local/a", "v1").name == "v1"
    records.pin(store, "a", "v1")  # twice: harmless
    record = json.loads((store.home / "pins" / "models--local--a" / "v1").read_text())
    assert record["repo"] == "local/a" and record["version"] == "v1" and record["id"]
    quick_version(store, "a", tmp_path)
    assert records.pins(store) == {("local/a", "v1"), ("local/a", "v2")}  # a pin does not follow new versions
    assert records.unpin(store, "a", "v2") == ["v2"]
    assert records.unpin(store, "a", "v2") == []
    assert records.unpin(store, "a") == ["v1"]
    assert records.pins(store) == set()
    assert not list(store.tmp.iterdir())  # written atomically, no temporary left
    with pytest.raises(CheckpointNotFoundError, match="v9"):
        records.pin(store, "a", "v9")
    with pytest.raises(CheckpointNotFoundError):
        records.pin(store, "nothing-here")


def test_stale_pin_of_a_removed_number_is_ignored(store, tmp_path):
    quick_version(store, "a", tmp_path)
    quick_version(store, "a", tmp_path)
    records.pin(store, "a", "v2")
    store.remove("local/a", "v2")
    quick_version(store, "a", tmp_path)  # v2 again, other content
    assert store.find("local/a", "v2") is not None
    assert records.pins(store) == set()


# -- last use --------------------------------------------------------------------------------------


def test_record_use_per_version(store, tmp_path):
    v1 = quick_version(store, "a", tmp_path)
    v2 = quick_version(store, "a", tmp_path)
    created = records.last_use(store, v1)
    assert abs(created - time.time()) < 120  # never loaded: its creation time
    records.record_use(store, "local/a", "v1", when=T0 + 50)
    records.record_use(store, "local/a", "v2", when=T0 + 10)
    assert records.last_use(store, v1) == T0 + 50 > records.last_use(store, v2) == T0 + 10
    before = time.time()
    records.record_use(store, "local/a", "v2")
    assert records.last_use(store, v2) >= before
    assert (store.home / "lru" / "models--local--a" / "v2").is_file()
    records.record_use(store, "local/a", "not-a-version")  # best-effort: never raises


# -- leases ----------------------------------------------------------------------------------------


def test_lease_in_this_process(store, tmp_path):
    v1 = quick_version(store, "a", tmp_path)
    assert not records.leased(store, v1)
    lease = records.hold_lease(store, v1)
    assert lease.held and lease.path == store.home / "leases" / "models--local--a" / "v1.lease"
    assert records.hold_lease(store, v1) is lease  # one descriptor however often it loads
    assert records.leased(store, v1)
    assert records.leased(store, v1)  # the check takes nothing away
    lease.release()
    assert not records.leased(store, v1)


def test_lease_file_mode_comes_from_the_store(store, tmp_path):
    v1 = quick_version(store, "a", tmp_path)
    os.chmod(store.home, 0o2770)
    store.disk._modes = None  # the mode is read once per store object: read it again
    old = os.umask(0o077)
    try:
        path = records.ensure_lease_file(store, v1)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o660
    assert records.ensure_lease_file(store, v1) == path  # idempotent


def test_reader_that_cannot_create_lease_files(store, tmp_path, monkeypatch):
    v1 = quick_version(store, "a", tmp_path)
    v2 = quick_version(store, "a", tmp_path)

    def denied(store, path):
        raise PermissionError(13, "Permission denied", str(path))

    records.ensure_lease_file(store, v1)  # made by the daemon
    monkeypatch.setattr(records, "_create", denied)
    lease = records.hold_lease(store, v1)  # the file exists: opened read-only, locked shared
    assert lease.held and records.leased(store, v1)
    none = records.hold_lease(store, v2)  # no file and none can be made: silently no lease
    assert not none.held and not none.path.exists()
    assert not records.leased(store, v2)
    lease.release()


def test_loader_does_not_lease_a_version_being_evicted(store, tmp_path, monkeypatch):
    v1 = quick_version(store, "a", tmp_path)
    monkeypatch.setattr(records, "LEASE_WAIT", 0.2)
    with records.exclusive_lease(store, v1):
        assert not records.hold_lease(store, v1).held
    lease = records.hold_lease(store, v1)
    assert lease.held
    with pytest.raises(records.Leased):
        with records.exclusive_lease(store, v1):
            pass
    lease.release()


def test_lease_of_another_process_ends_with_it(store, tmp_path):
    v1 = quick_version(store, "a", tmp_path)
    quick_version(store, "a", tmp_path)
    holder = LeaseHolder(store, v1)
    try:
        assert records.leased(store, v1)
        assert evict._evict_one(store, v1) is None  # re-checked at removal time
        assert store.find("local/a", "v1") is not None
    finally:
        holder.stop()  # kill: the kernel drops the lock
    assert not records.leased(store, v1)
    assert evict._evict_one(store, v1) > 0
    assert store.find("local/a", "v1") is None
    assert not records.lease_path(store, v1).exists()


# -- eviction --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_quota_evicts_only_idle_unpinned_versions_in_lru_order(store, tmp_path):
    a = [bert_version(store, "a") for _ in range(5)]  # a@v1..v5
    b = [bert_version(store, "b") for _ in range(2)]  # b@v1..v2
    assert [v.name for v in a] == ["v1", "v2", "v3", "v4", "v5"]
    records.pin(store, "a", "v2")
    # Uses: the newest, pinned and leased versions are the least recent of all, and still stay.
    uses = {a[0]: 30, a[1]: 1, a[2]: 2, a[3]: 10, a[4]: 0, b[0]: 20, b[1]: 3}
    for version, t in uses.items():
        records.record_use(store, version.repo, version.name, when=T0 + t)
    sizes = {v: own_bytes(store, v) for v in a + b}
    assert all(50_000 < s < 2_000_000 for s in sizes.values()), sizes  # distinct content, a few hundred KB
    total = physical(store)
    incoming = 50_000
    # Room for incoming once a@v4 and b@v1 (the two least recently used idle versions) are gone.
    max_size = total + incoming - sizes[a[3]] - sizes[b[0]] + 1_000

    with LeaseHolder(store, a[2]):  # a@v3: loaded by a live process
        plan = evict.plan_eviction(store, max_size=max_size, incoming=incoming)
        assert plan.ok and plan.needed == total + incoming - max_size
        assert [(v.repo, v.name) for v in plan.evict] == [("local/a", "v4"), ("local/b", "v1")]
        assert plan.freed == sizes[a[3]] + sizes[b[0]]
        reasons = {(v.repo, v.name): why for v, why in plan.blocked}
        assert reasons == {("local/a", "v2"): "pinned", ("local/a", "v3"): "leased",
                           ("local/a", "v5"): "newest", ("local/b", "v2"): "newest"}

        done = evict.make_room(store, max_size=max_size, incoming=incoming, what="pull of c")
        assert [(v.repo, v.name) for v in done.evict] == [("local/a", "v4"), ("local/b", "v1")]
        assert done.freed == plan.freed
        assert physical(store) + incoming <= max_size
        assert [v.name for v in store.versions("local/a")] == ["v1", "v2", "v3", "v5"]
        assert [v.name for v in store.versions("local/b")] == ["v2"]
        assert store.verify() == []  # what stays is intact

        # Next: only a@v1 may still go. Asking for more fails before removing anything, and says why.
        with pytest.raises(QuotaError) as info:
            evict.make_room(store, max_size=max_size, incoming=incoming + 3 * sizes[a[0]], what="pull of big")
        message = str(info.value)
        assert "a@v2" in message and "pinned" in message
        assert "a@v3" in message and "leased" in message
        assert "newest version of each of 2 names" in message
        assert "zoo daemon --max-size" in message and "pull of big" in message
        assert "KB" in message or "MB" in message  # human units
        assert info.value.pinned == ["a@v2"] and info.value.leased == ["a@v3"]
        assert info.value.needed > 0
        assert isinstance(info.value, CacheError) and isinstance(info.value, OSError)
        assert [v.name for v in store.versions("local/a")] == ["v1", "v2", "v3", "v5"]

    # The holder is gone: a@v3 is idle now and, least recently used, goes first.
    plan = evict.plan_eviction(store, max_size=physical(store) - 1, incoming=0)
    assert [(v.repo, v.name) for v in plan.evict] == [("local/a", "v3")]
    evict.make_room(store, max_size=physical(store) - 1, incoming=0)
    assert [v.name for v in store.versions("local/a")] == ["v1", "v2", "v5"]


def test_newest_version_is_never_evicted(store, tmp_path):
    only = quick_version(store, "solo", tmp_path)
    quick_version(store, "a", tmp_path)
    quick_version(store, "a", tmp_path)
    records.record_use(store, only.repo, only.name, when=T0)  # the least recently used of all
    plan = evict.plan_eviction(store, max_size=1, incoming=0)
    assert not plan.ok
    assert [(v.repo, v.name) for v in plan.evict] == [("local/a", "v1")]  # all it could evict
    with pytest.raises(QuotaError, match="newest version of each of 2 names"):
        evict.make_room(store, max_size=1, incoming=0)
    assert store.find("local/solo") == only and len(store.versions("local/a")) == 2  # nothing removed


def test_an_aliased_version_is_never_evicted_and_an_eviction_is_recorded(store, tmp_path):
    a1, a2, a3 = (quick_version(store, "a", tmp_path) for _ in range(3))
    store.tag("a", "prod", "v1")
    records.record_use(store, a1.repo, a1.name, when=T0)  # the least recently used of all
    records.record_use(store, a2.repo, a2.name, when=T0 + 5)
    plan = evict.plan_eviction(store, max_size=1, incoming=0)
    assert ("local/a", "v1") in {(v.repo, v.name) for v, why in plan.blocked if why == "aliased"}
    with pytest.raises(QuotaError, match=r"aliased: a@v1 \(zoo untag NAME ALIAS\)"):
        evict.make_room(store, max_size=1, incoming=0)
    assert [v.name for v in store.versions("local/a")] == ["v1", "v2", "v3"]  # refused: nothing removed
    evict.make_room(store, max_size=physical(store) - 1, incoming=0)
    assert [v.name for v in store.versions("local/a")] == ["v1", "v3"]  # v2 went; v1 (prod) and v3 (newest) stay
    removed = [e for e in store.history("local/a").events if e.kind == "version_removed"]
    assert [(e.version, e.reason) for e in removed] == [("v2", "evicted")]


def test_no_eviction_under_the_quota(store, tmp_path):
    quick_version(store, "a", tmp_path)
    quick_version(store, "a", tmp_path)
    plan = evict.plan_eviction(store, max_size="500GB", incoming=10**6)
    assert plan.ok and plan.needed == 0 and plan.evict == [] and plan.freed == 0
    done = evict.make_room(store, max_size="1MB", incoming=1000)
    assert done.evict == []
    assert len(store.versions("local/a")) == 2


def test_shared_content_is_counted_once(store, tmp_path):
    # x@v1 and y@v1 hold the same weights: removing either alone frees nothing, both free them.
    src = tmp_path / "shared"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(TINY_BERT))
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"w": np.random.rand(20_000).astype("float32")}, str(src / "model.safetensors"))
    x1 = store.import_dir(src, "x")
    y1 = store.import_dir(src, "y")
    quick_version(store, "x", tmp_path)
    quick_version(store, "y", tmp_path)
    assert own_bytes(store, x1) == own_bytes(store, y1) == 0
    weights = (src / "model.safetensors").stat().st_size
    records.record_use(store, x1.repo, x1.name, when=T0)
    records.record_use(store, y1.repo, y1.name, when=T0 + 1)
    plan = evict.plan_eviction(store, max_size=physical(store) - weights // 2)
    assert plan.ok and plan.freed == weights
    assert [(v.repo, v.name) for v in plan.evict] == [("local/x", "v1"), ("local/y", "v1")]
    before = physical(store)
    done = evict.make_room(store, max_size=before - weights // 2, incoming=0)
    assert done.freed == weights and physical(store) == before - weights


def test_quota_larger_request_than_the_quota(store, tmp_path):
    quick_version(store, "a", tmp_path)
    with pytest.raises(QuotaError, match="alone is larger than the store's quota of 1.0 MB"):
        evict.make_room(store, max_size="1MB", incoming=5 * 10**6, what="pull of huge")


def test_free_space_check(store, tmp_path, monkeypatch):
    quick_version(store, "a", tmp_path)
    disk.check_free_space(store.home, 1000)  # plenty
    Disk = namedtuple("Disk", "total used free")
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda path: Disk(10**12, 10**12 - 5 * 10**9, 5 * 10**9))
    disk.check_free_space(store.home, 4 * 10**9)
    with pytest.raises(zoo.StoreFullError) as info:
        disk.check_free_space(store.home, 6 * 10**9, what="pull of org/big")
    message = str(info.value)
    assert "pull of org/big (6.0 GB)" in message
    assert "5.0 GB free of 1.0 TB" in message and "6.1 GB is needed" in message
    assert str(store.home) in message and "nothing was downloaded" in message
    with pytest.raises(zoo.StoreFullError, match="not enough free disk space"):
        evict.make_room(store, max_size=None, incoming=6 * 10**9)


def test_max_size_strings():
    assert evict.parse_max_size("500GB") == 500 * 10**9
    assert evict.parse_max_size("1.5TiB") == int(1.5 * 2**40)
    assert evict.parse_max_size(1234) == 1234
    with pytest.raises(ValueError):
        evict.parse_max_size("lots")
    with pytest.raises(ValueError):
        evict.parse_max_size(-1)
