"""The registry's commands: ``zoo tag``, ``zoo untag``, ``zoo label``, ``zoo history``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .errors import InvalidArgumentError


def _store(args: argparse.Namespace) -> Any:
    from .daemon.client import open_store

    return open_store(quiet=True if getattr(args, "quiet", False) else None)


def cmd_tag(args: argparse.Namespace) -> int:
    from . import registry
    from .names import display_name

    store = _store(args)
    repo, revision = registry.target(args.name, store)
    before = store.marks(repo).aliases.get(args.alias)
    alias = store.tag(repo, args.alias, revision)
    name = display_name(repo)
    if before is None:
        print(f"{name}@{args.alias} -> {alias.version} ({alias.id[:12]})")
    elif before.version == alias.version and before.id == alias.id:
        print(f"{name}@{args.alias} already -> {alias.version} ({alias.id[:12]}); nothing changed")
    else:
        print(f"{name}@{args.alias} moved {before.version} -> {alias.version} ({alias.id[:12]})")
    return 0


def cmd_untag(args: argparse.Namespace) -> int:
    from . import registry
    from .names import display_name

    store = _store(args)
    repo, _ = registry.target(args.name, store)
    old = store.untag(repo, args.alias)
    print(f"{display_name(repo)}@{args.alias} removed (it pointed at {old.version})")
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from . import registry
    from .names import display_name

    labels = {}
    for pair in args.pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidArgumentError(f"{pair!r}: write labels as key=value (zoo label NAME task=ner), "
                                       "and --rm KEY to remove one")
        labels[key] = value
    store = _store(args)
    repo, revision = registry.target(args.name, store)
    version = store.label(repo, revision, labels, args.rm or [])
    current = store.marks(repo).labels.get(version.name, {})
    shown = ", ".join(f"{k}={v}" for k, v in sorted(current.items())) or "none"
    print(f"{display_name(repo)}@{version.name} labels: {shown}")
    return 0


def describe_event(event: Any) -> str:
    """One line of ``zoo history``: what happened (without who and when)."""
    kind = event.kind
    if kind == "version_created":
        made = f"created {event.version} ({(event.id or '')[:12]}) from {event.source}"
        if event.base:
            made += f", based on {event.base.get('name')}@{event.base.get('version') or '?'}"
        return made
    if kind == "alias_moved":
        if event.version is None:
            return f"alias {event.alias} removed (was {event.previous})"
        if event.previous is None:
            return f"alias {event.alias} set to {event.version}"
        return f"alias {event.alias} moved {event.previous} -> {event.version}"
    if kind == "labels_changed":
        parts = [f"{k}={v}" for k, v in sorted(event.labels.items())] + [f"-{k}" for k in event.removed]
        return f"labels of {event.version}: {' '.join(parts)}"
    if kind == "version_removed":
        return f"{event.version} ({(event.id or '')[:12]}) {event.reason}"
    return kind


def cmd_history(args: argparse.Namespace) -> int:
    import sys

    from . import registry
    from .names import display_name

    store = _store(args)
    repo, _ = registry.target(args.name, store)
    history = store.history(repo)
    if args.json:
        print(json.dumps([e.as_json() for e in history.events], indent=2))
    else:
        if not history.events:
            print(f"no history of {display_name(repo)} in {store.home}")
        for event in history.events:
            print(f"{event.when.replace('T', ' ').replace('+00:00', 'Z')}  {str(event.who):<24}  {describe_event(event)}")
    if history.damaged:
        print(f"zoo: warning: {len(history.damaged)} damaged lines of {store.layout.history_path(repo)} were "
              f"skipped (lines {', '.join(map(str, history.damaged[:10]))}); zoo verify reports them",
              file=sys.stderr)
    return 0


def add_commands(add: Any) -> None:
    """The registry's subcommands, added with the CLI's ``add(name, func, help)``."""
    p = add("tag", cmd_tag, "point ALIAS at NAME's newest version, or NAME@REV (moves it if it exists)")
    p.add_argument("name", help="NAME or NAME@REV (v3, a commit id, another alias)")
    p.add_argument("alias", help="a word such as prod or champion (not v3, not hex, not an upstream's ref)")
    p = add("untag", cmd_untag, "remove ALIAS of NAME")
    p.add_argument("name")
    p.add_argument("alias")
    p = add("label", cmd_label, "set labels (key=value) on NAME's newest version or NAME@REV; --rm KEY removes one")
    p.add_argument("name")
    p.add_argument("pairs", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--rm", action="append", metavar="KEY", help="remove the label KEY (repeatable)")
    p = add("history", cmd_history, "what happened to NAME, oldest first: versions, aliases, labels, removals")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="the events as JSON")
