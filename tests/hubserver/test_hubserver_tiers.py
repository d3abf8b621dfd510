"""Tiers of zoo daemons speaking the Hugging Face Hub protocol: node -> central -> hub.

The topology, when running as root with working ``ip netns`` (CI runs as root):

- the test hub (olah behind the counting proxy, session ``hub`` fixture) on 127.0.0.1 in the root namespace;
- a **central** ``zoo daemon --http`` in the root namespace, its own store, upstream = the hub, listening on
  the root end of a veth pair the test creates (10.231.N.1/24);
- a **node** ``zoo daemon --http`` inside a new network namespace (the other end of the veth, 10.231.N.2/24),
  its own store, upstream = the central, listening on 127.0.0.1 *inside* the namespace;
- clients run inside the namespace too: they reach the node, and the node reaches only the central (a
  connection from the namespace to the hub's port fails: ``_prove_isolated``).

Without root (or where ``ip netns`` fails) the same two daemons run on loopback addresses 127.0.0.2 (central)
and 127.0.0.3 (node), with the same assertions except the isolation proof.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import textwrap
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from http_daemon import HttpDaemon, free_port

REPO = "sentence-transformers/all-MiniLM-L6-v2"
CLIENTS = 8
CLIENT_TIMEOUT = 300  # seconds for a whole round of clients (the slowest machine in CI included)
TRUST = "3600"  # --revalidate: a branch's commit is trusted for the whole test, however slow the machine


# ---- the network ------------------------------------------------------------------------------------------------

def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


@dataclass
class Net:
    """Where the two tiers listen, and how to run a command on the node machine."""

    mode: str  # "netns" or "loopback"
    central_host: str
    node_host: str
    prefix: tuple = ()  # runs a command on the node machine (``ip netns exec NS``)
    ns: str | None = None
    veth: str | None = None  # the root namespace's end of the pair

    def on_node(self, argv: list) -> list:
        return [*self.prefix, *argv]


def _free_subnet() -> int:
    """A 10.231.N.0/24 no interface uses yet (parallel runs each take their own)."""
    used = _ip("-o", "-4", "addr", "show").stdout
    for _ in range(200):
        n = secrets.randbelow(250) + 1
        if f"10.231.{n}." not in used:
            return n
    raise RuntimeError("no free 10.231.N.0/24 subnet")


def _teardown_netns(ns: str, veth: str) -> None:
    _ip("netns", "del", ns, check=False)  # deletes the peer end with it, and so the pair
    _ip("link", "del", veth, check=False)


def _sweep_leftovers() -> None:
    """Namespaces of earlier runs whose test process is gone (killed before its teardown): deleting one deletes
    its veth pair too."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        m = re.match(r"zoo-node-(\d+)-[0-9a-f]+\b", line)
        if m and int(m.group(1)) != os.getpid():
            try:
                os.kill(int(m.group(1)), 0)
            except ProcessLookupError:
                _ip("netns", "del", m.group(0), check=False)
            except PermissionError:
                pass


