"""The ``zoo`` command line. Subcommands import what they need; ``zoo --help`` imports nothing heavy."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Sequence

from . import central_cli
from .store.progress import human as _human
from .errors import InvalidArgumentError, ZooError


def cmd_plugins(args: argparse.Namespace) -> int:
    from .api import default_registry

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # failures are listed below instead
        registry = default_registry()
        infos = registry.plugins()
        conflicts = registry.conflicts()
    if args.json:
        print(json.dumps([info.__dict__ for info in infos], indent=2))
        return 0
    if not infos:
        print("no zoo plugins installed")
    for info in infos:
        version = f" {info.version}" if info.version else ""
        dist = f" ({info.distribution}{version})" if info.distribution else ""
        print(f"{info.name}{dist}: {info.status}")
        if info.architectures:
            print(f"  architectures: {', '.join(info.architectures)}")
        if info.fallback:
            print(f"  fallback for:  {info.fallback} (types no plugin registers)")
            if info.served:
                print(f"  served so far: {', '.join(info.served)}")
        if info.checkpoints:
            print(f"  checkpoints:   {', '.join(info.checkpoints)}")
        if info.error:
            print(f"  error: {info.error}")
    for (kind, key), owners in conflicts.items():
        print(f"conflict: {kind} {key!r} is registered by {' and '.join(owners)}")
    return 1 if any(i.status == "failed" for i in infos) or conflicts else 0


def cmd_info(args: argparse.Namespace) -> int:
    """From config.json and the weights' headers only (no torch, no tensor data); ``--load`` also loads."""
    from .api import default_registry, locate
    from .model.describe import describe
    from .registry_cli import facts_lines, registry_facts

    registry = default_registry()
    info = describe(locate(args.path, registry=registry), registry=registry)
    if args.json and not args.load:
        print(json.dumps({**info.as_json(), **(registry_facts(info.path) or {})}, indent=2))
        return 0
    print(f"path:                 {info.path}")
    for line in facts_lines(registry_facts(info.path)):
        print(line)
    print(f"model_type:           {info.model_type}")
    print(f"plugin:               {info.plugin}")
    print(f"head:                 {info.head}")
    print(f"transformers_version: {info.transformers_version}")
    print(f"  advice:             {info.advice.message}")
    print(f"weights:              {info.format}" + (f" ({', '.join(info.dtypes)})" if info.dtypes else ""))
    if info.tensors is None:
        print("tensors:              (legacy .bin: not counted without loading; zoo info --load counts them)")
    else:
        print(f"tensors:              {info.tensors:,}")
        print(f"parameters:           {info.parameters:,}")
        for dtype, nbytes in info.dtypes.items():
            print(f"  {dtype:<8} {_human(nbytes):>12}")
    print("files:")
    for rel, size in info.files:
        print(f"  {size:>14,}  {rel}")
    return _print_load(info.path, info.head) if args.load else 0


def _print_load(path: Path, head: str) -> int:
    """Load the checkpoint as ``zoo.load`` would (mapped: cheap) and say what the load does to it."""
    from .api import load
    from .model.conversion import summary

    label = "load:"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the report below says it all
            model, report = load(path, output_loading_info=True)
    except ZooError as exc:
        print(f"{label:<22}fails: {exc}")
        return 1
    if report.loader != "zoo":
        print(f"{label:<22}{head}, by transformers' from_pretrained, not zoo's fast path: {report.note}")
    else:
        print(f"{label:<22}{head}, " + ("as saved: no renames or conversions" if not report.conversions else
                                         "with the conversions below"))
    from .model.describe import loaded_figures

    figures = loaded_figures(model)
    print(f"  {figures['tensors']:,} tensors, {figures['parameters']:,} parameters as loaded")
    if report.generation_config:
        print(f"  generation config from {report.generation_config}")
    for line in summary(report.conversions):
        print(f"  {line}")
    for what, keys in (("dropped (parts this head does not have)", report.unused),
                       ("initialised anew (not in the checkpoint)", report.initialised),
                       ("unexpected (fit no parameter)", report.unexpected)):
        if keys:
            print(f"  {len(keys)} {what}: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}")
    return 0


