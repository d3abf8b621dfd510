"""The registry on a large store: `zoo ls`, filtered `zoo ls`, `zoo history` and `zoo.load("NAME@ALIAS")`.

The store: --names names x --per-name versions (default 1,000 x 10 = 10,000 versions), each a tiny checkpoint
folder (config.json and a 2-tensor model.safetensors) made a version by the store's writer (`Store.import_dir`,
history and events included), so every manifest, marks file and history log is the writer's own. Every 10th
name has an alias `prod` (on v7) and a `staging` (on v10); every 5th name's versions are labelled
`team=search`, the others `team=ads`, and v10 of every name `task=ner`; model types rotate bert/gpt2/t5; the
versions of every 4th name record model-0000@v10 as their base. One name, `busy`, has its alias moved
--moves times (a long history). A tiny BERT is saved with `zoo.save` as `tiny-bert` (v1, v2), `prod` on v1.

Then, each command in fresh processes, median of --runs:
1. `zoo ls` on the large store against `zoo ls` on an empty store (the CLI's start-up, the floor): the time
   and the ratio (target: `zoo ls` under 1 s on this 2-core machine);
2. filtered `zoo ls`: --model-type, --label, --alias, --since, --base, --user, each against plain `zoo ls`;
3. `zoo history NAME` of a name of the large store and of `busy`, against `zoo versions NAME`;
4. `zoo.load("tiny-bert@prod")` against `zoo.load("tiny-bert@v1")` (torch and zoo imported first, then one
   timed call; target ratio ~1.0: an alias is one small file read), and in one process the resolution alone
   (`zoo.registry.target` + `Store.find`) of NAME@ALIAS against NAME@vN, on a name of the large store.

5. the daemon's web page (``zoo daemon --http``): the home page (HTML, its JSON twin, filtered) and a model
   page over HTTP, against `zoo ls` on the same store (target: the home page under 300 ms).

Run: python benchmarks/registry.py [--runs 5] [--names 1000] [--per-name 10] [--work DIR] [--web-only]
(--work keeps the store between runs: it is built once, in about a minute.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "ZOO_DAEMON")}
ENV["HF_HUB_DISABLE_TELEMETRY"] = "1"
ENV["ZOO_QUIET"] = "1"
ZOO = [sys.executable, "-m", "zoo"]
TYPES = ("bert", "gpt2", "t5")

TINY_BERT = {"model_type": "bert", "vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2,
             "num_attention_heads": 4, "intermediate_size": 37, "max_position_embeddings": 64, "type_vocab_size": 2}

LOAD = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
import torch, transformers, zoo, zoo.model.modeling, zoo.model.weights
from transformers import BertModel
zoo.default_registry().architectures()
first, specs = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
zoo.load(first)
out = {"first": time.perf_counter() - start}
for _ in range(10):
    for spec in specs:
        start = time.perf_counter()
        zoo.load(spec)
        out.setdefault(spec, []).append(time.perf_counter() - start)
print(json.dumps(out))
"""

RESOLVE = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
import zoo
from zoo.api import default_store
from zoo.registry import target
store = default_store()
import statistics
out = {spec: [] for spec in sys.argv[1:]}
for spec in out:
    repo, revision = target(spec, store)
    assert store.find(repo, revision) is not None, spec
for _ in range(200):
    for spec in out:  # taking turns
        start = time.perf_counter()
        repo, revision = target(spec, store)
        store.find(repo, revision)
        out[spec].append(time.perf_counter() - start)
