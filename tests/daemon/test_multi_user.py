"""A group store used by several real unix users (issue 6, section 2 item 7, and item 9's read-only store).

The tests create a group and users (they run as root in CI; elsewhere they are skipped) and run zoo in
subprocesses as those users: one saves, another loads, imports the same content and saves a new version,
an outsider gets a zoo error that says what to do, and a read-only store still serves what it holds.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import shutil
import site
import stat
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT, TINY_BERT
from zoo import atomic
from zoo.store import Store

SITES = [p for p in site.getsitepackages() if os.path.isdir(p)]
# -S: the interpreter's own site-packages stay out (a system Python may be the one others can run);
# the environment of this test run is added explicitly, its .pth files (the editable zoo) included.
PRELUDE = f"import site\nfor _p in {SITES!r}:\n    site.addsitedir(_p)\n"

MODEL_OUT = """
import json, sys, torch, zoo
ids = torch.tensor([[1, 5, 7, 9, 2]])
def outputs(model):
    with torch.no_grad():
        out = model.eval()(ids)
    return (out[0] if isinstance(out, tuple) else next(iter(out.values()))).flatten().tolist()
"""


@dataclass(frozen=True)
class User:
    name: str
    group: str
    home: Path


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def _python_for(user: User) -> str | None:
    """An interpreter that ``user`` may run with this environment's packages: this one, or (when it lives
    in a folder others may not enter, such as /root) a system Python of the same version."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable, f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    for python in dict.fromkeys(candidates):
        if not os.path.exists(python):
            continue
        try:
            probe = subprocess.run(
                [python, "-S", "-c", PRELUDE + "import torch, transformers, zoo; print(zoo.__file__)"],
                user=user.name, group=user.group, extra_groups=[], capture_output=True, text=True, timeout=120,
                env={"PATH": "/usr/bin:/bin", "HOME": str(user.home), "PYTHONDONTWRITEBYTECODE": "1"},
                cwd=user.home,
            )
        except OSError:
            continue
        if probe.returncode == 0 and probe.stdout.strip().startswith(str(ROOT)):
            return python
    return None


@pytest.fixture(scope="module")
def users():
    """A group ``zt<pid>g`` with users a and b, an outsider c (own group), their homes, and a Python
    they can all run. Removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a unix group and users to use one store with several real uids")
    if not (shutil.which("useradd") and shutil.which("groupadd")):
        pytest.skip("useradd/groupadd not found: cannot create the users of a shared store")
    tag = f"zt{os.getpid()}"
    base = Path(tempfile.mkdtemp(prefix="zoo-multi-user-", dir="/tmp"))
    os.chmod(base, 0o755)  # pytest's tmp folders are 0700: other users could not reach a store there
    made_users, made_groups = [], []
    try:
        for g in (f"{tag}g", f"{tag}o"):
            _run(["groupadd", g])
            made_groups.append(g)
        out = {}
        for key, group in (("a", f"{tag}g"), ("b", f"{tag}g"), ("c", f"{tag}o")):
            name = f"{tag}{key}"
            home = base / f"home-{key}"
            _run(["useradd", "-M", "-N", "-g", group, "-d", str(home), "-s", "/usr/sbin/nologin", name])
            made_users.append(name)
            home.mkdir()
            os.chown(home, pwd.getpwnam(name).pw_uid, grp.getgrnam(group).gr_gid)
            os.chmod(home, 0o700)
            out[key] = User(name, group, home)
        python = _python_for(out["a"])
        if python is None:
            pytest.skip(f"no Python with this test environment ({', '.join(SITES)}) can be run by another user: "
                        "make the interpreter and the virtual environment readable by others")
        yield {**out, "group": f"{tag}g", "base": base, "python": python}
    finally:
        for name in made_users:
            subprocess.run(["userdel", name], capture_output=True)
        for g in made_groups:
            subprocess.run(["groupdel", g], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def store(users):
    """A fresh group store, made as an administrator would: ``mkdir; chgrp GROUP; chmod 2770``."""
    path = Path(tempfile.mkdtemp(prefix="store-", dir=users["base"]))
    os.chown(path, -1, grp.getgrnam(users["group"]).gr_gid)
    os.chmod(path, 0o2770)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def as_user(users: dict, who: str, store: Path, code: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``code`` (Python) as user ``who`` with umask 022, the store as ZOO_HOME, offline."""
    user: User = users[who]
    env = {
        "PATH": "/usr/bin:/bin", "HOME": str(user.home), "ZOO_HOME": str(store), "HF_HOME": str(user.home / "hf"),
        "ZOO_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1", "ZOO_QUIET": "1",
    }
    return subprocess.run(
        [users["python"], "-S", "-c", PRELUDE + textwrap.dedent(code), *args],
        user=user.name, group=user.group, extra_groups=[], env=env, umask=0o022, cwd=user.home,
        capture_output=True, text=True, timeout=300,
    )


