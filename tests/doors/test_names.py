"""Names as users type them, through the doors they use (the ``zoo`` command, ``zoo.load`` in a fresh
process): a name no file system could hold (over 255 bytes), or with a NUL or control characters, is
zoo's InvalidNameError naming what a name may be, never ``OSError: File name too long`` or
``ValueError: embedded null byte``; nothing is written to the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

LONG = "a" * 300
BAD_NAMES = [LONG, f"{LONG}/b", f"org/{LONG}", f"{LONG}@v1", f"org/x@{'v' * 300}", f"hf:{LONG}", f"local:{LONG}",
             "org/a\x00b", "a\x00b", "org/x@v\x001", "org/a\x01b", "a\x00" + LONG]


def _env(tmp_path) -> dict:
    env = {**os.environ, "ZOO_HOME": str(tmp_path / "home"), "ZOO_OFFLINE": "1"}
    env.pop("HF_ENDPOINT", None)
    return env


def test_zoo_load_refuses_impossible_names_with_zoos_error(tmp_path):
    code = (
        "import json, sys, zoo\n"
        "out = []\n"
        "for name in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        zoo.load(name)\n"
        "        out.append(['loaded', ''])\n"
        "    except Exception as exc:\n"
        "        out.append([type(exc).__name__, str(exc)])\n"
        "print(json.dumps(out))\n"
    )
    run = subprocess.run([sys.executable, "-c", code, json.dumps(BAD_NAMES)], capture_output=True, text=True,
                         env=_env(tmp_path), cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    for name, (kind, message) in zip(BAD_NAMES, json.loads(run.stdout.splitlines()[-1])):
        assert kind == "InvalidNameError", (name[:80], kind, message[:300])
        assert "invalid" in message and len(message) < 400, message  # one readable line, the name cut short
        assert "\x00" not in message
    assert not (tmp_path / "home" / "objects").exists()


@pytest.mark.parametrize("args", [["pull", LONG], ["pull", f"{LONG}/b"], ["pull", f"org/{LONG}"],
                                  ["versions", f"{LONG}/b"], ["rm", LONG], ["pull", "org/a\x01b"]])
def test_zoo_command_refuses_impossible_names(tmp_path, args):
    run = subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True,
                         env=_env(tmp_path), cwd=tmp_path, timeout=120)
    assert run.returncode != 0
    assert "Traceback" not in run.stderr and "File name too long" not in run.stderr, run.stderr[-2000:]
    assert run.stderr.startswith("zoo: error: invalid"), run.stderr[-2000:]
    assert len(run.stderr.splitlines()) == 1, run.stderr
