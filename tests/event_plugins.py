"""Test plugins for the event hooks, as installed distributions (a ``zoo`` entry point), and what the tests
read back: ``recorder`` writes every event it gets, and what it saw of the store then, to $ZOO_TEST_EVENTS;
``boom``'s hooks raise; ``stuck``'s zoo_version_created sleeps 60 s (writing the version to $ZOO_TEST_STUCK)."""

from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import zoo

from conftest import TINY_BERT, make_plugin_dist

# A plugin that writes each event it gets, and what it saw of the store at that moment, to $ZOO_TEST_EVENTS.
RECORDER = """
    import json, os, threading
    import zoo
    from zoo.store import Store

    def _record(hook, event, durable):
        store = Store(os.environ["ZOO_HOME"])
        history = [e.as_json() for e in store.history(event.repo).events]
        row = {"hook": hook, "type": type(event).__name__, "event": event.as_json(), "durable": durable,
               "in_history": event.as_json() in history, "thread": threading.current_thread().name,
               "pid": os.getpid()}
        with open(os.environ["ZOO_TEST_EVENTS"], "a") as out:
            out.write(json.dumps(row) + "\\n")

    def _versions(repo):
        return {v.name: v.id for v in Store(os.environ["ZOO_HOME"]).versions(repo)}

    @zoo.hookimpl
    def zoo_version_created(event):
        _record("zoo_version_created", event, _versions(event.repo).get(event.version) == event.id)

    @zoo.hookimpl
    def zoo_alias_moved(event):
        alias = Store(os.environ["ZOO_HOME"]).marks(event.repo).aliases.get(event.alias)
        now = alias.version if alias is not None else None
        _record("zoo_alias_moved", event, now == event.version)

    @zoo.hookimpl
    def zoo_labels_changed(event):
        labels = Store(os.environ["ZOO_HOME"]).marks(event.repo).labels.get(event.version, {})
        _record("zoo_labels_changed", event, all(labels.get(k) == v for k, v in event.labels.items())
                and not any(k in labels for k in event.removed))

    @zoo.hookimpl
    def zoo_version_removed(event):
        _record("zoo_version_removed", event, event.version not in _versions(event.repo))
"""

# A plugin whose hooks all raise, and one whose zoo_version_created hangs (it says when it started).
BOOM = """
    import zoo

    @zoo.hookimpl
    def zoo_version_created(event):
        raise RuntimeError(f"boom on {event.kind} of {event.name}@{event.version}")

    @zoo.hookimpl
    def zoo_alias_moved(event):
        raise RuntimeError(f"boom on {event.kind} of {event.name}@{event.version}")
"""
STUCK = """
    import os, time
    import zoo

    @zoo.hookimpl
    def zoo_version_created(event):
        with open(os.environ["ZOO_TEST_STUCK"], "a") as out:
            out.write(event.version + "\\n")
        time.sleep(60)
"""


def plugins(root: Path, *names: str) -> dict[str, str]:
    """The environment of a process that has the named test plugins installed (real dists on PYTHONPATH)."""
    code = {"recorder": RECORDER, "boom": BOOM, "stuck": STUCK}
    for name in names:
        make_plugin_dist(root, name, code[name])
    return {"PYTHONPATH": str(root), "ZOO_TEST_EVENTS": str(root / "events.jsonl"),
            "ZOO_TEST_STUCK": str(root / "stuck.txt")}


def recorded(env: dict[str, str]) -> list[dict]:
    path = Path(env["ZOO_TEST_EVENTS"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def zoo_cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "zoo", *args], env={**os.environ, **env}, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, f"zoo {' '.join(args)}: rc {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def saved_folder(path: Path, seed: int) -> Path:
    import torch

    torch.manual_seed(seed)
    return zoo.save(zoo.build(dict(TINY_BERT)), path)


def wait_until(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not condition():
        time.sleep(0.02)


def check_common(rows: list[dict], *, uid: int, pid_other_than: int | None = None) -> None:
    """Every event: typed, named, stamped, by ``uid``; seen by its hook after the change was on disk and in
    the history; on a hook thread of zoo's."""
    start = datetime.now(timezone.utc) - timedelta(minutes=10)
    for row in rows:
        event = row["event"]
        assert row["type"] == {"version_created": "VersionCreated", "alias_moved": "AliasMoved",
                               "labels_changed": "LabelsChanged", "version_removed": "VersionRemoved"}[event["event"]]
        assert row["hook"] == f"zoo_{event['event']}"
        assert row["durable"] and row["in_history"], row  # the change was on disk before the hook was called
        assert row["thread"].startswith("zoo-hook-"), row
        assert event["who"] == {"uid": uid, "user": pwd.getpwuid(uid).pw_name, "host": socket.gethostname()}
        assert start <= datetime.fromisoformat(event["when"]) <= datetime.now(timezone.utc)
        assert event["name"] == event["repo"].removeprefix("local/")
    whens = [datetime.fromisoformat(r["event"]["when"]) for r in rows]
    assert whens == sorted(whens)  # in the order they happened