def zoo_cli(users: dict, who: str, store: Path, *args: str) -> subprocess.CompletedProcess:
    return as_user(users, who, store, "import sys\nfrom zoo.cli import main\nsys.exit(main(sys.argv[1:]))", *args)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"rc {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def save_as_a(users: dict, store: Path) -> list[float]:
    """User a builds a tiny BERT and saves it as "shared"; returns its outputs."""
    out = ok(as_user(users, "a", store, MODEL_OUT + f"""
torch.manual_seed(0)
model = zoo.build({TINY_BERT!r})
zoo.save(model, "shared")
print(json.dumps(outputs(model)))
"""))
    return json.loads(out.strip().splitlines()[-1])


def modes(store: Path) -> dict[str, int]:
    return {p.relative_to(store).as_posix(): p.lstat().st_mode for p in [store, *store.rglob("*")]}


def check_group_store(store: Path, group: str) -> None:
    """Everything belongs to the store's group; folders are setgid and group-writable; lock files, use
    stamps and leases are group-writable; stored content and records are read-only and group-readable."""
    gid = grp.getgrnam(group).gr_gid
    problems = []
    for rel, mode in modes(store).items():
        path = store / rel
        if stat.S_ISLNK(mode):
            continue
        if path.lstat().st_gid != gid:
            problems.append(f"{rel}: group {path.lstat().st_gid}, not {gid}")
        if stat.S_ISDIR(mode):
            if mode & 0o2070 != 0o2070:
                problems.append(f"{rel}/: mode {stat.filemode(mode)}, not setgid and group rwx")
        elif rel.startswith(("locks/", "used/", "leases/", "history/")):  # taken, touched or appended by every user
            if mode & 0o060 != 0o060:
                problems.append(f"{rel}: mode {stat.filemode(mode)}, not group-writable")
        elif mode & 0o777 != 0o440:
            problems.append(f"{rel}: mode {stat.filemode(mode)}, not 0440 (read-only, group-readable)")
    assert not problems, "\n".join(problems)


# -- 1. one user saves, another loads --------------------------------------------------------------

@pytest.mark.slow
def test_a_save_with_umask_022_loads_for_b(users, store):
    expected = save_as_a(users, store)
    objects = [p for p in (store / "objects").rglob("*") if p.is_file()]
    assert objects and all(p.stat().st_mode & 0o777 == 0o440 for p in objects)  # zoo.save wrote 0600
    out = ok(as_user(users, "b", store, MODEL_OUT + """
print(json.dumps(outputs(zoo.load("shared"))))
"""))
    assert json.loads(out.strip().splitlines()[-1]) == expected


# -- 2. the second user imports the same content and saves a new version -------------------------------

