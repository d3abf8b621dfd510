"""The web page in a real browser: Debian's headless chromium (selenium, chromedriver by path) against a real
``zoo daemon --http --tokens`` serving a store these tests build through zoo's doors.

What a person sees is checked against the store itself (``zoo ls --json``, the files on disk): names, newest
versions, aliases, sizes in human units, a pull's progress while the upstream is still sending; links are
followed, not typed; ``local/`` and gated names are hidden from a browser without a token and shown after logging
in through the form, whose cookie scripts cannot read; a hostile model card, description or label runs nothing; a
phone-sized window does not scroll sideways. ``docs/screenshots.py`` (the README's pictures) still works.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import browser
from http_daemon import HttpDaemon
from hubserver import SlowUpstream

pytestmark = pytest.mark.slow

TOKEN = "Zq3cW0rkSh0pT0ken-for-the-browser-tests-0123456789"
PULLED = "sentence-transformers/all-MiniLM-L6-v2"
GATED = "zoo-browser-tests/gated-bert"  # a repository of the session's test hub that only these tests use
UPSTREAM_TOKEN = "hf_upstream-token-of-someone-who-accepted-the-terms"
_SIZE = re.compile(r"(\d+(?:[.,]\d+)?)\s*(B|kB|KB|KiB|MB|MiB|GB|GiB)\b")
_FACTORS = {"B": (1,), "kB": (1e3,), "KB": (1e3, 1024), "KiB": (1024,), "MB": (1e6, 1 << 20), "MiB": (1 << 20,),
            "GB": (1e9, 1 << 30), "GiB": (1 << 30,)}


@pytest.fixture(scope="module")
def manager(tmp_path_factory):
    """Selenium Manager replaced by a trap for the whole module, and told to stay offline besides."""
    why = browser.available()
    assert why is None, why
    folder = tmp_path_factory.mktemp("selenium-manager")
    saved = {k: os.environ.get(k) for k in ("SE_OFFLINE", "SE_MANAGER_PATH")}
    os.environ.update(SE_OFFLINE="true", SE_MANAGER_PATH=str(browser.manager_trap(folder)))
    yield folder
    for key, value in saved.items():
        os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


@pytest.fixture(scope="module")
def laptop(manager):
    driver = browser.chromium(browser.LAPTOP)
    yield driver
    driver.quit()


@pytest.fixture
def page(laptop, site):
    """The laptop browser, logged out, with nothing left from the test before."""
    laptop.get(site.daemon.endpoint + "/")
    laptop.delete_all_cookies()
    yield laptop
    laptop.delete_all_cookies()


@pytest.fixture(scope="module")
def site(tmp_path_factory, hub):
    """The store (see browser.build_store), served by ``zoo daemon --http`` with a tokens file, whose upstream
    is the test hub behind a SlowUpstream."""
    root = tmp_path_factory.mktemp("site")
    store = browser.build_store(root / "store", root)
    # a gated hub repository, pulled with the upstream token of someone who accepted its terms
    tiny = root / "gated-files"
    subprocess.run([sys.executable, "-c", f"import zoo; zoo.save(zoo.build({browser.TINY!r}), {str(tiny)!r})"],
                   check=True, timeout=300)
    hub.add_repo(GATED, {p.name: p for p in tiny.iterdir()})
    hub.gate(GATED, UPSTREAM_TOKEN)
    browser.zoo_cli("pull", GATED, home=root / "store", env={"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": UPSTREAM_TOKEN})
    tokens = browser.write_tokens(root / "tokens", TOKEN)
    with SlowUpstream(hub.endpoint, match=None) as upstream:
        with HttpDaemon(root / "store", upstream=upstream.endpoint, args=("--tokens", str(tokens))) as daemon:
            yield SimpleNamespace(home=root / "store", daemon=daemon, upstream=upstream, **store)


def login(driver, site) -> None:
    """Log in as a person does: the home page's "Log in" link, the token typed into the form, sent."""
    from selenium.webdriver.common.by import By

    driver.get(site.daemon.endpoint + "/")
    driver.find_element(By.ID, "login-link").click()
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "form#login-form input#token"), "no login form")
    driver.find_element(By.CSS_SELECTOR, "form#login-form input#token").send_keys(TOKEN)
    driver.find_element(By.ID, "login-submit").click()
    wait(driver, lambda d: d.find_elements(By.ID, "who"), "the login form did not log in")


def wait(driver, condition, message: str, timeout: float = 20):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition, message)


