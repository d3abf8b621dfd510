"""The architecture as a checked rule: zoo's rooms, each importing only the rooms below it (imports inside
functions count: a cycle hidden in a function is still a cycle), so the folder layout is the design.

    doors      zoo/__init__, api, cli, resolve      what users call
    daemon     zoo/daemon/                          the one writer of a shared store, its quota policy
    web        zoo/web/                             the daemon's web page (mounted by the hub server's app)
    hubserver  zoo/hubserver/                       the Hub protocol over a store
    store      zoo/store/                           reader, writer, content, records, the hub fetcher
    model      zoo/model/                           checkpoint folders and the models built from them
    plugins    zoo/plugins/                         the registry of architectures and names
    ground     errors, names, atomic, _env, _deps   used by all, importing nothing of zoo
"""

import ast
from pathlib import Path

from conftest import ROOT

ORDER = ["doors", "daemon", "web", "hubserver", "store", "model", "plugins", "ground"]
GROUND = {"errors", "_env", "_deps", "names", "atomic", "_version"}


def _room(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ORDER:
        return parts[1]
    if len(parts) > 1 and parts[1] in GROUND:
        return "ground"
    return "doors"


def _imports() -> list[tuple[str, str]]:
    """(importer, imported) for every import of a zoo module in zoo/, at any depth of the code."""
    out = []
    for path in (ROOT / "zoo").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        package_init = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if package_init else parts)
        package = module if package_init else module.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(block.test) for n in ast.walk(block)}
        for node in ast.walk(tree):
            if id(node) in typing_only:  # annotations only: no dependency when the code runs
                continue
            if isinstance(node, ast.Import):
                out += [(module, a.name) for a in node.names if a.name.split(".")[0] == "zoo"]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != "zoo":
                    continue
                for alias in node.names:  # `from .. import atomic` imports the module zoo.atomic
                    sub = ROOT / (target + "." + alias.name).replace(".", "/")
                    out.append((module, target + "." + alias.name if sub.with_suffix(".py").exists()
                                or sub.is_dir() else target))
    return out


def test_each_room_imports_only_the_rooms_below_it():
    upward = sorted(f"{a} ({_room(a)}) imports {b} ({_room(b)})" for a, b in _imports()
                    if ORDER.index(_room(b)) < ORDER.index(_room(a)) and b != "zoo")
    assert upward == []


def test_no_import_cycles_between_modules():
    graph: dict[str, set[str]] = {}
    for a, b in _imports():
        if a != b and b != "zoo":
            graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_modules_stay_small():
    """One job per module: none past about 500 lines (the doors' argument tables excepted by a margin)."""
    long = {p.relative_to(ROOT).as_posix(): n for p in (ROOT / "zoo").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 560}
    assert long == {}
