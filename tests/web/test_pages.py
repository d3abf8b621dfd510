"""The web page of ``zoo daemon --http`` over real HTTP (stdlib urllib), against the store's own answers.

A real daemon with ``--tokens`` and ``--max-size`` serves a store made through zoo's doors: ``local/`` names
imported with the CLI (one with a hostile model card, one made from another), and two hub repositories pulled
from a test hub (olah), one of them gated upstream. Every page and its JSON twin are checked against
``zoo ls --json``, ``zoo history --json`` and the files on disk; what a browser without a token sees (public
content only) against what it sees with a bearer header or after logging in; the login cookie's flags; a hostile
card rendered inert; paths that look like both a page and a Hub route; bad input answered with a page, not a
traceback; and that nothing the page answers writes the store.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import TINY_BERT
from http_daemon import HttpDaemon

pytestmark = pytest.mark.slow

GATED, PUBLIC, RESERVED, SOLO = "acme/gated-bert", "acme/public-bert", "acme/models", "solo-bert"
UPSTREAM_TOKEN = "hf_upstream_token_0123456789abcdef"
TOKEN = "zoo-web-token-0123456789abcdef-4f0c1d2e"
SCOPED = "zoo-web-scoped-token-9876543210fedcba"  # read=local/demo only
HOSTILE = """---
license: mit
---
# Hostile card

