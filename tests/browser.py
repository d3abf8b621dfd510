"""A real headless browser and a real ``zoo daemon --http`` serving a store built for it; no pytest here.

The browser is Debian's ``chromium`` driven by Debian's ``chromedriver`` (``.ci/run`` installs both), both named
by path: Selenium Manager (which would download a driver or a browser) is never run. ``SE_OFFLINE`` keeps it
offline should anything reach it, and ``SE_MANAGER_PATH`` points at a trap that records any call, so a test
can assert it never ran (``manager_calls``).

``build_store(home, models)`` makes, through zoo's own doors (``zoo.save``, ``zoo import``, ``zoo tag``,
``zoo label`` in fresh processes), a store with tiny BERTs, aliases, labels, a fine-tune of a base and a hostile
model card. ``SlowUpstream`` stands between the daemon and a test hub and sends one chosen file slowly, so
a pull is still running while a page is looked at.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
_QUIET = ("OptimizationHints", "MediaRouter", "DialMediaRouteProvider", "Translate", "AutofillServerCommunication",
          "NetworkTimeServiceQuerying", "CertificateTransparencyComponentUpdater", "InterestFeedContentSuggestions")
LAPTOP = (1280, 800)
PHONE = (390, 844)  # a phone's CSS pixels (iPhone 12-15)

TINY = {"model_type": "bert", "vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 37, "max_position_embeddings": 64, "type_vocab_size": 2}

HOSTILE_CARD = """\
---
license: apache-2.0
---
# Hostile card

<script>window.__pwned = 1; alert("pwned")</script>
<img src="x" onerror="window.__pwned = 2">
<a href="javascript:window.__pwned=3" id="raw-js">raw javascript link</a>

A [javascript link](javascript:window.__pwned=4) and an [ordinary one](https://example.org/).

<iframe src="javascript:window.parent.__pwned=5"></iframe>
"""

HOSTILE_DESCRIPTION = '<img src=x onerror="window.__pwned=6"><script>window.__pwned=7</script>'
HOSTILE_LABEL = '<svg/onload=window.__pwned=8>'


def available() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is missing: apt-get install -y chromium chromium-driver (what .ci/run does)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is missing: pip install -e '.[test]'"
    return None


def manager_trap(folder: Path) -> Path:
    """A stand-in for Selenium Manager that records that it was run and fails; its record is ``trap.calls``."""
    folder.mkdir(parents=True, exist_ok=True)
    trap = folder / "selenium-manager"
    trap.write_text(f"#!/bin/sh\necho \"$@\" >> {folder / 'calls'}\nexit 1\n")
    trap.chmod(0o755)
    return trap


def manager_calls(folder: Path) -> str:
    calls = folder / "calls"
    return calls.read_text() if calls.exists() else ""


def chromium(size: tuple[int, int] = LAPTOP, *, mobile: bool = False):
    """A new headless chromium session of ``size`` CSS pixels (``mobile``: a phone's user agent and touch)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--metrics-recording-only", "--hide-scrollbars", "--force-device-scale-factor=1",
                "--no-pings", "--disable-default-apps", "--disable-domain-reliability",
                "--disable-client-side-phishing-detection", "--disable-features=" + ",".join(_QUIET),
                # nothing leaves the machine: no name but the test's resolves, and any other fetch would go to a
                # closed local port (Google's sign-in, update and time services are asked for otherwise)
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
                "--proxy-server=http://127.0.0.1:9",  # loopback bypasses a proxy: the tests reach the daemon
                f"--window-size={size[0]},{size[1]}"):
        options.add_argument(arg)
    if mobile:
        options.add_experimental_option("mobileEmulation", {
            "deviceMetrics": {"width": size[0], "height": size[1], "pixelRatio": 1.0, "touch": True},
            "userAgent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
                         "Chrome/150.0 Mobile Safari/537.36"})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=subprocess.DEVNULL)
    driver = webdriver.Chrome(service=service, options=options)
    if not mobile:  # the viewport itself is size (--window-size counts the window, not the page)
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": False})
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