@pytest.mark.slow
def test_b_imports_the_same_content_and_saves_a_new_version(users, store):
    expected = save_as_a(users, store)
    snapshot = next((store / "hub" / "models--local--shared" / "snapshots").iterdir())
    src = users["base"] / "b-src"
    shutil.copytree(snapshot, src)  # the same content, b's own readable files
    b = pwd.getpwnam(users["b"].name)
    for p in [src, *src.rglob("*")]:
        os.chown(p, b.pw_uid, b.pw_gid)
    result = zoo_cli(users, "b", store, "import", str(src), "--name", "other")
    assert "Operation not permitted" not in result.stderr
    ok(result)
    out = ok(as_user(users, "b", store, MODEL_OUT + """
same = outputs(zoo.load("other"))
torch.manual_seed(1)
v2 = zoo.save(zoo.build(%r), "shared")
print(json.dumps([same, v2.name, outputs(zoo.load("shared"))]))
""" % (TINY_BERT,)))
    same, name, newer = json.loads(out.strip().splitlines()[-1])
    assert same == expected and name == "v2" and newer != expected
    # a reads what b wrote, and both versions are intact
    out = ok(as_user(users, "a", store, MODEL_OUT + """
from zoo.store import Store
print(json.dumps([outputs(zoo.load("shared@v1")), outputs(zoo.load("shared")),
                  [problem for _, _, problem in Store().verify()]]))
"""))
    v1, v2, problems = json.loads(out.strip().splitlines()[-1])
    assert v1 == expected and v2 == newer and problems == []
    # "other" holds the content of "shared" v1: stored once in objects/ (its blobs may be copies, as
    # the kernel does not let b hard-link a's files)
    s = Store(store)
    assert {e.sha256 for e in s.find("local/other").files} == {e.sha256 for e in s.find("local/shared", "v1").files}
    for entry in s.find("local/other").files:
        assert s.object_path(entry.sha256).stat().st_uid == pwd.getpwnam(users["a"].name).pw_uid
    check_group_store(store, users["group"])


# -- 3. what a created is usable by b: modes ---------------------------------------------------------

@pytest.mark.slow
def test_folders_and_lock_files_a_made_are_group_writable(users, store):
    save_as_a(users, store)
    assert list((store / "locks").glob("*.lock"))
    check_group_store(store, users["group"])
    # b may take every lock a made (filelock opens the file for writing)
    ok(as_user(users, "b", store, """
from pathlib import Path
from zoo.store.locks import locked
import os
for path in sorted(Path(os.environ["ZOO_HOME"], "locks").glob("*.lock")):
    with locked(path, what=path.name, timeout=5):
        pass
"""))


# -- 4. a user outside the group: a zoo error that names the store and the fix ---------------------------

@pytest.mark.slow
def test_a_user_outside_the_group_gets_a_store_access_error(users, store):
    save_as_a(users, store)
    out = ok(as_user(users, "c", store, """
import json, torch, zoo
results = []
for what in ("load", "save"):
    try:
        zoo.load("shared") if what == "load" else zoo.save(zoo.build(dict(model_type="bert", vocab_size=9,
            hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)), "mine")
        results.append([what, "no error", ""])
    except Exception as exc:
        results.append([what, type(exc).__name__, str(exc)])
print(json.dumps(results))
"""))
    for what, kind, message in json.loads(out.strip().splitlines()[-1]):
        assert kind == "StoreAccessError", (what, kind, message)
        assert str(store) in message and "ZOO_HOME" in message and users["group"] in message, (what, message)
    for args in (("versions", "shared"), ("ls",), ("import", str(users["c"].home), "--name", "mine")):
        result = zoo_cli(users, "c", store, *args)
        assert result.returncode == 2, (args, result.returncode, result.stderr)
        assert result.stderr.startswith("zoo: error:") and "Traceback" not in result.stderr, result.stderr
        assert str(store) in result.stderr and "ZOO_HOME" in result.stderr, result.stderr


# -- 5. a read-only store: what it holds loads, the rest is a StoreAccessError ------------------------------