def link_to(driver, name: str, where: str = "#names td.name"):
    """The first visible link to NAME's page (``/models/.../NAME``) in ``where`` (default: the home page's table;
    "" for anywhere on the page)."""
    from selenium.webdriver.common.by import By

    links = [a for a in driver.find_elements(By.CSS_SELECTOR, f"{where} a[href*='/models/'][href$='/{name}']".strip())
             if a.is_displayed()]
    assert links, f"no visible link to {name}'s page on {driver.current_url}:\n{body_text(driver)}"
    return links[0]


def row_of(element):
    """The table row (or list item, or card) an element is in."""
    from selenium.webdriver.common.by import By

    return element.find_element(By.XPATH, "ancestor::*[self::tr or self::li or self::article][1]")


def shows_size(text: str, size: int) -> bool:
    """Whether ``text`` has ``size`` bytes in human units (kB or KiB alike), to the precision shown."""
    for number, unit in _SIZE.findall(text):
        value = float(number.replace(",", "."))
        decimals = len(number.partition(".")[2] or number.partition(",")[2])
        for factor in _FACTORS[unit]:
            if abs(value * factor - size) <= max(0.03 * size, 0.5 * 10 ** -decimals * factor):
                return True
    return False


def body_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def test_the_home_page_shows_every_name_with_its_newest_version_aliases_type_and_size(page, site):
    login(page, site)
    page.get(site.daemon.endpoint + "/")
    assert site.rows and {r["name"] for r in site.rows} == {"base-bert", "ft-bert", "hostile"}
    for row in site.rows:
        text = row_of(link_to(page, row["name"])).text
        assert re.search(rf"\b{row['version']}\b", text), (row["name"], row["version"], text)
        for alias in row["aliases"]:
            assert alias in text, (row["name"], alias, text)
        assert row["model_type"] in text, text
        assert shows_size(text, row["size"]), (row["name"], row["size"], text)
    sizes = {r["name"]: r["size"] for r in site.rows}
    assert sizes["hostile"] > 3 * sizes["base-bert"]  # the sizes differ enough that a swapped column fails
    assert not shows_size(row_of(link_to(page, "base-bert")).text, sizes["hostile"])
    # times read as "3 h ago", with the exact time on hover
    row = row_of(link_to(page, "base-bert"))
    assert re.search(r"\bago\b|\bjust now\b", row.text), row.text
    titled = [e.get_attribute("title") for e in row.find_elements("css selector", "[title]")]
    assert any(re.search(r"\d{4}-\d\d-\d\d.*\d\d:\d\d", t or "") for t in titled), titled


def weights_of(path: Path) -> tuple[int, int]:
    """Tensors and parameters of a safetensors file, from its header (no tensor read)."""
    header = json.loads(path.read_bytes()[8:8 + int.from_bytes(path.read_bytes()[:8], "little")])
    shapes = [v["shape"] for k, v in header.items() if k != "__metadata__"]
    return len(shapes), sum(math.prod(s) for s in shapes)