def _make_netns() -> Net:
    tag = secrets.token_hex(5)
    # unique per run (the pid says whose it is); interface names stay under 16 characters
    ns, veth, peer = f"zoo-node-{os.getpid()}-{tag}", f"zt{tag}c", f"zt{tag}n"
    _sweep_leftovers()
    _teardown_netns(ns, veth)  # a leftover of the same name goes first
    n = _free_subnet()
    central, node = f"10.231.{n}.1", f"10.231.{n}.2"
    try:
        _ip("netns", "add", ns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", ns)
        _ip("addr", "add", f"{central}/24", "dev", veth)
        _ip("link", "set", veth, "up")
        _ip("-n", ns, "addr", "add", f"{node}/24", "dev", peer)
        _ip("-n", ns, "link", "set", peer, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        # a process can run in it (ip netns exec remounts /sys: fails in some containers)
        subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", "pass"], check=True, timeout=60,
                       capture_output=True)
    except BaseException:
        _teardown_netns(ns, veth)
        raise
    return Net("netns", central_host=central, node_host="127.0.0.1", prefix=("ip", "netns", "exec", ns),
               ns=ns, veth=veth)


@pytest.fixture(scope="module")
def net():
    made = None
    if os.geteuid() == 0 and not os.environ.get("ZOO_TEST_NO_NETNS"):  # set it to try the loopback fallback
        try:
            made = _make_netns()
        except (OSError, subprocess.SubprocessError) as exc:
            print(f"ip netns unusable ({exc!r}); falling back to loopback addresses")
    try:
        yield made or Net("loopback", central_host="127.0.0.2", node_host="127.0.0.3")
    finally:
        if made is not None:
            _teardown_netns(made.ns, made.veth)
            assert made.ns not in _ip("netns", "list").stdout, f"netns {made.ns} survived teardown"


# ---- the tiers ----------------------------------------------------------------------------------------------------

@dataclass
class Tiers:
    net: Net
    central: HttpDaemon
    node: HttpDaemon


@pytest.fixture
def tiers(net, hub, tmp_path):
    central = HttpDaemon(tmp_path / "central", upstream=hub.endpoint, host=net.central_host,
                         port=free_port(net.central_host), args=("--revalidate", TRUST))
    # inside the namespace every port is free; on loopback, one free on the node's own address
    node = HttpDaemon(tmp_path / "node", upstream=central.endpoint, host=net.node_host, prefix=net.prefix,
                      port=None if net.prefix else free_port(net.node_host), args=("--revalidate", TRUST))
    try:
        central.start()
        node.start()
        yield Tiers(net, central, node)
    finally:
        codes = {}
        for name, daemon in (("node", node), ("central", central)):
            try:
                codes[name] = daemon.stop()
            except AssertionError as exc:
                codes[name] = str(exc)
        bad = {k: v for k, v in codes.items() if v not in (0, None)}
        assert not bad, f"daemons did not stop cleanly: {bad}; logs {node.log}, {central.log}"


def _logs(t: Tiers) -> str:
    out = []
    for name, d in (("central", t.central), ("node", t.node)):
        text = d.log.read_text(errors="replace") if d.log.exists() else "(no log)"
        out.append(f"--- {name} daemon log ({d.log}) ---\n{text[-4000:]}")
    return "\n".join(out)


def _prove_isolated(tiers: Tiers, hub) -> None:
    """From the node machine the hub is unreachable (on 127.0.0.1 or the central's address); the central is not."""
    hub_port = int(hub.endpoint.rsplit(":", 1)[1])
    probe = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2).close()"
    for host in ("127.0.0.1", tiers.net.central_host):
        out = subprocess.run(tiers.net.on_node([sys.executable, "-c", probe, host, str(hub_port)]),
                             capture_output=True, text=True, timeout=30)
        assert out.returncode != 0, f"the node reached the hub at {host}:{hub_port}"
        assert "ConnectionRefused" in out.stderr or "timed out" in out.stderr or "unreachable" in out.stderr, \
            out.stderr
    ok = subprocess.run(tiers.net.on_node([sys.executable, "-c", probe, tiers.net.central_host,
                                           str(tiers.central.port)]), capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, f"the node cannot reach the central: {ok.stderr}"


def test_node_cannot_reach_the_hub(tiers, hub):
    """The isolation the tiers rely on."""
    if tiers.net.mode != "netns":
        pytest.skip("loopback fallback: every address reaches the hub; nothing to prove")
    _prove_isolated(tiers, hub)


# ---- clients ------------------------------------------------------------------------------------------------------

SNAPSHOT_CLIENT = textwrap.dedent("""
    import os, sys, time
    gate = sys.argv[1]
    deadline = time.monotonic() + 60
    while not os.path.exists(gate):  # every client starts downloading at the same moment
        if time.monotonic() > deadline:
            sys.exit("the start gate never opened")
        time.sleep(0.01)
    from huggingface_hub import snapshot_download
    print(snapshot_download(sys.argv[2]))
""")


def _client_env(home: Path, endpoint: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "ZOO_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(home / "hf"), HF_HUB_DISABLE_TELEMETRY="1",
               ZOO_HOME=str(home / "zoo"), HF_HUB_DISABLE_PROGRESS_BARS="1")
    return env


def _round_of_snapshots(t: Tiers, root: Path) -> list[Path]:
    """CLIENTS processes on the node machine download the whole repo from the node at once; their snapshots."""
    root.mkdir(parents=True)
    gate = root / "go"
    procs = []
    try:
        for i in range(CLIENTS):
            home = root / f"client{i}"
            home.mkdir()
            procs.append(subprocess.Popen(
                t.net.on_node([sys.executable, "-c", SNAPSHOT_CLIENT, str(gate), REPO]),
                env=_client_env(home, t.node.endpoint), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        time.sleep(0.5)  # let them import; the gate bounds how long they wait anyway
        gate.touch()
        deadline = time.monotonic() + CLIENT_TIMEOUT
        results = []
        for p in procs:
            try:
                out, err = p.communicate(timeout=max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate(timeout=30)
                err += f"\n(killed after {CLIENT_TIMEOUT}s)"
            results.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(30)
    failed = [(i, rc, err[-2000:]) for i, (rc, _, err) in enumerate(results) if rc != 0]
    assert not failed, f"clients failed: {failed}\n{_logs(t)}"
    return [Path(out.strip().splitlines()[-1]) for _, out, _ in results]


def _files(directory: Path) -> dict[str, Path]:
    return {p.relative_to(directory).as_posix(): p for p in directory.rglob("*") if p.is_file()
            and ".cache" not in p.relative_to(directory).parts}


def _same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def _hub_gets_per_path(hub) -> Counter:
    """GETs of each file (its path in the repo: config.json and 1_Pooling/config.json are two files)."""
    counts = Counter()
    for method, path in hub.requests():
        if method == "GET" and "/resolve/" in path:
            counts[path.split("?")[0].split("/resolve/", 1)[1].split("/", 1)[1]] += 1
    return counts


def _metadata(hub) -> dict[str, int]:
    reqs = hub.requests()
    return {"revision": sum(1 for _, p in reqs if p.startswith("/api/") and "/revision/" in p),
            "tree": sum(1 for _, p in reqs if p.startswith("/api/") and "/tree/" in p),
            "other": sum(1 for _, p in reqs if "/resolve/" not in p and not (p.startswith("/api/") and (
                "/revision/" in p or "/tree/" in p)))}


def _check_round(snapshots: list[Path], expected: dict) -> None:
    """Every client of a round got every file of the hub, byte for byte."""
    for snap in snapshots:
        got = _files(snap)
        assert sorted(got) == sorted(expected), f"{snap}: {sorted(got)}"
        different = [rel for rel in expected if not _same_bytes(got[rel], expected[rel])]
        assert not different, f"{snap}: not the hub's bytes: {different}"


@pytest.mark.slow
def test_eight_clients_on_a_node_pull_each_file_from_the_hub_once(tiers, hub, minilm_dir, tmp_path):
    if tiers.net.mode == "netns":
        _prove_isolated(tiers, hub)  # every file below went node -> central -> hub
    expected = _files(minilm_dir)
    hub.reset_counts()
    started = time.monotonic()
    _check_round(_round_of_snapshots(tiers, tmp_path / "round1"), expected)
    first = time.monotonic() - started
    hub.wait_idle()

    gets = _hub_gets_per_path(hub)
    metadata = _metadata(hub)
    print(f"round 1: {first:.1f}s, hub GETs per file {dict(gets)}, metadata {metadata}, "
          f"all requests {len(hub.requests())}")
    assert set(gets) == set(expected), f"the hub served {sorted(gets)}\n{_logs(tiers)}"
    assert all(n == 1 for n in gets.values()), \
        f"more than one upstream GET of a file: { {k: n for k, n in gets.items() if n != 1} }\n{_logs(tiers)}"
    assert metadata["revision"] == 1, f"{metadata}: {hub.requests()}\n{_logs(tiers)}"
    # one listing of the commit's tree; olah answers tree/<sha> with a 307 to tree/<sha>/, so it is 1 or 2 requests
    listings = {p.split("?")[0].rstrip("/") for _, p in hub.requests() if "/tree/" in p}
    assert len(listings) == 1 and metadata["tree"] <= 2, f"{metadata}: {hub.requests()}"
    assert metadata["other"] == 0, f"{metadata}: {hub.requests()}"

    hub.reset_counts()
    started = time.monotonic()
    _check_round(_round_of_snapshots(tiers, tmp_path / "round2"), expected)
    second = time.monotonic() - started
    hub.wait_idle()
    print(f"round 2: {second:.1f}s, hub requests {hub.requests()}")
    assert hub.requests() == [], f"the second round reached the hub: {hub.requests()}\n{_logs(tiers)}"


@pytest.mark.slow
def test_zoo_load_on_the_node_machine(tiers, hub, tmp_path):
    """zoo's own hub client against the node daemon; the central keeps a version of the repo on the way."""
    hub.reset_counts()
    home = tmp_path / "client"
    home.mkdir()
    code = textwrap.dedent(f"""
        import zoo
        model = zoo.load({REPO!r})
        print(type(model).__name__, sum(p.numel() for p in model.parameters()))
    """)
    started = time.monotonic()
    out = subprocess.run(tiers.net.on_node([sys.executable, "-c", code]), env=_client_env(home, tiers.node.endpoint),
                         capture_output=True, text=True, timeout=300)
    took = time.monotonic() - started
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr[-4000:]}\n{_logs(tiers)}"
    name, params = out.stdout.split()[-2:]
    assert int(params) > 20_000_000, out.stdout
    print(f"zoo.load through node -> central -> hub: {took:.1f}s; {name} {params} parameters; "
          f"hub GETs {dict(_hub_gets_per_path(hub))}, metadata {_metadata(hub)}")
    hub.wait_idle()
    gets = _hub_gets_per_path(hub)
    assert "model.safetensors" in gets and all(n == 1 for n in gets.values()), f"{gets}\n{_logs(tiers)}"
    assert _metadata(hub)["revision"] == 1 and _metadata(hub)["other"] == 0, f"{hub.requests()}\n{_logs(tiers)}"

    ls = subprocess.run([sys.executable, "-m", "zoo", "ls"], capture_output=True, text=True, timeout=60,
                        env={**os.environ, "ZOO_HOME": str(tiers.central.home)})
    assert ls.returncode == 0, ls.stderr
    assert REPO in ls.stdout, ls.stdout
    versions = [p for p in tiers.central.home.rglob("versions/*") if p.is_dir()]
    assert versions, f"no version in the central's store: {sorted(tiers.central.home.rglob('*'))[:50]}"
    print(ls.stdout)
