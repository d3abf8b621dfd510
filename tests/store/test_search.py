"""Search (``zoo ls`` filters, ``zoo.search``) through the doors a user uses: the ``zoo`` command in a subprocess
and ``zoo.search`` in a fresh process, on a store made by real imports, a real ``zoo.load`` + ``zoo.save``, tags
and labels. Both doors must give the same rows; each filter must pick exactly the versions it names; bad input
is a one-line zoo error (exit 2) that changes nothing; a search reads only and shows each change at once."""

from __future__ import annotations

import json
import os
import pwd
import struct
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import TINY_BERT, run_python

ME = pwd.getpwuid(os.getuid()).pw_name


def zoo_cli(home: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo", "-q", *args], capture_output=True, text=True,
                          env={**os.environ, "ZOO_HOME": str(home)}, timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"rc {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def tiny_folder(folder: Path, model_type: str, seed: int) -> Path:
    """A complete checkpoint of a few hundred bytes (config.json, a one-tensor model.safetensors)."""
    folder.mkdir(parents=True)
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    header += b" " * (-len(header) % 8)
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + struct.pack("<2f", seed, 1))
    (folder / "config.json").write_text(json.dumps({"model_type": model_type, "seed": seed}))
    return folder


def tree(home: Path) -> dict[str, tuple[int, int]]:
    """Every path of the store with its size and mtime: what a reader must leave as it is."""
    return {str(p.relative_to(home)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in sorted(home.rglob("*"))}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """alpha (bert: v1 team=search, v2 team=search task=ner; prod -> v1), beta (gpt2: v1 task=ner, v2;
    staging -> v1), child (zoo.save of zoo.load("alpha@v1"): base alpha@v1, team=search) and carded (an import
    whose model card names alpha: base alpha@v2). alpha@v1 and beta@v1 were made before ``cutoff``, the rest
    at or after it."""
    root = tmp_path_factory.mktemp("search")
    home = root / "zoo-home"
    made = run_python(f"""
        import torch, zoo
        for seed in (1, 2):
            torch.manual_seed(seed)
            zoo.build({TINY_BERT!r}).save_pretrained({str(root)!r} + f"/bert{{seed}}")
    """)
    assert made.returncode == 0, made.stderr
    ok(zoo_cli(home, "import", str(root / "bert1"), "--name", "alpha", "--label", "team=search"))
    ok(zoo_cli(home, "import", str(tiny_folder(root / "gpt1", "gpt2", 1)), "--name", "beta", "--label", "task=ner"))
    # versions record their creation to the second: the cutoff is the next whole second, after which the rest
    cutoff = datetime.fromtimestamp(int(time.time()) + 1, timezone.utc)
    time.sleep(max(0.0, cutoff.timestamp() - time.time()) + 0.05)
    ok(zoo_cli(home, "import", str(root / "bert2"), "--name", "alpha", "--label", "team=search",
               "--label", "task=ner"))
    ok(zoo_cli(home, "tag", "alpha@v1", "prod"))
    ok(zoo_cli(home, "tag", "beta", "staging"))
    ok(zoo_cli(home, "import", str(tiny_folder(root / "gpt2", "gpt2", 2)), "--name", "beta"))
    saved = run_python("""
        import zoo
        zoo.save(zoo.load("alpha@v1"), "child", labels={"team": "search"})
    """, env={"ZOO_HOME": str(home)})
    assert saved.returncode == 0, saved.stderr
    card = root / "carded"
    card.mkdir()
    for f in (root / "bert2").iterdir():
        (card / f.name).write_bytes(f.read_bytes())
    (card / "README.md").write_text("---\nbase_model: alpha\n---\n# A fine-tune of alpha\n")
    ok(zoo_cli(home, "import", str(card), "--name", "carded"))
    return {"home": home, "cutoff": cutoff}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """A store with one name, x (gpt2, labelled, aliased): what bad input must leave as it is."""
    root = tmp_path_factory.mktemp("small")
    home = root / "zoo-home"
    ok(zoo_cli(home, "import", str(tiny_folder(root / "m", "gpt2", 1)), "--name", "x", "--label", "task=ner"))
    ok(zoo_cli(home, "tag", "x", "prod"))
    return home


SEARCHES = [  # (python keyword arguments, {name: (newest matching version, how many match)})
    ({}, {"alpha": ("v2", 2), "beta": ("v2", 2), "carded": ("v1", 1), "child": ("v1", 1)}),
    ({"model_type": "gpt2"}, {"beta": ("v2", 2)}),
    ({"model_type": "bert"}, {"alpha": ("v2", 2), "carded": ("v1", 1), "child": ("v1", 1)}),
    ({"model_type": "t5"}, {}),
    ({"labels": ["team=search"]}, {"alpha": ("v2", 2), "child": ("v1", 1)}),
    ({"labels": ["task=ner"]}, {"alpha": ("v2", 1), "beta": ("v1", 1)}),
    ({"labels": ["team=search", "task=ner"]}, {"alpha": ("v2", 1)}),
    ({"labels": ["team=ads"]}, {}),
    ({"alias": "prod"}, {"alpha": ("v1", 1)}),
    ({"alias": "staging"}, {"beta": ("v1", 1)}),
    ({"alias": "prod", "labels": ["task=ner"]}, {}),  # prod is v1, which has no task=ner
    ({"base": "alpha"}, {"carded": ("v1", 1), "child": ("v1", 1)}),
    ({"base": "local:alpha"}, {"carded": ("v1", 1), "child": ("v1", 1)}),
    ({"base": "alpha@v1"}, {"child": ("v1", 1)}),
    ({"base": "alpha@v2"}, {"carded": ("v1", 1)}),
    ({"base": "beta"}, {}),
    ({"since": "CUTOFF"}, {"alpha": ("v2", 1), "beta": ("v2", 1), "carded": ("v1", 1), "child": ("v1", 1)}),
    ({"since": "CUTOFF", "model_type": "gpt2"}, {"beta": ("v2", 1)}),
    ({"since": "TOMORROW"}, {}),
    ({"since": "1h"}, {"alpha": ("v2", 2), "beta": ("v2", 2), "carded": ("v1", 1), "child": ("v1", 1)}),
    ({"user": ME}, {"alpha": ("v2", 2), "beta": ("v2", 2), "carded": ("v1", 1), "child": ("v1", 1)}),
    ({"user": str(os.getuid()), "alias": "prod"}, {"alpha": ("v1", 1)}),
    ({"user": "no-such-user-here"}, {}),
]


def _concrete(kwargs: dict, cutoff: datetime) -> dict:
    out = dict(kwargs)
    if out.get("since") == "CUTOFF":
        out["since"] = cutoff.isoformat()
    elif out.get("since") == "TOMORROW":
        out["since"] = (date.today() + timedelta(days=2)).isoformat()
    return out


def _flags(kwargs: dict) -> list[str]:
    flags = []
    for key, value in kwargs.items():
        for v in value if isinstance(value, list) else [value]:
            flags += ["--label" if key == "labels" else "--" + key.replace("_", "-"), v]
    return flags


@pytest.mark.slow
def test_each_filter_gives_the_same_rows_through_zoo_ls_and_zoo_search(store):
    home, cutoff = store["home"], store["cutoff"]
    cases = [_concrete(kwargs, cutoff) for kwargs, _ in SEARCHES]
    result = run_python(f"""
        import dataclasses, json, zoo
        from zoo.store.search import Row
        out = []
        for kwargs in {cases!r}:
            rows = zoo.search(**kwargs)
            assert all(isinstance(r, Row) and dataclasses.is_dataclass(r) for r in rows)
            out.append([r.as_json() for r in rows])
        print(json.dumps(out))
    """, env={"ZOO_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    python_rows = json.loads(result.stdout.strip().splitlines()[-1])
    before = tree(home)
    for (_, want), kwargs, from_python in zip(SEARCHES, cases, python_rows):
        from_cli = json.loads(ok(zoo_cli(home, "ls", "--json", *_flags(kwargs))))
        assert from_cli == from_python, kwargs  # the CLI prints exactly zoo.search's rows
        assert {r["name"]: (r["version"], r["versions"]) for r in from_cli} == want, kwargs
    assert tree(home) == before  # a search reads only


@pytest.mark.slow
def test_rows_carry_what_the_store_records(store):
    home = store["home"]
    rows = {r["name"]: r for r in json.loads(ok(zoo_cli(home, "ls", "--json")))}
    alpha_v1 = json.loads((home / "versions" / "models--local--alpha" / "v0001.json").read_text())
    assert rows["child"]["base"] == {"name": "alpha", "repo": "local/alpha", "version": "v1", "id": alpha_v1["id"]}
    assert rows["alpha"]["aliases"] == {"prod": "v1"} and rows["beta"]["aliases"] == {"staging": "v1"}
    assert rows["alpha"]["labels"] == {"team": "search", "task": "ner"} and rows["beta"]["labels"] == {}
    assert rows["alpha"]["model_type"] == "bert" and rows["beta"]["model_type"] == "gpt2"
    assert {r["user"] for r in rows.values()} == {ME}
    assert rows["alpha"]["last_used"] is not None and rows["beta"]["last_used"] is None  # alpha was loaded
    alpha_v2 = json.loads((home / "versions" / "models--local--alpha" / "v0002.json").read_text())
    assert (rows["alpha"]["id"], rows["alpha"]["size"], rows["alpha"]["created"]) == \
        (alpha_v2["id"], alpha_v2["total_size"], alpha_v2["created"])
    frozen = run_python("""
        import dataclasses, zoo
        row = zoo.search(alias="prod")[0]
        try:
            row.version = "v9"
        except dataclasses.FrozenInstanceError:
            print("frozen", row.name, row.version, dict(row.aliases))
    """, env={"ZOO_HOME": str(home)})
    assert frozen.stdout.strip() == "frozen alpha v1 {'prod': 'v1'}", frozen.stderr


@pytest.mark.slow
def test_the_table_shows_names_counts_who_and_aliases(store):
    home = store["home"]
    header, *lines = ok(zoo_cli(home, "ls")).splitlines()
    assert header.split() == ["NAME", "VERSIONS", "NEWEST", "SIZE", "LAST", "USED", "BY", "ALIASES"]
    rows = {line.split()[0]: line for line in lines}
    assert sorted(rows) == ["alpha", "beta", "carded", "child"]
    assert rows["alpha"].split()[1:3] == ["2", "v2"] and rows["alpha"].endswith(f"{ME}  prod=v1")
    assert rows["beta"].endswith("staging=v1") and rows["child"].endswith("-")
    assert all(line.index(ME) == header.index("BY") for line in lines)  # the columns line up
    header, *lines = ok(zoo_cli(home, "ls", "--label", "task=ner")).splitlines()
    assert header.split()[:3] == ["NAME", "MATCHING", "NEWEST"]
    assert [(line.split()[0], line.split()[1], line.split()[2]) for line in lines] == [("alpha", "1", "v2"),
                                                                                        ("beta", "1", "v1")]
    said = ok(zoo_cli(home, "ls", "--alias", "prod", "--model-type", "t5"))
    assert said.strip() == f"nothing in the cache at {home} matches --model-type t5 --alias prod"


@pytest.mark.parametrize("args, said", [
    (("--label", "nokey"), "--label 'nokey': write key=value"),
    (("--label", "bad key=1"), "invalid label key 'bad key'"),
    (("--since", "notadate"), "--since 'notadate': expected an ISO date"),
    (("--since", "2026-13-45"), "expected an ISO date"),
    (("--alias", "v3"), "invalid alias 'v3'"),
    (("--alias", "a/b"), "invalid alias 'a/b'"),
    (("--base", "a/b/c"), "--base 'a/b/c': expected a name"),
    (("--base", "x@zz"), "after '@' write a version"),
    (("--base", "dir:x"), "--base 'dir:x': expected a name such as my-bert, local:my-bert"),
    (("--model-type", ""), "expected a model_type"),
])
def test_bad_input_is_a_one_line_error_that_changes_nothing(small, args, said):
    home = small
    before = tree(home)
    result = zoo_cli(home, "ls", *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("zoo: error: ") and said in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    assert tree(home) == before


def test_bad_input_in_python_raises_zoo_errors(small):
    result = run_python("""
        import zoo
        for kwargs in ({"since": "notadate"}, {"labels": ["nokey"]}, {"labels": {"bad key": "1"}}, {"alias": "v3"},
                       {"base": "a/b/c"}, {"user": ""}):
            try:
                zoo.search(**kwargs)
            except zoo.ZooError as exc:
                print(type(exc).__name__)
            else:
                print("no error for", kwargs)
    """, env={"ZOO_HOME": str(small)})
    assert result.stdout.split() == ["InvalidArgumentError", "InvalidArgumentError", "InvalidNameError",
                                     "InvalidNameError", "InvalidArgumentError", "InvalidArgumentError"], result.stderr


@pytest.mark.slow
def test_a_search_shows_each_change_at_once_and_skips_an_unreadable_manifest(tmp_path):
    home = tmp_path / "zoo-home"
    for seed in (1, 2, 3):
        ok(zoo_cli(home, "import", str(tiny_folder(tmp_path / f"m{seed}", "gpt2", seed)), "--name", "x"))

    def rows(*flags: str) -> dict:
        return {r["name"]: (r["version"], r["versions"], r["labels"]) for r in json.loads(ok(zoo_cli(home, "ls", "--json", *flags)))}

    ok(zoo_cli(home, "tag", "x@v1", "prod"))
    assert rows("--alias", "prod") == {"x": ("v1", 1, {})}
    ok(zoo_cli(home, "tag", "x@v2", "prod"))  # moved: the search follows it at once
    assert rows("--alias", "prod") == {"x": ("v2", 1, {})}
    ok(zoo_cli(home, "label", "x@v2", "stage=canary"))
    assert rows("--label", "stage=canary") == {"x": ("v2", 1, {"stage": "canary"})}
    ok(zoo_cli(home, "label", "x@v2", "--rm", "stage"))
    assert rows("--label", "stage=canary") == {}
    ok(zoo_cli(home, "rm", "x@v3"))
    assert rows() == {"x": ("v2", 2, {})}
    ok(zoo_cli(home, "untag", "x", "prod"))
    assert rows("--alias", "prod") == {}
    (home / "versions" / "models--local--x" / "v0009.json").write_text("{not json")
    result = zoo_cli(home, "ls")
    assert result.returncode == 0 and "v0009.json is not a readable zoo manifest" in result.stderr
    assert result.stdout.splitlines()[1].split()[:3] == ["x", "2", "v2"]


@pytest.mark.slow
def test_hub_repositories_are_found_by_their_id_and_a_plugins_short_name(hub_env, tmp_path):
    """A hub repository pulled into the store is a row like any name; a fine-tune saved from it is found by
    ``--base org/name`` and by the short name a plugin's table gives it (bert-base-cased)."""
    home = Path(os.environ["ZOO_HOME"])
    ok(zoo_cli(home, "pull", "bert-base-cased"))
    saved = run_python("""
        import zoo
        zoo.save(zoo.load("bert-base-cased"), "tuned", labels={"task": "sts"})
    """)
    assert saved.returncode == 0, saved.stderr
    rows = {r["name"]: r for r in json.loads(ok(zoo_cli(home, "ls", "--json")))}
    assert sorted(rows) == ["google-bert/bert-base-cased", "tuned"]
    assert rows["google-bert/bert-base-cased"]["repo"] == "google-bert/bert-base-cased"
    assert rows["tuned"]["base"]["repo"] == "google-bert/bert-base-cased"
    for base in ("google-bert/bert-base-cased", "hf:google-bert/bert-base-cased", "bert-base-cased",
                 "bert-base-cased@v1"):
        found = json.loads(ok(zoo_cli(home, "ls", "--json", "--base", base)))
        assert [r["name"] for r in found] == ["tuned"], base
    for base in ("bert-base-cased@v2", "local:bert-base-cased", "tuned"):
        assert json.loads(ok(zoo_cli(home, "ls", "--json", "--base", base))) == [], base
    assert [r["name"] for r in json.loads(ok(zoo_cli(home, "ls", "--json", "--model-type", "bert")))] == \
        ["google-bert/bert-base-cased", "tuned"]


@pytest.mark.slow
def test_with_a_daemon_serving_the_store_the_rows_are_the_same(tmp_path):
    """Versions made through a daemon (which records the client as their maker) are searched as the store holds
    them: the same rows while the daemon serves the store and after it stopped."""
    import signal
    import socket

    home = tmp_path / "zoo-home"
    home.mkdir()
    log = tmp_path / "daemon.log"
    daemon = subprocess.Popen([sys.executable, "-m", "zoo", "daemon", "--store", str(home)],
                              env={**os.environ, "ZOO_HOME": str(home)}, stdout=subprocess.DEVNULL,
                              stderr=open(log, "ab"))
    try:
        deadline = time.monotonic() + 60
        while True:
            assert daemon.poll() is None and time.monotonic() < deadline, log.read_text()
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(str(home / "daemon.sock"))
                    break
                except OSError:
                    time.sleep(0.05)
        for seed in (1, 2):
            ok(zoo_cli(home, "import", str(tiny_folder(tmp_path / f"m{seed}", "gpt2", seed)), "--name", "served",
                       "--label", f"seed={seed}"))
        ok(zoo_cli(home, "tag", "served@v1", "prod"))
        served = json.loads(ok(zoo_cli(home, "ls", "--json", "--user", ME)))
        by_alias = json.loads(ok(zoo_cli(home, "ls", "--json", "--alias", "prod")))
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0, log.read_text()
    assert "import name=served" in log.read_text()  # the daemon made the versions
    assert [(r["name"], r["version"], r["versions"], r["user"], r["aliases"]) for r in served] == \
        [("served", "v2", 2, ME, {"prod": "v1"})]
    assert [(r["version"], r["labels"]) for r in by_alias] == [("v1", {"seed": "1"})]
    assert json.loads(ok(zoo_cli(home, "ls", "--json", "--user", ME))) == served  # direct mode: the same rows
    python = run_python("import json, zoo\nprint(json.dumps([r.as_json() for r in zoo.search(alias='prod')]))",
                        env={"ZOO_HOME": str(home)})
    assert json.loads(python.stdout.strip().splitlines()[-1]) == by_alias, python.stderr