def test_links_lead_from_the_home_page_to_a_model_page_its_versions_and_its_lineage(page, site):
    from selenium.webdriver.common.by import By

    login(page, site)
    page.get(site.daemon.endpoint + "/")
    link_to(page, "base-bert").click()
    wait(page, lambda d: d.current_url.rstrip("/").endswith("/base-bert"), "the link did not open base-bert's page")
    refs = site.home / "hub/models--local--base-bert/refs"
    ids = {v: (refs / v).read_text().strip() for v in ("v1", "v2")}
    rows = {r.get_attribute("data-version"): r for r in page.find_elements(By.CSS_SELECTOR, "#versions tr.version-row")}
    assert set(rows) == {"v1", "v2"}
    for v, row in rows.items():
        assert row.find_element(By.CSS_SELECTOR, "td.id code").get_attribute("title") == ids[v]
        assert ids[v][:7] in row.find_element(By.CSS_SELECTOR, "td.id").text
    assert [a.text for a in rows["v1"].find_elements(By.CSS_SELECTOR, "td.aliases .alias")] == ["prod"]
    assert [a.text for a in rows["v2"].find_elements(By.CSS_SELECTOR, "td.aliases .alias")] == ["latest-good"]
    labels = {e.text for e in rows["v2"].find_elements(By.CSS_SELECTOR, "td.labels .label")}
    assert labels == {"task=ner", "team=search"}
    assert rows["v1"].find_elements(By.CSS_SELECTOR, "td.labels .label") == []
    newest = site.home / "hub/models--local--base-bert/snapshots" / ids["v2"]
    for f in page.find_elements(By.CSS_SELECTOR, "#files tr.file"):
        path = f.get_attribute("data-path")
        assert shows_size(f.find_element(By.CSS_SELECTOR, "td.size").text, (newest / path).stat().st_size), path
    assert {f.get_attribute("data-path") for f in page.find_elements(By.CSS_SELECTOR, "#files tr.file")} == \
        {p.name for p in newest.iterdir()}
    tensors, parameters = weights_of(newest / "model.safetensors")
    assert int(re.sub(r"\D", "", page.find_element(By.ID, "tensors").text)) == tensors
    assert int(re.sub(r"\D", "", page.find_element(By.ID, "parameters").text)) == parameters
    snippet = page.find_element(By.ID, "snippet-zoo").text
    assert re.search(r"""zoo\.load\(["']base-bert@(latest-good|prod|v2)["']\)""", snippet), snippet
    text = page.find_element(By.ID, "snippets").text
    assert "HF_ENDPOINT" in text and "from_pretrained" in text and site.daemon.endpoint in text, text
    # the fine-tune below, as a link
    derived = page.find_elements(By.CSS_SELECTOR, "#lineage #derived a.lineage-link")
    assert [a.get_attribute("href").rstrip("/").rsplit("/", 1)[1] for a in derived] == ["ft-bert"]

    rows["v1"].find_element(By.CSS_SELECTOR, "td.number a").click()
    wait(page, lambda d: d.current_url.endswith("/-/versions/v1"), "the version link did not open v1's page")
    assert page.find_element(By.ID, "title").get_attribute("data-version") == "v1"
    snapshot = site.home / "hub/models--local--base-bert/snapshots" / ids["v1"]
    files = {f.get_attribute("data-path"): f for f in page.find_elements(By.CSS_SELECTOR, "#files tr.file")}
    assert set(files) == {p.name for p in snapshot.iterdir()}
    for name, row in files.items():
        digest = hashlib.sha256((snapshot / name).read_bytes()).hexdigest()
        assert row.find_element(By.CSS_SELECTOR, "td.sha256").text.strip() == digest, name
        assert shows_size(row.find_element(By.CSS_SELECTOR, "td.size").text, (snapshot / name).stat().st_size)
    assert ids["v1"] in page.find_element(By.ID, "manifest").text

    page.get(site.daemon.endpoint + "/")
    link_to(page, "ft-bert").click()
    wait(page, lambda d: d.current_url.rstrip("/").endswith("/ft-bert"), "the link did not open ft-bert's page")
    bases = page.find_elements(By.CSS_SELECTOR, "#lineage #bases a.lineage-link")
    assert len(bases) == 1 and "@v1" in page.find_element(By.ID, "bases").text, page.find_element(By.ID, "lineage").text
    bases[0].click()
    wait(page, lambda d: d.current_url.rstrip("/").endswith("/base-bert"), "the lineage link did not open the base")
    assert page.find_element(By.ID, "title").get_attribute("data-repo") == "local/base-bert"


def names_listed(driver) -> set[str]:
    from selenium.webdriver.common.by import By

    return {a.get_attribute("href").rstrip("/").rsplit("/", 1)[1]
            for a in driver.find_elements(By.CSS_SELECTOR, "#names td.name a[href*='/models/']")}


def test_the_search_form_and_its_filters_narrow_the_home_page_through_the_query_string(page, site):
    from selenium.webdriver.common.by import By

    login(page, site)
    page.get(site.daemon.endpoint + "/")
    assert names_listed(page) == {"base-bert", "ft-bert", "hostile", "gated-bert"}
    box = page.find_element(By.CSS_SELECTOR, "form#search input[name=q]")
    box.send_keys("ft-bert")
    box.submit()
    wait(page, lambda d: "q=ft-bert" in d.current_url, "the search form did not send a query string")
    assert names_listed(page) == {"ft-bert"}
    # the same query string without JavaScript gives the same answer (the form needs none)
    url = page.current_url
    page.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
    try:
        page.get(url)
        assert names_listed(page) == {"ft-bert"}
    finally:
        page.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})

    for field, value, want in (("label", "task=ner", {"base-bert"}), ("alias", "prod", {"base-bert"}),
                               ("model_type", "bert", {"base-bert", "ft-bert", "hostile", "gated-bert"}),
                               ("model_type", "gpt2", set())):
        page.get(site.daemon.endpoint + "/")
        page.find_element(By.CSS_SELECTOR, f"form#search input[name={field}]").send_keys(value)
        page.find_element(By.CSS_SELECTOR, "form#search button[type=submit]").click()
        wait(page, lambda d: f"{field}=" in d.current_url, f"the {field} filter was not sent")
        assert names_listed(page) == want, (field, value)
        if not want:
            assert "No name matches" in page.find_element(By.ID, "names").text


