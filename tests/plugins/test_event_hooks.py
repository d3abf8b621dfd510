"""The event hooks (zoo_version_created, zoo_alias_moved, zoo_labels_changed, zoo_version_removed) as a plugin
author meets them: installed plugin distributions (a ``zoo`` entry point) called by the process that made
the change (the CLI, ``zoo.save``), or plugin objects given to ``Registry``, with typed events that name who
did what; a hook that raises or hangs is named in the log and neither undoes nor delays the change, nor stops
the other hooks and the next events. Through a real daemon: tests/daemon/test_daemon_events.py."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import zoo
from zoo.plugins.registry import Registry
from zoo.store import Store
from zoo.store.events import AliasMoved, Dispatcher, LabelsChanged, VersionCreated, VersionRemoved

from event_plugins import check_common, plugins, recorded, saved_folder, wait_until, zoo_cli


@pytest.mark.slow
def test_zoo_version_created_alias_moved_labels_changed_version_removed_from_the_cli(tmp_path):
    """Without a daemon, the process that makes a change calls the installed plugins' hooks."""
    env = plugins(tmp_path / "site", "recorder")
    first, second = saved_folder(tmp_path / "a", 1), saved_folder(tmp_path / "b", 2)
    zoo_cli(env, "import", str(first), "--name", "hooked")
    zoo_cli(env, "import", str(second), "--name", "hooked", "--description", "the second")
    zoo_cli(env, "tag", "hooked", "prod")
    zoo_cli(env, "tag", "hooked@v1", "prod")
    zoo_cli(env, "label", "hooked@v1", "team=search", "stage=dev")
    zoo_cli(env, "label", "hooked@v1", "--rm", "stage")
    zoo_cli(env, "untag", "hooked", "prod")
    zoo_cli(env, "rm", "hooked@v2")
    saver = subprocess.run([sys.executable, "-c", "import zoo; zoo.save(zoo.load('hooked'), 'derived')"],
                           env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert saver.returncode == 0, saver.stderr

    rows = recorded(env)
    check_common(rows, uid=os.getuid())
    store = Store(Path(os.environ["ZOO_HOME"]))
    v1 = store.versions("local/hooked")[0]
    derived = store.versions("local/derived")[0]
    events = [r["event"] for r in rows]
    assert [(e["event"], e["version"]) for e in events] == [
        ("version_created", "v1"), ("version_created", "v2"), ("alias_moved", "v2"), ("alias_moved", "v1"),
        ("labels_changed", "v1"), ("labels_changed", "v1"), ("alias_moved", None), ("version_removed", "v2"),
        ("version_created", "v1"),
    ]
    assert events[0]["id"] == v1.id and events[0]["source"] == f"import:{first}"
    assert events[1]["description"] == "the second"
    assert (events[2]["alias"], events[2]["previous"]) == ("prod", None)  # set
    assert (events[3]["alias"], events[3]["previous"]) == ("prod", "v2")  # moved
    assert (events[6]["alias"], events[6]["previous"]) == ("prod", "v1")  # removed
    assert events[4]["labels"] == {"team": "search", "stage": "dev"} and events[4]["removed"] == []
    assert events[5]["labels"] == {} and events[5]["removed"] == ["stage"]
    assert events[7]["reason"] == "removed"
    assert events[8]["name"] == "derived" and events[8]["id"] == derived.id and events[8]["source"] == "zoo.save"
    assert events[8]["base"] == {"name": "hooked", "repo": "local/hooked", "version": "v1", "id": v1.id}
    assert len({r["pid"] for r in rows}) == 9  # each command's own process called the hooks


@pytest.mark.slow
def test_a_hook_that_hangs_in_a_cli_process_is_named_and_the_command_returns(tmp_path):
    env = plugins(tmp_path / "site", "stuck", "boom", "recorder")
    folder = saved_folder(tmp_path / "a", 1)
    started = time.monotonic()
    result = zoo_cli(env, "import", str(folder), "--name", "h", timeout=60)
    took = time.monotonic() - started
    assert took < 15, took  # the hook sleeps 60 s; the process waits at most 5 s at exit
    assert result.stdout.startswith("h v1 (new version")
    assert "hook zoo_version_created of plugin 'stuck' still runs on version_created of h@v1" in result.stderr
    assert "plugin 'boom' raised RuntimeError: boom on version_created of h@v1" in result.stderr
    assert [r["event"]["version"] for r in recorded(env)] == ["v1"]  # the recorder was not held up
    assert [v.name for v in Store(Path(os.environ["ZOO_HOME"])).versions("local/h")] == ["v1"]


def test_zoo_hooks_of_a_registry_get_typed_events_from_the_writer(tmp_path, caplog):
    """``Registry(plugins=[...])``'s hooks given to a Store: typed events in order, a raising plugin and a
    hanging one named in the log, every other hook called for every event meanwhile."""
    import types

    got: list = []
    release = threading.Event()

    def zoo_version_created(event):
        got.append(event)

    def zoo_alias_moved(event):
        got.append(event)

    def zoo_labels_changed(event):
        got.append(event)

    def zoo_version_removed(event):
        got.append(event)

    def hang(event):
        release.wait(30)

    def boom(event):
        raise ValueError("no")

    def plugin(**hooks):
        module = types.ModuleType("plugin")
        for name, fn in hooks.items():
            setattr(module, name, zoo.hookimpl(fn, specname=name))
        return module

    registry = Registry([("hang", plugin(zoo_version_created=hang)), ("boom", plugin(zoo_alias_moved=boom)),
                         ("rec", plugin(zoo_version_created=zoo_version_created, zoo_alias_moved=zoo_alias_moved,
                                        zoo_labels_changed=zoo_labels_changed,
                                        zoo_version_removed=zoo_version_removed))], entry_points=False)
    dispatcher = Dispatcher(registry.event_hooks, timeout=0.5)
    store = Store(tmp_path / "store", events=dispatcher)
    caplog.set_level(logging.ERROR, logger="zoo.events")
    try:
        one = store.import_dir(saved_folder(tmp_path / "a", 1), "reg")
        two = store.import_dir(saved_folder(tmp_path / "b", 2), "reg")
        store.tag("local/reg", "prod", "v1")
        store.label("local/reg", "v2", {"k": "v"}, [])
        store.remove("local/reg", "v2")
        wait_until(lambda: len(got) == 5, 10)
        assert [type(e) for e in got] == [VersionCreated, VersionCreated, AliasMoved, LabelsChanged, VersionRemoved]
        assert [(e.version, e.id) for e in got[:2]] == [("v1", one.id), ("v2", two.id)]
        assert (got[2].alias, got[2].version, got[2].previous) == ("prod", "v1", None)
        assert got[3].labels == {"k": "v"} and got[4].reason == "removed" and got[4].name == "reg"
        wait_until(lambda: "hung" in caplog.text, 5)
        assert "hook zoo_version_created of plugin 'hang' hung on version_created of reg@v1" in caplog.text
        assert "hook zoo_alias_moved of plugin 'boom' raised ValueError: no" in caplog.text
        assert dispatcher.failed == 2 and dispatcher.dropped == 0
    finally:
        release.set()
    assert dispatcher.drain(10)