def zoo_cli(*args: str, home: Path, timeout: int = 180, env: dict | None = None) -> str:
    env = {**os.environ, "ZOO_HOME": str(home), **(env or {})}
    out = subprocess.run([sys.executable, "-m", "zoo", "-q", *args], capture_output=True, text=True, env=env,
                         timeout=timeout)
    assert out.returncode == 0, f"zoo {' '.join(args)}: rc {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out.stdout


def build_store(home: Path, scratch: Path) -> dict:
    """The store the browser tests look at, made through zoo's doors; returns what they should see:

    - ``base-bert``: v1 (alias ``prod``) and v2 (labels task=ner, team=search; alias ``latest-good``)
    - ``ft-bert``: v1, ``zoo.save`` of ``zoo.load("base-bert@prod")`` (its base: base-bert@v1), description set
    - ``hostile``: v1, ``zoo import`` of a folder whose README.md is ``HOSTILE_CARD`` (a wider BERT: larger),
      with markup in its description and a label
    """
    home.mkdir(parents=True, exist_ok=True)
    hostile = scratch / "hostile"
    code = f"""
        import torch, zoo
        torch.manual_seed(1)
        zoo.save(zoo.build({TINY!r}), "base-bert", description="the base, seed 1")
        torch.manual_seed(2)
        zoo.save(zoo.build({TINY!r}), "base-bert", description="the base, seed 2",
                 labels={{"task": "ner", "team": "search"}})
        model = zoo.load("base-bert@v1")
        with torch.no_grad():
            next(model.parameters()).add_(1.0)
        zoo.save(model, "ft-bert", description="base-bert v1 with one tensor tuned")
        torch.manual_seed(3)
        zoo.save(zoo.build({{**{TINY!r}, "hidden_size": 128, "intermediate_size": 256}}), {str(hostile)!r})
    """
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         env={**os.environ, "ZOO_HOME": str(home)}, timeout=300)
    assert out.returncode == 0, out.stderr
    (hostile / "README.md").write_text(HOSTILE_CARD)
    zoo_cli("import", str(hostile), "--name", "hostile", "--description", HOSTILE_DESCRIPTION,
            "--label", f"note={HOSTILE_LABEL}", home=home)
    zoo_cli("tag", "base-bert@v1", "prod", home=home)
    zoo_cli("tag", "base-bert@v2", "latest-good", home=home)
    rows = json.loads(zoo_cli("ls", "--json", home=home))
    return {"rows": rows, "names": sorted({r["name"] for r in rows} if rows and "name" in rows[0] else [])}


def write_tokens(path: Path, token: str, name: str = "alice") -> Path:
    path.write_text(f"{token}  {name}\n")
    path.chmod(0o600)
    return path


def no_horizontal_overflow(driver) -> list[str]:
    """What sticks out to the right of the viewport (tag#id.class and its right edge), and whether the page
    scrolls sideways; empty when nothing does."""
    return driver.execute_script("""
        const width = document.documentElement.clientWidth, out = [];
        if (document.documentElement.scrollWidth > width + 1)
            out.push('page scrollWidth ' + document.documentElement.scrollWidth + ' > ' + width);
        for (const el of document.body.querySelectorAll('*')) {
            const r = el.getBoundingClientRect();
            if (r.width === 0 || r.height === 0) continue;
            let clipped = false;  // inside a box that scrolls or clips: its own overflow is allowed
            for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
                const s = getComputedStyle(p);
                if (['auto', 'scroll', 'hidden', 'clip'].includes(s.overflowX)) { clipped = true; break; }
            }
            if (!clipped && r.right > width + 1)
                out.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
                         (typeof el.className === 'string' && el.className ?
                          '.' + el.className.split(' ').join('.') : '') +
                         ' right=' + Math.round(r.right));
        }
        return out.slice(0, 20);
    """)