print(json.dumps({spec: statistics.median(times) for spec, times in out.items()}))
"""


def tiny_folder(folder: Path, model_type: str, seed: int) -> Path:
    """A complete checkpoint of a few hundred bytes: config.json and a safetensors file of one tensor."""
    folder.mkdir(parents=True)
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    header += b" " * (-len(header) % 8)
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + struct.pack("<2f", seed, 1))
    (folder / "config.json").write_text(json.dumps({"model_type": model_type, "seed": seed}))
    return folder


def build(home: Path, names: int, per_name: int, moves: int) -> None:
    from zoo.store import Store

    store = Store(home, quiet=True)
    src = home.parent / "sources"
    start = time.perf_counter()
    base = None
    for i in range(names):
        name = f"model-{i:04d}"
        for j in range(1, per_name + 1):
            labels = {"team": "search" if i % 5 == 0 else "ads"}
            if j == per_name:
                labels["task"] = "ner"
            folder = tiny_folder(src / f"{name}-{j}", TYPES[i % 3], i * 100 + j)
            store.import_dir(folder, name, owned=True, labels=labels,
                             base=base if i % 4 == 3 and base is not None else None)
        if i == 0:
            newest = store.find("local/model-0000")
            base = {"name": "model-0000", "repo": "local/model-0000", "version": newest.name, "id": newest.id}
        if i % 10 == 0 and per_name >= 7:
            store.tag(f"local/{name}", "prod", "v7")
            store.tag(f"local/{name}", "staging", f"v{per_name}")
    made = time.perf_counter() - start
    for j in (1, 2):
        store.import_dir(tiny_folder(src / f"busy-{j}", "bert", j), "busy", owned=True)
    for k in range(moves):
        store.tag("local/busy", "prod", f"v{1 + k % 2}")
    count = sum(len(store.versions(r)) for r in store.repos())
    print(f"store: {count:,} versions of {names + 1:,} names made by Store.import_dir in {made:.1f} s "
          f"({names * per_name / made:.0f} imports/s); busy's alias moved {moves} times")
    code = f"""