<script>document.title = "pwned"</script>
<img src="x" onerror="alert(1)">
[click me](javascript:alert(1)) and [tab](java\tscript:alert(2)) and <javascript:alert(3)>
![pixel](data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=) [fine](https://example.org/docs)
"""


def _safetensors(n: int) -> bytes:
    data = struct.pack(f"<{n * n}f", *(i / 7 for i in range(n * n)))
    header = json.dumps({"weight": {"dtype": "F32", "shape": [n, n], "data_offsets": [0, len(data)]},
                         "ids": {"dtype": "I64", "shape": [2], "data_offsets": [len(data), len(data) + 16]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data + bytes(16)


def _folder(path: Path, n: int, card: str | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({**TINY_BERT, "transformers_version": "4.40.0",
                                                  "architectures": ["BertModel"]}))
    (path / "model.safetensors").write_bytes(_safetensors(n))
    if card is not None:
        (path / "README.md").write_text(card)
    return path


def zoo(home: Path, *args: str, env: dict | None = None) -> str:
    out = subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "ZOO_HOME": str(home), "ZOO_QUIET": "1", **(env or {})})
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from hubserver import HubServer

    root = tmp_path_factory.mktemp("web")
    hub = HubServer(root / "hub")
    files = {"config.json": json.dumps(TINY_BERT).encode(), "model.safetensors": _safetensors(8)}
    for repo in (GATED, PUBLIC, RESERVED, SOLO):
        hub.add_repo(repo, files)
    hub.gate(GATED, UPSTREAM_TOKEN)
    hub.start()
    home = root / "store"
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_DISABLE_TELEMETRY": "1"}
    zoo(home, "import", str(_folder(root / "demo1", 4)), "--name", "demo", "--label", "team=search", env=env)
    zoo(home, "import", str(_folder(root / "demo2", 6, HOSTILE)), "--name", "demo", "--description",
        "a card that tries to run script", env=env)
    zoo(home, "tag", "demo@v1", "prod", env=env)
    zoo(home, "import", str(_folder(root / "tuned", 5, "---\nbase_model: demo\n---\n# tuned\n")), "--name", "tuned",
        env=env)
    zoo(home, "pull", PUBLIC, env=env)
    zoo(home, "pull", RESERVED, env=env)
    zoo(home, "pull", f"hf:{SOLO}", env=env)  # a hub id of one part
    zoo(home, "pull", GATED, env={**env, "HF_TOKEN": UPSTREAM_TOKEN})
    zoo(home, "pin", "demo@v1", env=env)
    tokens = root / "tokens"
    tokens.write_text(f"{TOKEN}  alice\n{SCOPED}  bob  read=local/demo\n")
    tokens.chmod(0o600)
    daemon = HttpDaemon(home, upstream=hub.endpoint, args=("--tokens", str(tokens), "--max-size", "10GB"),
                        env={"ZOO_OFFLINE": "1"})
    daemon.start()
    yield daemon
    daemon.stop()
    hub.stop()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(NoRedirect)


def get(site: HttpDaemon, path: str, *, headers: dict | None = None, method: str = "GET",
        data: bytes | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(site.endpoint + path, headers=headers or {}, method=method, data=data)
    try:
        with _OPENER.open(request, timeout=60) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def as_json(site: HttpDaemon, path: str, headers: dict | None = None, *, via: str = "query") -> tuple[int, dict]:
    if via == "query":
        path += ("&" if "?" in path else "?") + "format=json"
    else:
        headers = {**(headers or {}), "Accept": "application/json"}
    status, got, body = get(site, path, headers=headers)
    assert got["content-type"].startswith("application/json"), (path, got)
    return status, json.loads(body)


BEARER = {"Authorization": f"Bearer {TOKEN}"}


def test_home_shows_every_name_as_the_store_does(site):
    truth = {r["name"]: r for r in json.loads(zoo(site.home, "ls", "--json"))}
    assert set(truth) == {"demo", "tuned", PUBLIC, RESERVED, GATED, SOLO}
    for via in ("query", "accept"):
        status, page = as_json(site, "/", BEARER, via=via)
        assert status == 200
        rows = {r["name"]: r for r in page["names"]}
        assert set(rows) == set(truth)
        for name, row in rows.items():
            for key in ("version", "id", "size", "aliases", "model_type", "user", "versions"):
                assert row[key] == truth[name][key], (name, key)
    assert rows["demo"]["aliases"] == {"prod": "v1"} and rows["demo"]["version"] == "v2"
    assert page["quota"]["max_size"] == 10 * 10**9 and page["quota"]["pinned"] == ["local/demo@v1"]
    assert page["quota"]["used"] == site.status()["quota"]["used"] > 0  # what zoo daemon status says
    assert {e["name"] for e in page["events"]} >= {"demo", "tuned"}
    status, _, html = get(site, "/", headers=BEARER)
    text = html.decode()
    assert status == 200
    for name, row in truth.items():
        assert f'data-name="{name}"' in text
        assert f'data-bytes="{row["size"]}"' in text
    assert re.search(r'<time class="ago" datetime="[^"]+" title="\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC">(just now|\d+ min ago)<', text)
    assert 'href="/models/demo"' in text and f'href="/models/{PUBLIC}"' in text
    assert '<span class="alias" title="v1">prod</span>' in text


def test_filters_and_search_box_match_zoo_ls(site):
    for params, flags in ((("label", "team=search"),), ["--label", "team=search"]), \
                         ((("alias", "prod"),), ["--alias", "prod"]), ((("model_type", "bert"),), ["--model-type", "bert"]):
        truth = {r["name"] for r in json.loads(zoo(site.home, "ls", "--json", *flags))}
        _, page = as_json(site, "/?" + urllib.parse.urlencode(params), BEARER)
        assert {r["name"] for r in page["names"]} == truth and truth, params
    _, page = as_json(site, "/?q=TUN", BEARER)
    assert [r["name"] for r in page["names"]] == ["tuned"]
    status, _, html = get(site, "/?q=%3Cscript%3E", headers=BEARER)
    assert status == 200 and b"<script>" not in html.split(b"</head>")[1] and b"&lt;script&gt;" in html


def test_model_page_and_its_twin(site):
    from zoo.store.reader import StoreReader

    versions = StoreReader(site.home).versions("local/demo")
    status, page = as_json(site, "/models/demo", BEARER)
    assert status == 200 and page["repo"] == "local/demo"
    assert [v["version"] for v in page["versions"]] == ["v2", "v1"]
    by_version = {v["version"]: v for v in page["versions"]}
    for v in versions:
        assert (by_version[v.name]["id"], by_version[v.name]["size"]) == (v.id, v.total_size)
    assert by_version["v1"]["aliases"] == ["prod"] and by_version["v1"]["labels"] == {"team": "search"}
    newest = site.home / "hub/models--local--demo/snapshots" / by_version["v2"]["id"]
    assert {f["path"]: f["size"] for f in page["files"]} == {p.name: p.stat().st_size for p in newest.iterdir()}
    assert page["weights"]["tensors"] == 2 and page["weights"]["parameters"] == 36
    assert page["weights"]["dtypes"] == {"F32": 36 * 4, "I64": 16}
    assert page["config"]["model_type"] == "bert" and page["config"]["transformers_version"] == "4.40.0"
    assert page["config"]["advice"]
    assert 'zoo.load("demo@prod")' in page["snippets"]["zoo"]
    assert 'from_pretrained("local/demo", revision="prod")' in page["snippets"]["transformers"]
    assert f"HF_ENDPOINT={site.endpoint}" in page["snippets"]["transformers"]
    assert [d["name"] for d in page["lineage"]["derived"]] == ["tuned"]
    _, tuned = as_json(site, "/models/tuned", BEARER)
    assert [(b["name"], b["url"]) for b in tuned["lineage"]["bases"]] == [("demo", "/models/demo")]
    status, _, html = get(site, "/models/demo", headers=BEARER)
    assert status == 200 and b'<a class="lineage-link" href="/models/tuned">tuned</a>' in html
    assert b'id="tensors">2<' in html and b'id="parameters">36<' in html


def test_version_page_lists_files_with_their_digests(site):
    _, model = as_json(site, "/models/demo", BEARER)
    v1 = {v["version"]: v for v in model["versions"]}["v1"]
    status, page = as_json(site, "/models/demo/-/versions/v1", BEARER)
    assert status == 200 and page["id"] == v1["id"] and page["aliases"] == ["prod"]
    snapshot = site.home / "hub/models--local--demo/snapshots" / v1["id"]
    for f in page["files"]:
        data = (snapshot / f["path"]).read_bytes()
        assert f["sha256"] == hashlib.sha256(data).hexdigest() and f["size"] == len(data)
    status, _, html = get(site, "/models/demo/-/versions/v1", headers=BEARER)
    assert status == 200 and all(f["sha256"].encode() in html for f in page["files"])


def test_history_page_is_zoo_history(site):
    truth = json.loads(zoo(site.home, "history", "demo", "--json"))
    events = truth if isinstance(truth, list) else truth["events"]
    status, page = as_json(site, "/models/demo/-/history", BEARER)
    assert status == 200
    assert [(e["event"], e.get("version"), e["when"]) for e in page["events"]] == \
        [(e["event"], e.get("version"), e["when"]) for e in reversed(events)]
    assert {e["event"] for e in page["events"]} >= {"version_created", "alias_moved"} or len(page["events"]) >= 3
    status, _, html = get(site, "/models/demo/-/history", headers=BEARER)
    assert status == 200 and html.count(b'<tr class="event"') == len(events)


def test_without_a_token_only_public_content_shows(site):
    for headers in ({}, {"Authorization": "Bearer not-a-token-of-this-server-000"}):
        _, page = as_json(site, "/", headers)
        assert {r["name"] for r in page["names"]} == {PUBLIC, RESERVED, SOLO}
        assert page["quota"]["pinned"] == []  # local/demo@v1 is pinned, and hidden
        assert all(e["repo"] in (PUBLIC, RESERVED, SOLO) for e in page["events"])
        _, _, html = get(site, "/", headers=headers)
        assert b"demo" not in html and b"gated-bert" not in html and b"tuned" not in html
        for path in ("/models/demo", "/models/demo/-/versions/v1", "/models/demo/-/history", f"/models/{GATED}",
                     "/models/no-such-name"):
            status, _, body = get(site, path, headers=headers)
            assert status == 401 and b"log in" in body.lower(), path
            assert b"team=search" not in body and b"v2" not in body
        assert get(site, f"/models/{PUBLIC}", headers=headers)[0] == 200
    _, public = as_json(site, f"/models/{PUBLIC}")
    assert public["lineage"] is not None and public["versions"][0]["source"].startswith("hub")


def test_a_scoped_token_sees_its_scope_and_public_content(site):
    scoped = {"Authorization": f"Bearer {SCOPED}"}
    _, page = as_json(site, "/", scoped)
    assert {r["name"] for r in page["names"]} == {"demo", PUBLIC, RESERVED, SOLO}
    assert get(site, "/models/demo", headers=scoped)[0] == 200
    assert get(site, "/models/tuned", headers=scoped)[0] == 401
    assert get(site, f"/models/{GATED}", headers=scoped)[0] == 401
    _, demo = as_json(site, "/models/demo", scoped)
    assert demo["lineage"]["derived"] == []  # tuned, made from demo, is outside the scope


def test_login_sets_a_strict_http_only_cookie_and_logout_ends_it(site):
    status, headers, _ = get(site, "/-/login", method="POST", data=f"token={TOKEN}".encode(),
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"]
    flags = {f.strip().split("=")[0].lower() for f in cookie.split(";")}
    assert {"httponly", "path"} <= flags and "samesite=strict" in cookie.lower().replace(" ", "")
    sid = cookie.split(";")[0]
    assert TOKEN not in cookie
    _, page = as_json(site, "/", {"Cookie": sid})
    assert {r["name"] for r in page["names"]} == {"demo", "tuned", PUBLIC, RESERVED, GATED, SOLO}
    status, _, html = get(site, "/models/demo", headers={"Cookie": sid})
    assert status == 200 and b'id="who">alice<' in html
    # a form posted from another site is refused, with or without a session
    for evil in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        status, headers, _ = get(site, "/-/login", method="POST", data=f"token={TOKEN}".encode(), headers=evil)
        assert status == 403 and "set-cookie" not in headers
    status, headers, _ = get(site, "/-/login", method="POST", data=b"token=wrong-token-000000000000")
    assert status == 401 and "set-cookie" not in headers
    status, headers, _ = get(site, "/-/logout", method="POST", data=b"", headers={"Cookie": sid})
    assert status == 303 and "max-age=0" in headers["set-cookie"].lower()
    _, page = as_json(site, "/", {"Cookie": sid})
    assert {r["name"] for r in page["names"]} == {PUBLIC, RESERVED, SOLO}  # the old session id is dead


def test_hostile_card_is_inert(site):
    status, headers, html = get(site, "/models/demo", headers=BEARER)
    assert status == 200
    card = html.decode().split('<article id="card" class="card">')[1].split("</article>")[0]
    assert "<script" not in card and "<img" not in card and "onerror=" not in card.replace("onerror=&quot;", "")
    assert "&lt;script&gt;" in card and "&lt;img" in card
    assert "javascript:" not in re.findall(r'href="([^"]*)"', card).__str__()
    assert "data:" not in str(re.findall(r'src="([^"]*)"', card))
    assert re.findall(r'href="([^"]*)"', card) == ["https://example.org/docs"]
    assert "script-src 'self'" in headers["content-security-policy"] and headers["x-content-type-options"] == "nosniff"
    # the page's own scripts are its files only: no inline script anywhere
    assert re.findall(rb"<script[^>]*>", html) == []


def test_routes_never_collide_with_the_hub_protocol(site):
    """A hub repository named like the page's reserved segment (acme/models) has its page and its files."""
    status, page = as_json(site, f"/models/{RESERVED}")
    assert status == 200 and page["repo"] == RESERVED
    config = json.dumps(TINY_BERT).encode()
    for path in (f"/{RESERVED}/resolve/main/config.json", f"/models/{RESERVED}/resolve/main/config.json",
                 f"/{PUBLIC}/resolve/main/config.json", f"/models/{PUBLIC}/resolve/main/config.json"):
        status, _, body = get(site, path)
        assert status == 200 and body == config, path
    status, headers, body = get(site, f"/api/models/{PUBLIC}")
    assert status == 200 and json.loads(body)["id"] == PUBLIC
    status, headers, body = get(site, f"/api/models/{GATED}")
    assert status == 401  # the hub route's own rule, untouched
    assert get(site, f"/models/{PUBLIC}/-/history")[0] == 200
    status, page = as_json(site, f"/models/{SOLO}")  # no local/solo-bert: the hub repository of one part
    assert status == 200 and page["repo"] == SOLO
    assert get(site, f"/{SOLO}/resolve/main/config.json")[2] == config


@pytest.mark.parametrize("path,status", [
    ("/models/no-such-name", 404), ("/models/acme/no-such", 404), ("/models/a/b/c", 404),
    ("/models/demo/-/versions/v99", 404), ("/models/demo/-/versions/prod", 404), ("/models/demo/-/nothing", 404),
    ("/models/..%2f..%2fetc", 404), ("/models/%ff", 400), ("/models/a--b", 404), ("/-/nothing", 404),
    ("/-/../../etc/passwd", 404), ("/?label=nokey", 400), ("/?alias=" + "x" * 300, 400), ("/?user=", 200),
])
def test_bad_input_gets_a_page_not_a_traceback(site, path, status):
    got, headers, body = get(site, path, headers=BEARER)
    assert got == status, (path, body[:300])
    assert headers["content-type"].startswith("text/html") and b"Traceback" not in body
    if status != 200:
        assert b'<p id="error"' in body
        got, page = as_json(site, path, BEARER)
        assert got == status and page["error"]


def test_the_page_writes_nothing(site):
    import shutil

    shutil.rmtree(site.home / "tensors", ignore_errors=True)  # records a lineage could write (it must not)
    before = sorted((str(p.relative_to(site.home)), p.stat().st_size) for p in site.home.rglob("*")
                    if p.is_file() and "daemon" not in p.name and not p.name.startswith("used"))
    for method in ("PUT", "DELETE", "PATCH", "POST"):
        for path in ("/", "/models/demo", "/models/demo/-/versions/v1"):
            status, _, _ = get(site, path, method=method, data=b"x", headers=BEARER)
            assert status == 405, (method, path)
    status, _, _ = get(site, "/-/login", method="POST", data=b"token=" + b"a" * 5000)
    assert status == 413
    for path in ("/", "/models/demo", "/models/tuned", "/models/demo/-/history", "/models/demo/-/versions/v2",
                 f"/models/{PUBLIC}", f"/models/{GATED}", "/-/login", "/models/demo?format=json"):
        assert get(site, path, headers=BEARER)[0] == 200
    after = sorted((str(p.relative_to(site.home)), p.stat().st_size) for p in site.home.rglob("*")
                   if p.is_file() and "daemon" not in p.name and not p.name.startswith("used"))
    assert before == after


def test_a_change_to_the_store_shows_on_the_next_request(site, tmp_path):
    """The page keeps what it read while the store is unchanged (zoo.web.cache); a write shows at once."""
    import time

    time.sleep(2.2)  # every mtime older than the cache's racy window: the answers below come from memory
    for _ in range(2):
        _, page = as_json(site, "/", BEARER)
        assert {r["name"]: r for r in page["names"]}["tuned"]["aliases"] == {}
    zoo(site.home, "tag", "tuned", "canary")
    _, page = as_json(site, "/", BEARER)
    assert {r["name"]: r for r in page["names"]}["tuned"]["aliases"] == {"canary": "v1"}
    zoo(site.home, "import", str(_folder(tmp_path / "tuned2", 3)), "--name", "tuned")
    _, page = as_json(site, "/", BEARER)
    assert {r["name"]: r for r in page["names"]}["tuned"]["version"] == "v2"
    _, model = as_json(site, "/models/tuned", BEARER)
    assert [v["version"] for v in model["versions"]] == ["v2", "v1"]


def test_a_slow_page_holds_up_no_download(site, tmp_path):
    """A page is answered on a worker thread: while one takes seconds (the history page of a name with 300,000
    events), a file is sent at once. Its page shows the newest 1,000 events and says so."""
    import threading
    import time

    zoo(site.home, "import", str(_folder(tmp_path / "busy", 3)), "--name", "busy")
    log = site.home / "history" / "models--local--busy.jsonl"
    line = log.read_bytes().splitlines(keepends=True)[0]
    with open(log, "ab") as f:
        f.write(line * 300_000)
    took = {}

    def slow() -> None:
        start = time.perf_counter()
        took["status"] = get(site, "/models/busy/-/history", headers=BEARER)[0]
        took["page"] = time.perf_counter() - start

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.3)  # the page is being made
    start = time.perf_counter()
    status, _, body = get(site, "/local/demo/resolve/main/config.json", headers=BEARER)
    file_took = time.perf_counter() - start
    thread.join(120)
    assert status == 200 and json.loads(body)["model_type"] == "bert"
    assert took["status"] == 200 and took["page"] > 1.0, took  # the page was slow enough to be in the way
    assert file_took < 0.5 and file_took < took["page"] / 3, (file_took, took)
    _, page = as_json(site, "/models/busy/-/history", BEARER)
    assert page["total"] == 300_001 and len(page["events"]) == 1000
