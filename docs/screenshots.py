"""Make docs/home.png and docs/model.png: the web page of a small store, as Debian's headless chromium shows it.

    python docs/screenshots.py               # from the repository root, with the test extra installed
    python docs/screenshots.py --out DIR     # elsewhere (the browser tests check that it works)

It builds a store through zoo's own doors (zoo.save, zoo import with a model card, zoo tag, zoo label), starts
``zoo daemon --http`` on loopback over it, and photographs the home page and a model page at 1280x800, with the
browser tests' own driver (tests/browser.py: /usr/bin/chromium and /usr/bin/chromedriver, nothing downloaded).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import browser  # noqa: E402
from http_daemon import HttpDaemon  # noqa: E402

CARD = """\
---
license: apache-2.0
base_model: local/bert-base
---
# ner-bert

`bert-base@prod` fine-tuned for named entities on the search team's queries.

| split | F1 |
|-------|----|
| dev   | 0.91 |
| test  | 0.89 |

Load it with `zoo.load("ner-bert@prod")`.
"""


def build(home: Path, scratch: Path) -> None:
    env = {**os.environ, "ZOO_HOME": str(home), "PYTHONPATH": str(ROOT)}
    tiny = browser.TINY
    code = f"""
        import torch, zoo
        for seed in (1, 2):
            torch.manual_seed(seed)
            zoo.save(zoo.build({tiny!r}), "bert-base", description=f"pretrained, run {{seed}}")
        model = zoo.load("bert-base@v2")
        with torch.no_grad():
            next(model.parameters()).add_(0.01)
        zoo.save(model, {str(scratch / "ner-bert")!r})
        torch.manual_seed(7)
        zoo.save(zoo.build({{**{tiny!r}, "hidden_size": 128, "intermediate_size": 512}}), "intent-classifier",
                 description="support-ticket intents", labels={{"task": "classification", "team": "support"}})
    """
    subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, check=True, timeout=300)
    (scratch / "ner-bert" / "README.md").write_text(CARD)
    zoo = lambda *args: subprocess.run([sys.executable, "-m", "zoo", "-q", *args], env=env, check=True, timeout=120)
    zoo("tag", "bert-base@v1", "prod")
    zoo("tag", "bert-base@v2", "staging")
    zoo("import", str(scratch / "ner-bert"), "--name", "ner-bert",
        "--description", "fine-tuned for named entities", "--label", "task=ner", "--label", "team=search")
    zoo("tag", "ner-bert", "prod")


def main() -> None:
    parser = argparse.ArgumentParser(description="photograph the web page of a small store")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where home.png and model.png go")
    out_dir = parser.parse_args().out
    why = browser.available()
    if why:
        raise SystemExit(f"screenshots: {why}")
    os.environ.setdefault("SE_OFFLINE", "true")
    with tempfile.TemporaryDirectory() as tmp:
        home, scratch = Path(tmp) / "store", Path(tmp) / "runs"
        scratch.mkdir()
        build(home, scratch)
        with HttpDaemon(home, env={"PYTHONPATH": str(ROOT)}) as daemon:
            driver = browser.chromium(browser.LAPTOP)
            try:
                for path, out in (("/", "home.png"), ("/models/ner-bert", "model.png")):
                    driver.get(daemon.endpoint + path)
                    target = out_dir / out
                    target.write_bytes(driver.get_screenshot_as_png())
                    print(f"{target}: {target.stat().st_size // 1024} KiB")
            finally:
                driver.quit()


if __name__ == "__main__":
    main()
