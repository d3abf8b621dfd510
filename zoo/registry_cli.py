"""The registry's commands: ``zoo tag``, ``zoo untag``, ``zoo label``, ``zoo history``, ``zoo lineage``."""

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


def _lineage_label(node: dict[str, Any]) -> str:
    if not node["stored"]:
        at = f"@{node['version']}" if node["version"] else ""
        why = ("a hub repository the store does not hold; no commit recorded" if not node["version"]
               else "not in the store: removed since")
        return f"{node['name']}{at}  ({why})"
    aliases = f"  [{', '.join(node['aliases'])}]" if node["aliases"] else ""
    return f"{node['name']}@{node['version']}  {node['id'][:12]}{aliases}"


def _shares_text(node: dict[str, Any]) -> list[str]:
    from .store.progress import human

    shared, base = node.get("shares"), node.get("base") or {}
    if not shared:
        return []
    of = f"{base.get('name')}@{base.get('version')}"
    if shared["note"]:
        return [f"shares with its base {of}: not known ({shared['note']})"]
    whole = f" ({shared['whole_files']} file{'s' if shared['whole_files'] != 1 else ''} the same)" \
        if shared["whole_files"] else ""
    other = shared["tensors"] - shared["unchanged"]
    renamed = f" ({other:,} of them identical to a base tensor of another name)" if other else ""
    return [f"shares {shared['tensors']:,} of {shared['of_tensors']:,} tensors{renamed}, {human(shared['bytes'])} of "
            f"{human(shared['of_bytes'])} with its base {of}{whole}"]


def draw_lineage(tree: dict[str, Any]) -> list[str]:
    """``zoo lineage``'s drawing: the bases above (farthest first), the name, what was made from it below."""
    lines: list[str] = []

    def draw(node: dict[str, Any], kids: list, first: str, rest: str, extra: str = "") -> None:
        lines.append(first + _lineage_label(node) + extra)
        lines.extend(rest + ("│   " if kids else "    ") + text for text in _shares_text(node))
        for i, (kid, grandkids, note) in enumerate(kids):
            last = i == len(kids) - 1
            draw(kid, grandkids, rest + ("└── " if last else "├── "), rest + ("    " if last else "│   "), note)

    def below(node: dict[str, Any]) -> list:
        here = node["name"] + (f"@{node['version']}" if node["version"] else "")
        return [(kid, below(kid), f"  (from {kid['from']})" if kid.get("from") != here else "")
                for kid in node.get("derived", [])]

    # a version made from an earlier version of the name hangs under it, where the chain above shows it
    chain = [*reversed(tree["bases"]), tree]
    kids: list[list] = [[] for _ in chain]
    where = {f"{node['name']}@{node['version']}": i for i, node in enumerate(chain) if node["stored"]}
    for kid in below(tree):
        at = where.get(kid[0].get("from"), len(chain) - 1)
        kids[at].append((kid[0], kid[1], "" if at < len(chain) - 1 else kid[2]))
    top: tuple = (tree, kids[-1], "  <- this")
    for i in range(len(chain) - 2, -1, -1):
        top = (chain[i], [top, *kids[i]], "")
    draw(top[0], top[1], "", "", top[2])
    return lines


def cmd_lineage(args: argparse.Namespace) -> int:
    from . import registry

    tree = registry.lineage(args.name, store=_store(args))
    if args.json:
        print(json.dumps(tree, indent=2))
        return 0
    print("\n".join(draw_lineage(tree)))
    if not tree["bases"] and not tree["derived"]:
        print(f"(no base recorded, and no version in the store was made from {tree['name']})")
    return 0


def registry_facts(path: Any) -> dict | None:
    """What the registry knows of the stored version whose snapshot ``path`` is (None for a folder of the user's):
    ``zoo info``'s registry part."""
    from .api import default_store
    from .store.lineage import about, source_of

    store = default_store()
    source = source_of(store, path)
    version = store.find(source["repo"], source["version"]) if source else None
    return about(store, version) if version else None


def facts_lines(facts: dict | None) -> list[str]:
    """``zoo info``'s lines for :func:`registry_facts` (none for a folder of the user's)."""
    if not facts:
        return []
    base = facts["base"]
    made = " ".join(x for x in (facts["user"] or "?", f"(uid {facts['uid']})" if facts["uid"] is not None else "",
                                f"on {facts['host']}" if facts["host"] else "") if x)
    return [
        f"name:                 {facts['name']}@{facts['version']} ({facts['id'][:12]})",
        f"description:          {facts['description'] or '(none)'}",
        f"labels:               {', '.join(f'{k}={v}' for k, v in sorted(facts['labels'].items())) or '(none)'}",
        f"model card:           {facts['card_title'] or '(no README.md title)'}",
        f"aliases:              {', '.join(facts['aliases']) or '(none)'}",
        "base:                 " + (f"{base.get('name')}@{base.get('version') or '?'}"
                                    + (f" ({str(base.get('id'))[:12]})" if base.get("id") else "")
                                    + " (zoo lineage draws the tree)" if isinstance(base, dict) else "(none recorded)"),
        f"made:                 {facts['created'].replace('T', ' ').replace('+00:00', 'Z')} by {made}, "
        f"from {facts['source']}",
    ]


def print_restored(store: Any) -> None:
    """``zoo du``'s line for what tensor-level dedupe against each version's base would save
    (:func:`zoo.store.lineage.restored`)."""
    import sys

    from .store.lineage import restored
    from .store.progress import human

    again = restored(store)
    files = f"{again.files:,} file{'' if again.files == 1 else 's'}"
    print(f"again    {human(again.bytes):>10}  stored again: {again.bytes:,} bytes in {again.tensors:,} tensors of "
          f"{files} of fine-tunes, byte-identical to tensors of their base version\n"
          f"{'':21}(what storing each tensor once would save; included in physical)")
    for note in again.notes:
        print(f"  not compared: {note}", file=sys.stderr)


def verify_records(store: Any, repo: str | None) -> int:
    """``zoo verify``'s check of the registry's files: history logs (damaged lines, something not a regular file)
    and aliases files (unreadable). Prints each problem; returns how many files have one."""
    from .store import history, marks

    found = 0
    logs = [store.layout.history_path(repo)] if repo else history.logs(store.layout)
    for path in logs:
        try:
            log = history.parse(history.open_regular(path))
        except FileNotFoundError:
            continue
        except OSError as exc:
            found += 1
            print(f"DAMAGED history {path}: {exc.strerror or exc}; zoo cannot append to it. Move it away "
                  "(a new log is started)")
            continue
        if log.damaged:
            found += 1
            print(f"DAMAGED history {path}: lines {', '.join(map(str, log.damaged[:20]))} are not zoo events "
                  f"(skipped by zoo history; {len(log.events)} events readable). A torn line from a crash is "
                  "harmless; otherwise restore the file from a backup")
    root = store.layout.marks_root
    files = [store.layout.marks_path(repo)] if repo else (sorted(root.glob("models--*.json")) if root.is_dir() else [])
    for path in files:
        try:
            marks.read_file(path)
        except FileNotFoundError:
            continue
        except Exception as exc:  # noqa: BLE001 - any reason it cannot be read is reported
            found += 1
            print(f"DAMAGED aliases {path}: {exc}")
    return found


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
    p = add("lineage", cmd_lineage, "the bases of NAME (or NAME@REV) above, the versions made from it below, "
            "and the tensors each shares with its base")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="the tree as JSON")