def test_every_page_reads_without_javascript(page, site):
    """Scripts off in the browser: the pages are whole as the server sends them (live.js is only for progress)."""
    from selenium.webdriver.common.by import By

    login(page, site)
    page.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
    try:
        page.get("data:text/html,<title>off</title><script>document.title = 'ran'</script>")
        assert page.title == "off"  # the switch works: a page's own scripts do not run
        page.get(site.daemon.endpoint + "/")
        assert names_listed(page) >= {"base-bert", "ft-bert", "hostile"}
        link_to(page, "base-bert").click()
        wait(page, lambda d: d.current_url.rstrip("/").endswith("/base-bert"), "no model page")
        assert len(page.find_elements(By.CSS_SELECTOR, "#versions tr.version-row")) == 2
        assert page.find_elements(By.CSS_SELECTOR, "#lineage #derived a.lineage-link")
        page.find_element(By.CSS_SELECTOR, "#versions tr.version-row[data-version=v2] td.number a").click()
        wait(page, lambda d: d.current_url.endswith("/-/versions/v2"), "no version page")
        assert {f.get_attribute("data-path") for f in page.find_elements(By.CSS_SELECTOR, "#files tr.file")} >= \
            {"config.json", "model.safetensors"}
        page.back()
        page.find_element(By.ID, "history-link").click()
        wait(page, lambda d: d.current_url.endswith("/-/history"), "no history page")
        assert len(page.find_elements(By.CSS_SELECTOR, "#history tr.event")) == 5
    finally:
        page.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})