import torch, zoo
torch.manual_seed(1); zoo.save(zoo.build({TINY_BERT!r}), "tiny-bert")
torch.manual_seed(2); zoo.save(zoo.build({TINY_BERT!r}), "tiny-bert")
zoo.tag("tiny-bert", "prod", "v1")
"""
    subprocess.run([sys.executable, "-c", code], env={**ENV, "ZOO_HOME": str(home)}, check=True)
    (home.parent / "built.json").write_text(json.dumps({"names": names, "per_name": per_name, "moves": moves}))


def timed(commands: dict[str, tuple[list[str], Path]], runs: int) -> dict[str, tuple[float, str]]:
    """Median wall time of each command in fresh processes, and its output. The commands take turns, run after
    run, so that a machine that gets busier or quieter meanwhile weighs on all of them alike."""
    times: dict[str, list[float]] = {key: [] for key in commands}
    outs: dict[str, str] = {}
    for _ in range(runs):
        for key, (argv, home) in commands.items():
            start = time.perf_counter()
            result = subprocess.run(argv, env={**ENV, "ZOO_HOME": str(home)}, capture_output=True, text=True)
            times[key].append(time.perf_counter() - start)
            if result.returncode != 0:
                raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr}")
            outs[key] = result.stdout
    return {key: (statistics.median(times[key]), outs[key]) for key in commands}


def listing(home: Path, empty: Path, runs: int) -> None:
    since = time.strftime("%Y-%m-%d", time.localtime(time.time() - 86400))
    first = timed({"user": ([*ZOO, "ls", "--json", "--alias", "prod"], home)}, 1)
    user = json.loads(first["user"][1])[0]["user"]
    filters = [["--model-type", "bert"], ["--label", "team=search"], ["--label", "team=search", "--label", "task=ner"],
               ["--alias", "prod"], ["--since", since], ["--base", "model-0000"], ["--user", user],
               ["--model-type", "gpt2", "--label", "task=ner", "--json"]]
    commands = {"floor": ([*ZOO, "ls"], empty), "plain": ([*ZOO, "ls"], home)}
    commands.update({" ".join(flags): ([*ZOO, "ls", *flags], home) for flags in filters})
    got = timed(commands, runs)
    floor, plain, out = got["floor"][0], got["plain"][0], got["plain"][1]
    rows = len(out.splitlines()) - 1
    print(f"\n1. zoo ls ({runs} fresh processes each, taking turns, median; {os.cpu_count()} CPU cores, "
          f"load average {os.getloadavg()[0]:.1f})")
    print(f"   {'zoo ls, empty store (start-up floor)':44}{floor * 1e3:8.0f} ms")
    print(f"   {'zoo ls, ' + f'{rows:,} names':44}{plain * 1e3:8.0f} ms   ratio to the floor {plain / floor:.2f}x; "
          f"{(plain - floor) * 1e3 / max(rows, 1):.2f} ms per name above it (target: under 1000 ms)")
    print(f"\n2. filtered zoo ls, against plain zoo ls ({plain * 1e3:.0f} ms), same turns")
    for flags in filters:
        seconds, out = got[" ".join(flags)]
        shown = len(json.loads(out)) if "--json" in flags else len(out.splitlines()) - 1
        print(f"   {'zoo ls ' + ' '.join(flags):58}{seconds * 1e3:8.0f} ms   ratio {seconds / plain:.2f}   "
              f"{shown:,} names")


def history(home: Path, runs: int) -> None:
    commands = {}
    for name in ("model-0010", "busy"):
        commands[f"history {name}"] = ([*ZOO, "history", name], home)
        commands[f"versions {name}"] = ([*ZOO, "versions", name], home)
    got = timed(commands, runs)
    print("\n3. zoo history, against zoo versions of the same name, same turns")
    for name in ("model-0010", "busy"):
        (hist, out), (vers, _) = got[f"history {name}"], got[f"versions {name}"]
        print(f"   zoo history {name:12} {hist * 1e3:8.0f} ms ({len(out.splitlines()):,} lines)   "
              f"zoo versions {name:12} {vers * 1e3:6.0f} ms   ratio {hist / vers:.2f}")


def loads(home: Path, runs: int) -> None:
    env = {**ENV, "ZOO_HOME": str(home)}
    specs = ["tiny-bert@prod", "tiny-bert@v1"]
    first: dict[str, list[float]] = {spec: [] for spec in specs}
    again: dict[str, list[float]] = {spec: [] for spec in specs}
    for k in range(runs):
        spec = specs[k % 2]  # which one a fresh process loads first, taking turns
        out = subprocess.run([sys.executable, "-c", LOAD, spec, *specs], env=env, capture_output=True, text=True,
                             check=True)
        got = json.loads(out.stdout.strip().splitlines()[-1])
        first[spec].append(got["first"])
        for s in specs:
            again[s] += got[s]
    f = {s: statistics.median(v) for s, v in first.items() if v}
    a = {s: statistics.median(v) for s, v in again.items()}
    print(f"\n4. zoo.load of a tiny BERT saved with zoo.save in the large store ({runs} fresh processes, taking turns)")
    if len(f) == 2:
        print(f"   first load in the process   @prod {f['tiny-bert@prod'] * 1e3:7.1f} ms   @v1 {f['tiny-bert@v1'] * 1e3:7.1f} ms"
              f"   ratio {f['tiny-bert@prod'] / f['tiny-bert@v1']:.2f} (median of {len(first['tiny-bert@prod'])} each)")
    print(f"   later loads, alternating    @prod {a['tiny-bert@prod'] * 1e3:7.1f} ms   @v1 {a['tiny-bert@v1'] * 1e3:7.1f} ms"
          f"   ratio {a['tiny-bert@prod'] / a['tiny-bert@v1']:.2f} (median of {len(again['tiny-bert@prod'])} each; target ~1.0)")
    out = subprocess.run([sys.executable, "-c", RESOLVE, "model-0010@prod", "model-0010@v7", "model-0010"],
                         env=env, capture_output=True, text=True, check=True)
    each = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"   resolution alone (zoo.registry.target + Store.find, 200 calls each in one process, median): "
          f"model-0010@prod {each['model-0010@prod'] * 1e6:.0f} us, @v7 {each['model-0010@v7'] * 1e6:.0f} us, "
          f"newest {each['model-0010'] * 1e6:.0f} us; ratio alias/vN {each['model-0010@prod'] / each['model-0010@v7']:.2f}")


def web(home: Path, runs: int) -> None:
    """The daemon's web page (zoo.web) on the large store: a real ``zoo daemon --http --max-size 1TB`` process (the
    home page then shows the quota too), the home page
    (HTML and its JSON twin, a filtered one) and a model page, each requested ``runs * 4`` times over one
    connection after one warm-up request (median), against ``zoo ls`` in fresh processes on the same store."""
    import http.client

    from http_daemon import free_port

    port = free_port()
    sock = Path(tempfile.mkdtemp()) / "daemon.sock"
    env = {**ENV, "ZOO_HOME": str(home), "ZOO_OFFLINE": "1"}
    log = open(home.parent / "web-daemon.log", "ab")
    proc = subprocess.Popen([*ZOO, "daemon", "--store", str(home), "--socket", str(sock), "--http",
                             f"127.0.0.1:{port}", "--max-size", "1TB"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 60
        conn = None
        while time.monotonic() < deadline and conn is None:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                start = time.perf_counter()
                conn.request("GET", "/?format=json")
                warm = conn.getresponse().read()
                cold = time.perf_counter() - start
            except OSError:
                conn = None
                time.sleep(0.1)
        if conn is None:
            raise SystemExit(f"the daemon did not answer: {(home.parent / 'web-daemon.log').read_text()[-2000:]}")
        names = len(json.loads(warm)["names"])
        pages = {"home page (HTML)": "/", "home page (JSON twin)": "/?format=json",
                 "home page, --label team=search": "/?label=team%3Dsearch", "model page model-0010": "/models/model-0010",
                 "model page model-0000 (base of 2,500 versions)": "/models/model-0000"}
        times: dict[str, list[float]] = {key: [] for key in pages}
        sizes: dict[str, int] = {}
        for _ in range(runs * 4):
            for key, path in pages.items():
                start = time.perf_counter()
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
                times[key].append(time.perf_counter() - start)
                if response.status != 200:
                    raise SystemExit(f"GET {path}: {response.status} {body[:300]!r}")
                sizes[key] = len(body)
        # one name changes (an alias moves through the daemon): the next home page reads that name again only
        subprocess.run([*ZOO, "tag", "model-0001@v3", "bench"], env={**env, "ZOO_DAEMON": str(sock)}, check=True,
                       capture_output=True)
        start = time.perf_counter()
        conn.request("GET", "/")
        after_change = (conn.getresponse().read(), time.perf_counter() - start)[1]
        conn.close()
    finally:
        proc.terminate()
        proc.wait(60)
    ls = timed({"plain": ([*ZOO, "ls"], home)}, runs)["plain"][0]
    print(f"\n5. the web page (zoo daemon --http, one keep-alive connection, median of {runs * 4} requests each after "
          f"a warm-up), against zoo ls on the same store ({runs} fresh processes)")
    print(f"   {'zoo ls (' + f'{names:,} names)':50}{ls * 1e3:8.0f} ms")
    print(f"   {'first request after the start (JSON twin)':50}{cold * 1e3:8.0f} ms   (nothing read yet: every manifest "
          "is read once)")
    print(f"   {'home page (HTML) just after an alias moved':50}{after_change * 1e3:8.0f} ms   (that name's manifests "
          "read again, the others' rows kept)")
    for key in pages:
        ms = statistics.median(times[key]) * 1e3
        print(f"   {key:50}{ms:8.0f} ms   ratio to zoo ls {ms / (ls * 1e3):.2f}   {sizes[key] / 1e3:,.0f} kB"
              + ("   (target: under 300 ms)" if key == "home page (HTML)" else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--names", type=int, default=1000)
    parser.add_argument("--per-name", type=int, default=10)
    parser.add_argument("--moves", type=int, default=500, help="alias moves of the name busy")
    parser.add_argument("--work", help="keep the store here (built once; reused while the sizes are the same)")
    parser.add_argument("--web-only", action="store_true", help="only 5., the web page against zoo ls")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work).expanduser() if args.work else Path(tmp)
        home, empty = work / "store", Path(tmp) / "empty-store"
        wanted = {"names": args.names, "per_name": args.per_name, "moves": args.moves}
        built = work / "built.json"
        if not built.exists() or json.loads(built.read_text()) != wanted:
            if home.exists():
                raise SystemExit(f"{home} holds another store: remove {work} or choose another --work")
            build(home, args.names, args.per_name, args.moves)
        else:
            print(f"store: {home}, built before ({args.names:,} x {args.per_name} versions)")
        empty.mkdir()
        if not args.web_only:
            listing(home, empty, args.runs)
            history(home, args.runs)
            loads(home, args.runs)
        web(home, args.runs)


if __name__ == "__main__":
    main()