@pytest.mark.slow
def test_read_only_store_loads_what_it_holds(users, store):
    expected = save_as_a(users, store)
    for p in [store, *store.rglob("*")]:
        if not p.is_symlink():
            os.chmod(p, p.stat().st_mode & ~0o222)
    before = modes(store)
    out = ok(as_user(users, "b", store, MODEL_OUT + """
results = [outputs(zoo.load("shared"))]
for call in (lambda: zoo.load("someorg/not-cached"), lambda: zoo.save(zoo.load("shared"), "copy")):
    try:
        call()
        results.append(["no error", ""])
    except Exception as exc:
        results.append([type(exc).__name__, str(exc)])
print(json.dumps(results))
"""))
    loaded, *errors = json.loads(out.strip().splitlines()[-1])
    assert loaded == expected
    for kind, message in errors:
        assert kind == "StoreAccessError" and str(store) in message and "ZOO_HOME" in message, (kind, message)
    result = zoo_cli(users, "b", store, "pull", "someorg/not-cached")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert str(store) in result.stderr and "ZOO_HOME" in result.stderr, result.stderr
    assert modes(store) == before


# -- a resumed download: this process's own partial file is taken up again -------------------------------

def test_adopt_part_takes_this_process_own_partial_download(tmp_path):
    store = Store(tmp_path / "zoo")
    store.disk.prepare()
    etag = "ab" * 20
    mine = atomic.temp_name(store.tmp, etag, ".part")
    mine.write_bytes(b"first half")
    live = store.tmp / f"{atomic.HOST}.1.0123456789ab.{etag}.part"  # pid 1 is alive: not ours to take
    live.write_bytes(b"someone else's")
    adopted = store._adopt_part(etag)
    assert adopted.read_bytes() == b"first half" and not mine.exists()
    assert live.read_bytes() == b"someone else's"
    adopted.unlink()
    fresh = store._adopt_part(etag)  # none left: a new name
    assert fresh != adopted and not fresh.exists()


# -- the daemon: group members write through it, nobody else writes at all -------------------------------

@contextlib.contextmanager
def root_daemon(users: dict, prefix: str, *flags: str):
    """A root daemon serving a fresh store that group members may only read (2750): yields (store, log)."""
    import signal
    import socket
    import time

    store = Path(tempfile.mkdtemp(prefix=prefix, dir=users["base"]))
    os.chown(store, 0, grp.getgrnam(users["group"]).gr_gid)
    os.chmod(store, 0o2750)
    log = users["base"] / f"{store.name}.log"
    daemon = subprocess.Popen([sys.executable, "-m", "zoo", "daemon", "--store", str(store), "--group", users["group"],
                               *flags], env={**os.environ, "ZOO_HOME": str(store)}, stdout=subprocess.DEVNULL,
                              stderr=open(log, "wb"))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(str(store / "daemon.sock"))
                break
            except OSError:
                time.sleep(0.05)
        yield store, log
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=60)
        shutil.rmtree(store, ignore_errors=True)
    assert code == 0, log.read_text()


@pytest.mark.slow
def test_daemon_serves_group_members_and_refuses_others(users, tmp_path):
    """A root daemon serves a store that group members may only read (2750): a member saves, loads and
    imports through it; an outsider is refused; no client can write the store itself."""
    with root_daemon(users, "served-") as (store, log):
        assert stat.S_IMODE((store / "daemon.sock").stat().st_mode) == 0o660
        expected = json.loads(ok(as_user(users, "a", store, MODEL_OUT + """
torch.manual_seed(0)
model = zoo.build(%r)
v = zoo.save(model, "served")
assert "uid" in v.source, v.source
print(json.dumps(outputs(model)))
""" % (TINY_BERT,))).strip().splitlines()[-1])
        out = ok(as_user(users, "b", store, MODEL_OUT + """
print(json.dumps(outputs(zoo.load("served"))))
"""))
        assert json.loads(out.strip().splitlines()[-1]) == expected
        source = users["b"].home / "mine"
        ok(as_user(users, "b", store, MODEL_OUT + f"""
zoo.save(zoo.build({TINY_BERT!r}), {str(source)!r})
import os; os.chmod({str(source / 'model.safetensors')!r}, 0o600)  # only b may read it
print(zoo.api.default_store().import_dir({str(source)!r}, "b-import").name)
"""))
        # no client writes the store: the daemon (root) owns every file, members may only read
        denied = as_user(users, "b", store, f"open({str(store / 'objects' / 'x')!r}, 'w')")
        assert denied.returncode != 0 and "Permission denied" in denied.stderr
        refused = zoo_cli(users, "c", store, "ls")
        assert refused.returncode == 2 and "StoreAccessError" not in refused.stderr
        assert "zoo: error:" in refused.stderr and str(store) in refused.stderr
        outsider = as_user(users, "c", store, "import zoo\nzoo.load('served')")
        assert outsider.returncode != 0 and "zoo.errors.StoreAccessError" in outsider.stderr
        text = log.read_text()
        assert f"{users['a'].name} (uid" in text and f"{users['b'].name} (uid" in text