def test_local_and_gated_names_are_hidden_without_a_token_and_shown_after_logging_in(page, site):
    from selenium.webdriver.common.by import By

    login(page, site)
    page.get(site.daemon.endpoint + "/")
    hrefs = {name: link_to(page, name).get_attribute("href") for name in ("base-bert", "hostile", "gated-bert")}
    assert hrefs["gated-bert"].endswith("/models/" + GATED)
    assert "gated" in row_of(link_to(page, "gated-bert")).text  # marked as such
    cookies = page.get_cookies()
    assert cookies, "logging in set no cookie"
    assert all(c.get("httpOnly") for c in cookies), cookies
    assert all(c.get("sameSite") in ("Strict", "Lax") for c in cookies), cookies
    assert TOKEN not in page.execute_script("return document.cookie")
    assert not any(TOKEN in c["value"] for c in cookies)  # the cookie is not the token itself

    page.delete_all_cookies()  # the same browser without its cookie: a person without a token
    page.get(site.daemon.endpoint + "/")
    source = page.page_source
    for name in ("base-bert", "ft-bert", "hostile", "gated-bert"):
        assert name not in source, name
    for href in hrefs.values():
        page.get(href)
        assert "prod" not in body_text(page) and "Hostile card" not in body_text(page), href
        path = href.removeprefix(site.daemon.endpoint)
        assert site.daemon.get(path)[0] in (401, 403, 404), path
        assert site.daemon.get(path + "?format=json")[0] in (401, 403, 404), path
    status, _, body = site.daemon.get("/?format=json")
    assert status == 200 and b"base-bert" not in body and b"hostile" not in body and b"gated-bert" not in body
    status, _, body = site.daemon.get("/?format=json", headers={"Authorization": "Bearer not-a-token"})
    assert b"base-bert" not in body

    # a bearer header is the way in for scripts; the form, for people
    status, _, body = site.daemon.get("/?format=json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and b"base-bert" in body and b"gated-bert" in body
    login(page, site)
    page.get(hrefs["base-bert"])
    assert "prod" in body_text(page)
    page.get(hrefs["gated-bert"])
    assert page.find_element(By.ID, "title").get_attribute("data-repo") == GATED


def assert_inert(page) -> None:
    """Nothing the store's content carried ran on this page, and nothing is left that would on a click."""
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    time.sleep(0.3)  # give a script that got through the time to run
    with pytest.raises(NoAlertPresentException):
        page.switch_to.alert.text
    assert page.execute_script("return window.__pwned === undefined"), page.current_url
    assert page.find_elements(By.CSS_SELECTOR, "iframe, object, embed, svg[onload], img[onerror]") == []
    scripts = [s.get_attribute("innerHTML") + (s.get_attribute("src") or "")
               for s in page.find_elements(By.TAG_NAME, "script")]
    assert not any("__pwned" in s for s in scripts), scripts
    for a in page.find_elements(By.TAG_NAME, "a"):
        href = (a.get_attribute("href") or "").strip().lower()
        assert not href.startswith(("javascript:", "data:", "vbscript:")), a.get_attribute("outerHTML")
    handlers = page.execute_script("""
        return [...document.querySelectorAll('*')].flatMap(e => [...e.attributes]
            .filter(a => a.name.startsWith('on')).map(a => e.tagName + ' ' + a.name + '=' + a.value));""")
    assert handlers == [], handlers
    console = [e for e in page.get_log("browser") if "__pwned" in e.get("message", "")]
    assert not console, console


def test_a_hostile_model_card_description_and_label_are_inert_on_every_page(page, site):
    from selenium.webdriver.common.by import By

    login(page, site)
    page.get(site.daemon.endpoint + "/")
    assert_inert(page)
    row = page.find_element(By.CSS_SELECTOR, "#names tr.name-row[data-name$='hostile']")
    assert browser.HOSTILE_DESCRIPTION in row.text  # the markup is shown as text
    link_to(page, "hostile").click()
    wait(page, lambda d: d.current_url.rstrip("/").endswith("/hostile"), "the link did not open hostile's page")
    assert_inert(page)
    card = page.find_element(By.ID, "card")
    assert card.find_element(By.TAG_NAME, "h1").text == "Hostile card"  # the Markdown is rendered,
    assert "<script>" in card.text  # its raw HTML shown as text, not run
    assert [a.get_attribute("href") for a in card.find_elements(By.PARTIAL_LINK_TEXT, "ordinary one")] == \
        ["https://example.org/"]  # an ordinary link stays a link
    assert f"note={browser.HOSTILE_LABEL}" in page.find_element(By.ID, "versions").text
    for a in card.find_elements(By.XPATH, ".//a[contains(., 'javascript link')]"):
        a.click()  # what is left of the javascript: links runs nothing either
        assert page.execute_script("return window.__pwned === undefined")
    page.find_element(By.ID, "history-link").click()
    wait(page, lambda d: d.current_url.endswith("/-/history"), "no history page")
    assert_inert(page)
    page.find_element(By.CSS_SELECTOR, "#history td.version a").click()
    wait(page, lambda d: "/-/versions/" in d.current_url, "no version page")
    assert_inert(page)
    assert browser.HOSTILE_DESCRIPTION in page.find_element(By.ID, "manifest").text


def test_the_history_page_lists_the_names_events_newest_first(page, site):
    from selenium.webdriver.common.by import By

    login(page, site)
    page.get(site.daemon.endpoint + "/")
    link_to(page, "base-bert").click()
    page.find_element(By.ID, "history-link").click()
    wait(page, lambda d: d.current_url.endswith("/base-bert/-/history"), "the history link did not open the history")
    events = json.loads(browser.zoo_cli("history", "base-bert", "--json", home=site.home))
    rows = page.find_elements(By.CSS_SELECTOR, "#history tr.event")
    assert [r.get_attribute("data-event") for r in rows] == [e["event"] for e in reversed(events)]
    shown = [(r.find_element(By.CSS_SELECTOR, "td.version").text, r.find_element(By.CSS_SELECTOR, "td.detail").text)
             for r in rows]
    for (version, detail), event in zip(shown, reversed(events)):
        assert version == (event.get("version") or "-"), (version, event)
        if event.get("alias"):
            assert event["alias"] in detail, (detail, event)
    assert len(rows) == 5  # v1, v2 made; v2 labelled; prod and latest-good set


def progress_of(driver, what: str) -> tuple[int, int] | None:
    """(done, total) of the job in flight for ``what`` as the page shows it now, or None."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        for job in driver.find_elements(By.CSS_SELECTOR, "#jobs tr.job"):
            bars = job.find_elements(By.CSS_SELECTOR, "progress.job-progress")
            if what in (job.get_attribute("data-what") or "") and bars:
                return int(bars[0].get_attribute("value")), int(bars[0].get_attribute("max"))
    except StaleElementReferenceException:  # live.js redrew the table meanwhile
        return progress_of(driver, what)
    return None


def test_a_pull_in_flight_shows_on_the_home_page_with_its_progress(page, site, minilm_dir):
    from selenium.webdriver.common.by import By

    weights = (minilm_dir / "model.safetensors").stat().st_size
    login(page, site)  # a repository whose access is not yet recorded is shown to token holders only
    site.upstream.match, site.upstream.rate = "model.safetensors", 5 << 20  # 90 MB: about 17 s
    env = {**os.environ, "ZOO_HOME": str(site.home)}  # zoo pull through the daemon, which asks the upstream
    pull = subprocess.Popen([sys.executable, "-m", "zoo", "-q", "pull", PULLED], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        seen: list[tuple[int, int, str]] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and pull.poll() is None and len(seen) < 2:
            page.get(site.daemon.endpoint + "/")  # a reload each time: the page needs no script to be read
            for job in page.find_elements(By.CSS_SELECTOR, "#jobs tr.job"):
                if PULLED in (job.get_attribute("data-what") or "") and (shown := progress_of(page, PULLED)):
                    done, total = shown
                    if 0 < done < total and (not seen or done > seen[-1][0]):
                        seen.append((done, total, job.text))
            time.sleep(0.5)
        assert not site.upstream.finished, "the upstream had finished before the page showed the pull twice"
        assert len(seen) >= 2, f"the page did not show the pull advancing: {seen}"
        # with scripts on, the page follows the pull by itself (live.js): no reload from here on
        page.get(site.daemon.endpoint + "/")
        first = progress_of(page, PULLED)
        assert first is not None
        wait(page, lambda d: (p := progress_of(d, PULLED)) is not None and p[0] > first[0],
             "the page did not follow the pull by itself", timeout=10)
        assert not site.upstream.finished, "the upstream finished before the page moved by itself"
        for done, total, text in seen:
            assert total >= weights, (total, weights)  # the weights' bytes at least (the whole pull, or the file)
            assert shows_size(text, done) and shows_size(text, total), (done, total, text)
        assert pull.wait(180) == 0, pull.stderr.read()
        wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, "#jobs-table tr.empty"),
             "the page still shows the finished pull (live.js)", timeout=15)
    finally:
        if pull.poll() is None:
            pull.kill()
            pull.wait(30)
        site.upstream.match = None
    page.delete_all_cookies()
    page.get(site.daemon.endpoint + "/")  # done: no longer in flight, and a public name anyone sees
    assert not [j for j in page.find_elements(By.CSS_SELECTOR, "#jobs tr.job")
                if PULLED in (j.get_attribute("data-what") or "")]
    assert link_to(page, "all-MiniLM-L6-v2")


def test_a_phone_sized_window_does_not_scroll_sideways(manager, site):
    phone = browser.chromium(browser.PHONE, mobile=True)
    try:
        login(phone, site)
        phone.get(site.daemon.endpoint + "/")
        models = [link_to(phone, name).get_attribute("href") for name in ("base-bert", "hostile")]
        pages = [phone.current_url, *models, models[0] + "/-/versions/v1", models[0] + "/-/history",
                 site.daemon.endpoint + "/models/no-such-name"]  # an error page too
        for path in pages:
            phone.get(path)
            assert browser.no_horizontal_overflow(phone) == [], path
            # a phone lays a page out 980 px wide without <meta name=viewport>, and wider than the screen
            # (zoomed out, unreadable) when something is wider than it
            assert phone.execute_script("return window.innerWidth") == browser.PHONE[0], path
    finally:
        phone.quit()


def test_the_browser_is_debians_and_selenium_manager_never_ran(laptop, manager):
    version = subprocess.run([str(browser.CHROMIUM), "--version"], capture_output=True, text=True).stdout
    assert laptop.capabilities["browserVersion"] in version
    assert browser.manager_calls(manager) == ""


def test_the_readmes_screenshots_are_made_by_docs_screenshots_py(tmp_path, manager):
    """docs/home.png and docs/model.png come from this script: it still runs, and makes 1280x800 pictures."""
    script = Path(__file__).resolve().parents[2] / "docs" / "screenshots.py"
    out = subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    for name in ("home.png", "model.png"):
        png = (tmp_path / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
        assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == browser.LAPTOP
        assert 20_000 < len(png) < 400_000, (name, len(png))  # a page, not a blank or a huge picture
    assert browser.manager_calls(manager) == ""