def _store(args: argparse.Namespace):
    from .daemon.client import open_store

    return open_store(quiet=True if getattr(args, "quiet", False) else None)


def cmd_daemon(args: argparse.Namespace) -> int:
    """``zoo daemon``: serve the store in the foreground (for systemd); ``zoo daemon status``: ask it."""
    import logging

    from .store.layout import default_home
    from .daemon.server import Daemon, socket_path

    if args.config:
        _daemon_config(args)
    home = Path(args.store).expanduser() if args.store else default_home()
    sock = Path(args.socket).expanduser() if args.socket else socket_path(home)
    if args.action == "status":
        from .daemon.client import DaemonStore

        status = DaemonStore(home, sock=sock).status()
        if args.json:
            print(json.dumps(status, indent=2))
            return 0
        print(f"zoo daemon pid {status['pid']}, up {status['uptime']:.0f} s, serving {status['store']} on "
              f"{status['socket']}, {status['clients']} clients connected")
        for job in status["jobs"]:
            print(f"  {job['op']} {job['what']}: {job['desc']} {_human(job['done'])} of {_human(job['total'])}, "
                  f"{job['waiting']} waiting")
        for key, value in status.items():
            if key not in {"pid", "uptime", "store", "socket", "clients", "jobs"}:
                print(f"  {key}: {json.dumps(value)}")
        return 0
    from .daemon.server import require_extras

    require_extras(watch=bool(args.watch), http=bool(args.http), objectstore=args.object_store)  # before anything
    logging.basicConfig(level=logging.INFO, format="%(asctime)s zoo daemon: %(message)s", stream=sys.stderr)
    from .daemon.evict import parse_max_size
    from .daemon.scrub import scrub_rate

    max_size = parse_max_size(args.max_size) if args.max_size else None
    scrub = scrub_rate(args.scrub_rate)  # a bad value is refused before anything starts
    webhook = None
    if args.webhook or args.webhook_secret:  # each event posted, signed (a bad URL or secret file: refused here)
        from .daemon.webhook import Webhook

        webhook = Webhook.load(args.webhook, args.webhook_secret, queue_size=args.webhook_queue)
    http = None
    if args.http:
        from .hubserver.server import HttpSettings, parse_address

        host, port = parse_address(args.http)
        http = HttpSettings(host, port, page_size=args.tree_page_size or 1000,
                            send_timeout=args.send_timeout or 60.0)
        os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")  # a cache asks its upstream for files, nothing else
        if args.upstream:  # several: asked in turn (zoo.store.upstreams); HF_ENDPOINT is the first
            from .store import upstreams

            os.environ["HF_ENDPOINT"] = upstreams.configure(args.upstream)[0]
        if args.offline:
            os.environ["ZOO_OFFLINE"] = "1"
        if host not in ("127.0.0.1", "::1", "localhost") and not args.tokens:
            logging.getLogger("zoo.daemon").warning(
                "serving on %s without --tokens: everyone who can reach it reads the local/ names; "
                "private and gated hub content is served to nobody", host)
    daemon = Daemon(home, sock, group=args.group, max_size=max_size,
                    watch=[Path(w).expanduser() for w in args.watch], quiet_period=args.quiet_period,
                    poll=args.poll, http=http, tokens=Path(args.tokens).expanduser() if args.tokens else None,
                    revalidate=args.revalidate if args.revalidate is not None else 60.0,
                    orphan_grace=args.orphan_grace if args.orphan_grace is not None else 600.0, scrub=scrub,
                    admins=args.admins, webhook=webhook, objectstore=args.object_store)
    if daemon.http is not None:  # the web page on the same address (zoo.web)
        from .web import daemon_status, make_site

        daemon.http.pages = make_site(home, daemon.http.access, daemon_status(daemon))
    return daemon.serve()


DAEMON_SETTINGS = {"store": str, "socket": str, "group": str, "max_size": str, "watch": list,
                   "quiet_period": float, "poll": float, "http": str, "upstream": str, "offline": bool,
                   "tokens": str, "revalidate": float, "tree_page_size": int, "send_timeout": float,
                   "orphan_grace": float, "scrub_rate": float, "admins": str, "webhook": str,
                   "webhook_secret": str, "webhook_queue": int, "object_store": str}


