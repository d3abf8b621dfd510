"""The event hooks through a real daemon: the daemon, not its clients, calls the installed plugins' hooks, for
clients' changes, pulls, drop folders and quota evictions, with the client's identity (a second unix user's
uid and name, never the daemon's); a hook that raises or hangs is named in the daemon's log and delays no
client, no change and no other hook."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time
from pathlib import Path

import pytest

import zoo
from zoo.store import Store

from conftest import TINY_BERT
from event_plugins import check_common, plugins, recorded, saved_folder, wait_until, zoo_cli
from test_daemon import DaemonProcess
from test_multi_user import as_user, users  # noqa: F401  (users: the fixture)


@pytest.mark.slow
def test_hooks_run_in_the_daemon_for_clients_pulls_and_drop_folders(tmp_path, hub_env):
    """Through a daemon the daemon calls the hooks (the plugin is installed where it runs, not where the
    clients run): a client's import and zoo.save, a pull, a drop folder."""
    env = plugins(tmp_path / "site", "recorder")
    home, drop = Path(os.environ["ZOO_HOME"]), tmp_path / "drop"
    drop.mkdir()
    daemon = DaemonProcess(home, env={**env, **hub_env}, args=("--watch", str(drop), "--quiet-period", "0.5")).start()
    try:
        zoo_cli({}, "import", str(saved_folder(tmp_path / "a", 1)), "--name", "imported")
        zoo.save(zoo.build(dict(TINY_BERT)), "saved")  # this process, through the daemon
        zoo_cli(hub_env, "-q", "pull", "bert-base-cased")
        saved_folder(drop / "dropped", 3)
        (drop / "dropped" / ".zoo-ready").touch()
        wait_until(lambda: len(recorded(env)) == 4, 60)
    finally:
        assert daemon.stop() == 0, daemon.log.read_text()[-3000:]
    rows = recorded(env)
    check_common(rows, uid=os.getuid())
    assert {r["pid"] for r in rows} == {daemon.proc.pid}  # the daemon called them, not the clients
    created = {r["event"]["name"]: r["event"] for r in rows}
    assert sorted(created) == ["dropped", "google-bert/bert-base-cased", "imported", "saved"]
    assert created["imported"]["source"].startswith("import:") and created["saved"]["source"].startswith("zoo.save")
    assert created["google-bert/bert-base-cased"]["source"].startswith("hub:")
    assert created["dropped"]["source"].startswith("drop:")
    for name, event in created.items():
        repo = name if "/" in name else f"local/{name}"
        assert [(v.name, v.id) for v in Store(home).versions(repo)] == [(event["version"], event["id"])]


@pytest.mark.slow
def test_zoo_version_removed_for_a_version_the_quota_evicts(tmp_path):
    env = plugins(tmp_path / "site", "recorder")
    home = Path(os.environ["ZOO_HOME"])
    daemon = DaemonProcess(home, env=env, args=("--max-size", "300KB")).start()
    try:
        for seed in range(4):  # 4 x ~85 KB > 300 KB: one version that is not the newest must go
            zoo_cli({}, "import", str(saved_folder(tmp_path / f"s{seed}", seed)), "--name", "q")
        wait_until(lambda: any(r["event"]["event"] == "version_removed" for r in recorded(env)), 30)
    finally:
        assert daemon.stop() == 0, daemon.log.read_text()[-3000:]
    rows = recorded(env)
    check_common(rows, uid=os.getuid())
    removed = [r["event"] for r in rows if r["event"]["event"] == "version_removed"]
    assert len(removed) == 1 and removed[0]["reason"] == "evicted" and removed[0]["name"] == "q"
    created = {r["event"]["version"]: r["event"]["id"] for r in rows if r["event"]["event"] == "version_created"}
    assert removed[0]["id"] == created[removed[0]["version"]]
    kept = [v.name for v in Store(home).versions("local/q")]
    assert removed[0]["version"] not in kept and len(kept) == 3


@pytest.mark.slow
def test_a_hook_that_raises_or_hangs_is_named_and_delays_nothing_through_the_daemon(tmp_path):
    env = plugins(tmp_path / "site", "boom", "stuck", "recorder")
    home = Path(os.environ["ZOO_HOME"])
    daemon = DaemonProcess(home, env=env).start()
    try:
        folder = saved_folder(tmp_path / "a", 1)
        started = time.monotonic()
        zoo_cli({}, "import", str(folder), "--name", "h")
        zoo_cli({}, "tag", "h", "prod")
        took = time.monotonic() - started
        assert [v.name for v in Store(home).versions("local/h")] == ["v1"]  # the change stands
        wait_until(lambda: len(recorded(env)) == 2, 10)  # the next hook and the next event went on
        assert [r["event"]["event"] for r in recorded(env)] == ["version_created", "alias_moved"]
        assert Path(env["ZOO_TEST_STUCK"]).read_text() == "v1\n"  # and the stuck hook still sleeps
        assert took < 5, took  # the client never waited for the 60 s hook
        log = daemon.log
        wait_until(lambda: "hung" in log.read_text(), 20)
        text = log.read_text()
        assert "hook zoo_version_created of plugin 'stuck' hung on version_created of h@v1" in text
        assert "hook zoo_version_created of plugin 'boom' raised RuntimeError: boom on version_created of h@v1" in text
        assert "hook zoo_alias_moved of plugin 'boom' raised RuntimeError: boom on alias_moved of h@v1" in text
        status = subprocess.run([sys.executable, "-m", "zoo", "daemon", "status"], capture_output=True, text=True,
                                timeout=60)
        assert status.returncode == 0, status.stderr  # the daemon still serves
    finally:
        assert daemon.stop() == 0, daemon.log.read_text()[-3000:]
    assert "plugin 'stuck' still runs on version_created of h@v1" in daemon.log.read_text()  # at exit


@pytest.mark.slow
def test_events_through_the_daemon_name_the_client_not_the_daemon(users, tmp_path):  # noqa: F811
    """A root daemon; user a saves, tags and labels through it: every event's ``who`` is a, as the socket
    says, never root (the daemon's user)."""
    import grp
    import tempfile

    env = plugins(tmp_path / "site", "recorder")
    store = Path(tempfile.mkdtemp(prefix="events-", dir=users["base"]))
    os.chown(store, 0, grp.getgrnam(users["group"]).gr_gid)
    os.chmod(store, 0o2750)
    daemon = DaemonProcess(store, env=env, args=("--group", users["group"])).start()
    try:
        done = as_user(users, "a", store, f"""
import zoo
zoo.save(zoo.build({TINY_BERT!r}), "by-a")
zoo.tag("by-a", "prod")
zoo.label("by-a", {{"team": "search"}})
""")
        assert done.returncode == 0, done.stderr
        wait_until(lambda: len(recorded(env)) == 3, 30)
    finally:
        assert daemon.stop() == 0, daemon.log.read_text()[-3000:]
    rows = recorded(env)
    assert [r["event"]["event"] for r in rows] == ["version_created", "alias_moved", "labels_changed"]
    check_common(rows, uid=pwd.getpwnam(users["a"].name).pw_uid)  # a's uid and name, not root's
    assert {r["pid"] for r in rows} == {daemon.proc.pid}