# -- protected aliases and removals through the daemon (issue 17, section 1) -------------------------------

@pytest.mark.slow
def test_through_the_daemon_only_the_maker_root_or_an_admin_moves_an_alias_or_removes_a_version(users, tmp_path):
    """User a saves and tags prod; user b (same group) may neither move nor remove prod, nor remove a's versions,
    and is told who may; root may; once b joins the --admins group, b may. The history names each client (not
    the daemon's root), and nothing a refused request touched changed."""
    admins = f"{users['group']}adm"
    subprocess.run(["groupadd", admins], check=True, capture_output=True)
    try:
        with root_daemon(users, "protected-", "--admins", admins) as (store, log):
            _protected(users, store, admins)
    finally:
        subprocess.run(["groupdel", admins], capture_output=True)


def _protected(users: dict, store: Path, admins: str) -> None:
    """The protected-alias checks, run against a root daemon with an admin group."""
    ok(as_user(users, "a", store, f"""
import torch, zoo
for seed in (0, 1):
    torch.manual_seed(seed)
    zoo.save(zoo.build({TINY_BERT!r}), "team-model")
"""))
    ok(zoo_cli(users, "a", store, "tag", "team-model@v1", "prod"))
    marks_path = store / "marks" / "models--local--team-model.json"
    before = marks_path.read_bytes()

    moved = zoo_cli(users, "b", store, "tag", "team-model@v2", "prod")
    assert moved.returncode == 2, moved.stderr
    assert f"{users['b'].name} may not move the alias 'prod'" in moved.stderr
    assert users["a"].name in moved.stderr and admins in moved.stderr
    for args in (("untag", "team-model", "prod"), ("rm", "team-model@v2")):
        refused = zoo_cli(users, "b", store, *args)
        assert refused.returncode == 2 and "may not" in refused.stderr, refused.stderr
    assert marks_path.read_bytes() == before
    assert (store / "versions" / "models--local--team-model" / "v0002.json").exists()

    # a may move its own alias; root may move anybody's
    ok(zoo_cli(users, "a", store, "tag", "team-model@v2", "prod"))
    root = subprocess.run([sys.executable, "-m", "zoo", "tag", "team-model@v1", "prod"], capture_output=True,
                          text=True, env={**os.environ, "ZOO_HOME": str(store)}, timeout=120)
    assert root.returncode == 0, root.stderr
    # b, once an admin, may too (the daemon asks the group database at each request)
    subprocess.run(["gpasswd", "-a", users["b"].name, admins], check=True, capture_output=True)
    ok(zoo_cli(users, "b", store, "tag", "team-model@v2", "prod"))
    events = json.loads(ok(zoo_cli(users, "b", store, "history", "team-model", "--json")))
    movers = [(e["who"]["user"], e["previous"], e["version"]) for e in events if e["event"] == "alias_moved"]
    assert movers == [(users["a"].name, None, "v1"), (users["a"].name, "v1", "v2"), ("root", "v2", "v1"),
                      (users["b"].name, "v1", "v2")]
    makers = {e["version"]: e["who"]["user"] for e in events if e["event"] == "version_created"}
    assert makers == {"v1": users["a"].name, "v2": users["a"].name}
    manifest = json.loads((store / "versions" / "models--local--team-model" / "v0001.json").read_text())
    assert manifest["uid"] == pwd.getpwnam(users["a"].name).pw_uid and manifest["user"] == users["a"].name