def _daemon_config(args: argparse.Namespace) -> None:
    """Settings from a TOML file (``store = "/srv/zoo"``, ``watch = ["/srv/drop"]``, ``max_size = "500GB"``...);
    a flag given on the command line wins."""
    import tomllib

    path = Path(args.config).expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidArgumentError(f"cannot read the daemon config {path}: {exc}") from None
    data = data.get("daemon", data)
    for key, value in data.items():
        key = key.replace("-", "_")
        kind = DAEMON_SETTINGS.get(key)
        if kind is None:
            raise InvalidArgumentError(f"{path}: unknown setting {key!r}; known: {', '.join(DAEMON_SETTINGS)}")
        if kind is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, kind) or (kind is list and not all(isinstance(v, str) for v in value)):
            raise InvalidArgumentError(f"{path}: {key} must be {'a list of paths' if kind is list else kind.__name__}")
        default = [] if kind is list else 10.0 if key == "quiet_period" else False if kind is bool else None
        if getattr(args, key) == default:  # not given on the command line
            setattr(args, key, value)


def cmd_pin(args: argparse.Namespace) -> int:
    store = _store(args)
    target = _target(args, store)
    if args.command == "pin":
        version = store.pin(target.repo, target.revision)
        print(f"pinned {target.label} {version.name}: quota eviction never removes it (zoo unpin to release)")
    else:
        removed = store.unpin(target.repo, target.revision)
        print(f"unpinned {target.label}: {', '.join(removed) or 'nothing was pinned'}")
    return 0


