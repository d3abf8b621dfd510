"""The ``zoo`` command line. Subcommands import what they need; ``zoo --help`` imports nothing heavy."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Sequence

from .errors import ZooError


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


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
        if info.checkpoints:
            print(f"  checkpoints:   {', '.join(info.checkpoints)}")
        if info.error:
            print(f"  error: {info.error}")
    for (kind, key), owners in conflicts.items():
        print(f"conflict: {kind} {key!r} is registered by {' and '.join(owners)}")
    return 1 if any(i.status == "failed" for i in infos) or conflicts else 0


def cmd_info(args: argparse.Namespace) -> int:
    from .api import load_config
    from . import weights

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = load_config(args.path)
    head = cfg.architecture.head_for(None, list(cfg.architectures))
    files = weights.open_weights(cfg.path)
    params = sum(i.numel for _, i in files.tensor_infos() if i.dtype[0] in "FB" and i.dtype != "BOOL") if files.headers else None
    dtypes = sorted({info.dtype for _, info in files.tensor_infos()})
    print(f"path:                 {cfg.path}")
    print(f"model_type:           {cfg.model_type}")
    print(f"plugin:               {cfg.plugin}")
    print(f"head:                 {head}")
    print(f"transformers_version: {cfg.transformers_version or 'not recorded'}")
    print(f"  advice:             {cfg.version_advice.message}")
    print(f"weights:              {files.format}" + (f" ({', '.join(dtypes)})" if dtypes else ""))
    print(f"parameters:           {params:,}" if params is not None else "parameters:           (legacy .bin: not counted)")
    print("files:")
    for path in sorted(cfg.path.rglob("*")):
        if path.is_file():
            print(f"  {path.stat().st_size:>14,}  {path.relative_to(cfg.path)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo",
        description="zoo: a plugin-based model-zoo registry with a content-addressed cache.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("plugins", help="list plugins, their versions, what each registers, and failures")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plugins)
    p = sub.add_parser("info", help="describe a saved directory: model_type, plugin, head, versions, files")
    p.add_argument("path", help="a directory written by zoo.save or save_pretrained")
    p.set_defaults(func=cmd_info)
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
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