def _target(args: argparse.Namespace, store):
    from . import resolve
    from .api import default_registry

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        target = resolve.parse(args.name, registry=default_registry(), store=store)
    if target.kind == "dir":
        raise resolve.UnknownNameError(f"{args.name!r} is a directory; zoo import DIR --name NAME stores it")
    return target


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def cmd_pull(args: argparse.Namespace) -> int:
    store = _store(args)
    target = _target(args, store)
    if target.kind != "hub":
        raise ZooError(f"{args.name!r} is a local name; only hub repositories are pulled")
    if target.own_version:  # @zoo:vN: zoo's own version, made present and intact, never asked of the
        version = store.ensure(target.repo, target.revision)  # upstream (which may have a tag vN)
    else:
        version = store.pull(target.repo, target.revision or target.default_revision, all_files=args.all)
    print(f"{target.repo} {version.name} ({version.id[:12]}): {len(version.files)} files, "
          f"{_human(version.total_size)} in {store.snapshot(version)}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .names import local_repo

    store = _store(args)
    before = {v.id for v in store.versions(local_repo(args.name))}
    labels = {}
    for pair in args.label or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidArgumentError(f"--label {pair!r}: write key=value")
        labels[key] = value
    version = store.import_dir(args.directory, args.name, link=args.link, description=args.description,
                               labels=labels or None)
    state = "unchanged, already" if version.id in before else "new version"
    print(f"{args.name} {version.name} ({state}; content id {version.id[:12]}): {len(version.files)} files, "
          f"{_human(version.total_size)}")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    """One row per name: its newest version (with filters: the newest that matches them all, and how many
    match), as ``zoo.search`` returns them (``--json``: exactly those rows)."""
    from .registry import search

    store = _store(args)
    filters = {"model_type": args.model_type, "labels": args.label, "alias": args.alias, "base": args.base,
               "since": args.since, "user": args.user}
    rows = search(**filters, store=store)
    if args.json:
        print(json.dumps([row.as_json() for row in rows], indent=2))
        return 0
    flags = {"model_type": "--model-type", "labels": "--label"}
    asked = " ".join(f"{flags.get(k, '--' + k)} {v}" for k, values in filters.items() if values
                     for v in (values if isinstance(values, list) else [values]))
    if not rows:
        print(f"nothing in the cache at {store.home} matches {asked}" if asked else f"the cache at {store.home} is empty")
        return 0
    width = max(40, *(len(row.name) for row in rows))
    by = max(2, *(len(row.user or "-") for row in rows))
    print(f"{'NAME':{width}} {'MATCHING' if asked else 'VERSIONS':>8} {'NEWEST':>8} {'SIZE':>10}  {'LAST USED':16}  "
          f"{'BY':{by}}  ALIASES")
    for row in rows:
        aliases = ",".join(f"{alias}={version}" for alias, version in row.aliases.items()) or "-"
        print(f"{row.name:{width}} {row.versions:>8} {row.version:>8} {_human(row.size):>10}  "
              f"{_when(row.last_used):16}  {row.user or '-':{by}}  {aliases}")
    return central_cli.newest(store, rows) or 0


def cmd_versions(args: argparse.Namespace) -> int:
    store = _store(args)
    target = _target(args, store)
    versions = store.versions(target.repo)
    if not versions:
        print(f"no versions of {target.label} in {store.home}")
        return 1
    marks = store.marks(target.repo)
    header = ("VERSION", "ID", "CREATED", "BY", "SIZE", "MODEL_TYPE", "TRANSFORMERS", "ALIASES", "SOURCE")
    rows = [header] + [
        (v.name, v.id[:12], v.created, v.user or "-", _human(v.total_size), v.model_type or "-",
         _cut(v.transformers_version or "-", 16), ",".join(marks.aliases_of(v.name)) or "-",
         v.source + (f" @{v.revision}" if v.revision else ""))
        for v in versions
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    right = {0, 4}  # VERSION and SIZE line up on the right
    for row in rows:
        cells = [cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        print("  ".join([*cells, row[-1]]))
    return central_cli.where(store, versions) or 0


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def cmd_rm(args: argparse.Namespace) -> int:
    store = _store(args)
    target = _target(args, store)
    plan = store.remove(target.repo, target.revision, dry_run=args.dry_run)
    if not plan.files and not plan.dirs:
        print(f"nothing cached for {args.name}")
        return 1
    return _said(plan, args.dry_run)


def _said(plan, dry_run: bool) -> int:
    """Say what a removal plan freed (or would free)."""
    verb = "would free" if dry_run else "freed"
    print(f"{plan.description}: {verb} {_human(plan.freed)} ({len(plan.files)} files, {len(plan.dirs)} folders)")
    if plan.freed == 0 and plan.files:
        print("  (0 B: the content is still used by other versions or names, or by the files an import "
              "--link was made from, which share its disk blocks)")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    return _said(_store(args).gc(dry_run=args.dry_run), args.dry_run)


def cmd_verify(args: argparse.Namespace) -> int:
    from .names import is_local

    store = _store(args)
    repo = _target(args, store).repo if args.name else None
    problems = store.verify(repo)
    for version, entry, problem in problems:
        fix = ("import or save it again" if is_local(version.repo)
               else "the next load or zoo pull fetches it again")
        print(f"CORRUPT {version.repo} {version.name} {entry.path}: {problem} (quarantined; {fix})")
    count = len(list(store.versions(repo))) if repo else len(list(store.iter_versions()))
    print(f"verified {count} versions: {'all files intact' if not problems else f'{len(problems)} problems'}")
    from .registry_cli import verify_records

    damaged = verify_records(store, repo) + central_cli.verify(store, repo, args.bucket)  # and the bucket's
    return 1 if problems or damaged else 0


def cmd_du(args: argparse.Namespace) -> int:
    from .registry_cli import print_restored
    from .store.maintenance import usage

    u = usage(store := _store(args))
    print(f"logical  {_human(u.logical):>10}  (all versions, as separate copies)")
    print(f"physical {_human(u.physical):>10}  (each content stored once)")
    print(f"saved    {_human(u.saved):>10}  by deduplication")
    print_restored(store)
    return central_cli.du(store) or 0


class _VersionAction(argparse.Action):
    """``zoo --version``: zoo's version and the versions it works with, read from package metadata
    (nothing is imported), so a bug report can quote one line."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib import metadata

        from . import __version__

        def version(dist: str) -> str:
            try:
                return metadata.version(dist)
            except metadata.PackageNotFoundError:
                return "not installed"

        print(f"zoo {__version__} (Python {sys.version.split()[0]}; transformers {version('transformers')}; "
              f"torch {version('torch')})")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo",
        description="zoo: a plugin-based model-zoo registry with a content-addressed cache.",
    )
    parser.add_argument("-V", "--version", action=_VersionAction, help="show the versions of zoo, transformers, torch")
    # Options every subcommand takes, accepted before the subcommand (zoo -q pull X) or after it
    # (zoo pull X -q). After it, the default is SUPPRESS so that it never resets a value given before.
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars (or ZOO_QUIET=1)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars (or ZOO_QUIET=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("plugins", parents=[common],
                       help="list plugins, their versions, what each registers, and failures")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plugins)
    p = sub.add_parser("info", parents=[common],
                       help="describe a saved directory: model_type, plugin, head, versions, files")
    p.add_argument("path", help="a directory written by zoo.save or save_pretrained, or a cached name")
    p.add_argument("--load", action="store_true",
                   help="also load the model (as zoo.load does) and say what the load does to it")
    p.add_argument("--json", action="store_true", help="the figures as JSON (without --load)")
    p.set_defaults(func=cmd_info)

    def add(name: str, func, help: str, *, name_arg: str | None = None, dry_run: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, parents=[common])
        if name_arg:
            p.add_argument("name", nargs="?" if name_arg == "?" else None, help="NAME, org/name or NAME@version")
        if dry_run:
            p.add_argument("-n", "--dry-run", action="store_true", help="show what would go, delete nothing")
        p.set_defaults(func=func)
        return p

    p = add("pull", cmd_pull, "download a checkpoint into the cache (only what loading needs)", name_arg="1")
    p.add_argument("--all", action="store_true", help="take every file of the repository")
    p = add("import", cmd_import, "store a saved directory as a new version of NAME (a copy; --link to hard-link)")
    p.add_argument("directory")
    p.add_argument("--name", required=True)
    p.add_argument("--description", help="what this version is (shown by zoo info and zoo history)")
    p.add_argument("--label", action="append", metavar="KEY=VALUE", help="a label on the version (repeatable)")
    how = p.add_mutually_exclusive_group()
    # default=False on the first action: argparse takes the first action's default for a shared dest,
    # and store_false's own default (True) would make a plain `zoo import` link and chmod the user's files
    how.add_argument("--copy", dest="link", action="store_false", default=False,
                     help="copy the files (the default): DIR stays exactly as it is")
    how.add_argument("--link", dest="link", action="store_true",
                     help="hard-link instead of copying: no second copy on disk, but DIR's files become read-only")
    p = add("ls", cmd_ls, "cached names: versions, sizes, last use, who, aliases; filters find versions")
    p.description = ("One row per name: its newest version and how many it has. With filters, the names with a "
                     "version that matches them all: the newest such version, and how many match (MATCHING).")
    p.add_argument("--model-type", metavar="TYPE", help="versions whose config.json says this model_type (bert)")
    p.add_argument("--label", action="append", metavar="KEY=VALUE",
                   help="versions with this label (repeatable: all must match)")
    p.add_argument("--alias", metavar="ALIAS", help="the version this alias of a name points at (names having it)")
    p.add_argument("--base", metavar="NAME", help="versions saved or imported from NAME (NAME@vN: from that version)")
    p.add_argument("--since", metavar="DATE", help="versions created since DATE (2026-12-01, 2026-12-01T14:30, "
                   "local time unless an offset is given; or 7d, 12h)")
    p.add_argument("--user", metavar="USER", help="versions made by USER (a name or a uid)")
    p.add_argument("--json", action="store_true", help="the rows as JSON, as zoo.search returns them")
    add("versions", cmd_versions, "the versions of NAME", name_arg="1")
    add("rm", cmd_rm, "remove NAME or NAME@version and show the bytes freed", name_arg="1", dry_run=True)
    add("gc", cmd_gc, "delete unreferenced blobs and stale temporaries", dry_run=True)
    add("verify", cmd_verify, "re-hash the cache (or NAME); quarantine damaged files", name_arg="?").add_argument(
        "--bucket", action="store_true", help="also read back and hash every object of the object store")
    add("du", cmd_du, "logical vs physical bytes: what dedupe saved")
    p = add("daemon", cmd_daemon, "run the cache daemon in the foreground (one writer for a shared store); "
            "zoo daemon status asks a running one")
    p.add_argument("action", nargs="?", choices=["serve", "status"], default="serve")
    p.add_argument("--store", help="the store to serve (default: ZOO_HOME, or ~/.cache/zoo)")
    p.add_argument("--socket", help="the socket (default: STORE/daemon.sock, or ZOO_DAEMON)")
    p.add_argument("--group", help="the unix group whose members may use the daemon (socket mode 0660)")
    p.add_argument("--json", action="store_true", help="status as JSON")
    p.add_argument("--max-size", help="quota for the store (e.g. 500GB): least recently used versions are "
                   "evicted to make room, never pinned, in-use or newest ones")
    p.add_argument("--watch", action="append", default=[], metavar="DIR",
                   help="a drop folder: each DIR/NAME/ holding a complete saved model becomes a version of NAME")
    p.add_argument("--quiet-period", type=float, default=10.0, metavar="SECONDS",
                   help="how long a drop folder must be unchanged before it is taken (default 10; a .zoo-ready "
                   "file ends the wait)")
    p.add_argument("--config", metavar="FILE", help="settings from a TOML file (the flags' names); flags win")
    p.add_argument("--poll", type=float, metavar="SECONDS",
                   help="poll drop folders every SECONDS instead of inotify (NFS, CIFS and Lustre are detected)")
    p.add_argument("--http", metavar="HOST:PORT", help="also answer the Hugging Face Hub HTTP protocol there "
                   "(clients set HF_ENDPOINT=http://HOST:PORT); e.g. 127.0.0.1:8090, or 0.0.0.0:8090 for every machine")
    p.add_argument("--upstream", metavar="URL", action="append", help="where files the store lacks come from "
                   "(default: HF_ENDPOINT, or https://huggingface.co); another zoo daemon's --http address makes "
                   "tiers; repeat it (or URL,URL) for upstreams asked in turn when one cannot be reached")
    p.add_argument("--offline", action="store_true", help="never ask the upstream: serve only what is stored")
    p.add_argument("--object-store", metavar="s3://BUCKET[/PREFIX]", help="keep every object and version in "
                   "this bucket (the AWS_* settings say where and who); the local store becomes its cache")
    p.add_argument("--tokens", metavar="FILE", help="tokens that may read private and gated content (and local/ "
                   "names) over HTTP: one per line, mode 0600")
    p.add_argument("--scrub-rate", metavar="MB/S", help="re-hash the store in the background at most this fast, so "
                   "that bit rot is found within one pass (default: ZOO_SCRUB_RATE, or 20; 0 turns it off)")
    p.add_argument("--revalidate", type=float, metavar="SECONDS",
                   help="how long a branch's commit is trusted before the upstream is asked again (default 60)")
    p.add_argument("--tree-page-size", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--send-timeout", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--orphan-grace", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--admins", metavar="GROUP", help="a unix group whose members may move any alias and remove any "
                   "version (others: only what they made; root: anything)")
    p.add_argument("--webhook", metavar="URL", help="post each event (version created or removed, alias moved, "
                   "labels changed) there as JSON, signed in X-Zoo-Signature, retried until delivered")
    p.add_argument("--webhook-secret", metavar="FILE", help="the HMAC-SHA256 key of --webhook's signatures: a file "
                   "of mode 0600 holding at least 16 characters")
    p.add_argument("--webhook-queue", type=int, metavar="N", help="events kept while the receiver is down or slow "
                   "(default 10000); more are dropped, logged and counted in zoo daemon status")
    add("pin", cmd_pin, "keep NAME (its newest version) or NAME@vN from quota eviction", name_arg="1")
    add("unpin", cmd_pin, "release a pin: NAME@vN, or every pin of NAME", name_arg="1")
    from .registry_cli import add_commands

    add_commands(add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except ZooError as exc:
        print(f"zoo: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system said no: permissions, a full disk
        print(f"zoo: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
