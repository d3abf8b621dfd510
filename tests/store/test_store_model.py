"""The store as one model (issue #16, B): random sequences of what users and disks do, through the doors users use.

A hypothesis ``RuleBasedStateMachine`` drives zoo through the ``zoo`` command (a subprocess per command) and the
Python API (``zoo.load``, ``zoo.build``, ``zoo.save``, each in a fresh process forked by a worker that imported zoo
once, see tests/store_model.py), in direct mode or through a real ``zoo daemon`` (with or without ``--max-size``),
against the real hub server of tests/hubserver.py. Steps: pull, import (default, ``--copy``, ``--link``), save,
load, rm, gc, verify, pin, unpin, keep a model loaded (a lease), in-place corruption and deletion of any file of the
store, kill -9 of a ``zoo import`` and of the daemon. The test keeps a model of what should be there (each
version's content: its files' sha256 and tensors) and after every step checks the promises of the README:

- a load returns exactly the recorded tensors, or a zoo error that names a fix (never a raw traceback);
- the user's source files are unchanged (bytes, mode, inode, link count) unless ``--link`` was asked;
- no partial version is visible: ``zoo versions`` lists only versions that a step made, each loading whole;
- nothing the user did not remove is lost (quota eviction takes only unpinned, unleased, not-newest versions);
  after damage a load or ``zoo verify`` restores it, or says so with a zoo error (your own imports cannot be
  fetched again: "import or save it again"); after ``zoo verify`` says "all files intact", every load is exact.

Damage that keeps a file's size and mtime is invisible to the stat check (issue #16 C3): until a ``zoo verify``,
a load of it may return the damaged bytes; the test counts those loads and says so, it does not fail on them.

CI runs a few examples (``-m slow``, about 4 minutes on 2 busy cores). ``ZOO_SOAK=900`` runs for 900 seconds
(``ZOO_SOAK=200x``: 200 examples), longer sequences, and goes on after a failure, writing each to
``ZOO_SOAK_LOG`` (default ``store-model-soak.log`` in the test's temporary folder). ``ZOO_MODEL_TOLERATE=key,...``
counts the failures of those keys (a known defect being fixed) instead of stopping at them.
A failure prints the steps as a script (``state.import_dir(...)``) with the shell commands each ran (``$ zoo ...``).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, Verbosity, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, \
    run_state_machine_as_test

from conftest import TINY_BERT
from store_model import (KINDS, Content, Daemon, Failure, Source, Ver, Worker, World, dir_state, judge_cli,
                         judge_error, manifest_version, note, present_digests, sha256_file, store_files,
                         tensor_digests, zoo_cli, zoo_command)

LOCAL = ("alpha", "beta")
HUB = {"zoo-test/tiny-a": 0, "zoo-test/tiny-b": 3}  # repository -> content; content 0 is also a local one
CONTENTS = 4
MODES = ("direct", "daemon", "daemon --max-size 260KB")  # each content is about 85 KB
WHICH = ("newest", "v1", "v2", "v3")
# Shrinking a failing sequence can take many minutes of processes: on with ZOO_MODEL_SHRINK=1 (the unshrunk
# sequence printed without it reproduces too).
PHASES = [p for p in Phase if p != Phase.shrink or os.environ.get("ZOO_MODEL_SHRINK")]


class StoreMachine(RuleBasedStateMachine):
    world: World  # set by the test

    def __init__(self) -> None:
        super().__init__()
        w = self.world
        w.examples += 1
        self.dir = w.base / f"run{w.examples}"
        self.home, self.cwd = self.dir / "zoo-home", self.dir / "cwd"
        self.cwd.mkdir(parents=True)
        self.mode, self.daemon = "direct", None
        self.versions: dict[str, dict[str, Ver]] = {}
        self.pending: dict[str, set[int]] = {}  # versions that may appear (killed writers, cold loads)
        self.pins: set[tuple[str, str]] = set()
        self.aliases: dict[str, str] = {}  # label -> the version its alias "prod" points at
        self.marks_damaged = False  # the aliases file was damaged: an alias may no longer resolve (never wrongly)
        self.held: set[tuple[str, str]] = set()
        self.lost: set[str] = set()  # sha256s of local contents no intact copy in the store holds
        self.silent: set[str] = set()  # sha256s damaged with size and mtime kept, not verified since
        self.sources: list[Source] = []
        self.ids: dict[str, int] = {}
        self.damaged = False  # any damage in this run (a write may then fail with a zoo error)
        self.just_damaged = False  # the last step damaged the store: loads wait for the next step
        self.verified_intact = False

    # -- plumbing -------------------------------------------------------------------------------
    def step(self) -> None:
        name = sys._getframe(1).f_code.co_name
        self.world.steps += 1
        self.world.rules[name] = self.world.rules.get(name, 0) + 1

    @property
    def quota(self) -> bool:
        return "--max-size" in self.mode

    def env(self) -> dict:
        return {"ZOO_HOME": str(self.home), "HF_ENDPOINT": self.world.endpoint, "HF_HOME": str(self.dir / "hf"),
                "ZOO_QUIET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}

    def fail(self, key: str, message: str) -> None:
        if key in self.world.tolerate:
            self.world.tolerated[key] = self.world.tolerated.get(key, 0) + 1
            note(f"TOLERATED [{key}] {message}")
            return
        raise Failure(f"[{key}] {message}")

    def zoo(self, *args: str, ok: tuple = (0,)) -> subprocess.CompletedProcess:
        note(f"$ zoo {' '.join(args)}")
        result = zoo_cli(list(args), self.env(), self.cwd)
        note(f"  -> exit {result.returncode}: {(result.stdout + result.stderr).strip()[:300]}")
        why = judge_cli(result, ok)
        if why:
            self.fail("cli-error", f"zoo {' '.join(args)}: {why}")
        return result

    def py(self, op: str, **args) -> dict:
        reply = self.world.worker.call(op, self.env(), cwd=str(self.cwd), **args)
        shown = "ok" if reply["ok"] else f"{reply['type']}: {reply['message'][:300]}"
        note(f"  -> {shown}")
        return reply

    def ref(self, label: str, which: str) -> str:
        return label if which == "newest" else f"{label}@{which}"

    def shas(self, content: int) -> set[str]:
        return set(self.world.contents[content].files.values())

    def record(self, label: str, vname: str, content: int, vid: str | None) -> None:
        have = self.versions.setdefault(label, {}).get(vname)
        if have is not None and have.certain and have.content != content:
            self.fail("version-changed", f"{label} {vname} held content {have.content}; a step now says it holds "
                                         f"content {content}")
        self.versions[label][vname] = Ver(content, vid and vid[:12])
        if vid:
            self.ids[vid[:12]] = content

    def new_source(self, content: int, how: str) -> Source:
        path = self.dir / f"src{len(self.sources)}"
        shutil.copytree(self.world.contents[content].path, path, copy_function=shutil.copyfile)
        source = Source(path, how, dir_state(path))
        self.sources.append(source)
        return source

    def wrote(self, content: int, ok: bool) -> None:
        """A write of ``content`` ended: done, it is the fix an IntegrityError names (its bytes are stored anew)."""
        if ok:
            self.lost -= self.shas(content)
            self.silent -= self.shas(content)

    def write_failed(self, what: str, result_message: str) -> None:
        if self.quota and "quota" in result_message.lower():
            return
        if self.damaged:
            return  # a damaged store may refuse a write, as long as it says how to fix it (judged already)
        self.fail("write-failed", f"{what} failed on an intact store: {result_message}")

    # -- start ----------------------------------------------------------------------------------
    @initialize(mode=st.sampled_from(MODES))
    def start(self, mode: str) -> None:
        self.mode = mode
        note(f"# ZOO_HOME={self.home} HF_ENDPOINT={self.world.endpoint}; mode: {mode}")
        if mode != "direct":
            note(f"$ zoo daemon --store {self.home} {mode[len('daemon'):].strip()} &")
            self.daemon = Daemon(self.home, self.env(), tuple(mode.split()[1:])).start()

    def teardown(self) -> None:
        self.world.worker.release()
        if self.daemon is not None:
            self.daemon.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- what users do --------------------------------------------------------------------------
    @rule(content=st.integers(0, CONTENTS - 1), name=st.sampled_from(LOCAL), how=st.sampled_from(("", "--copy", "--link")))
    def import_dir(self, content: int, name: str, how: str) -> None:
        self.step()
        source = self.new_source(content, how)
        result = self.zoo("import", str(source.path), "--name", name, *how.split())
        source.linked = how == "--link"
        if result.returncode == 0:
            m = re.match(rf"{re.escape(name)} (v\d+) \((new version|unchanged, already); content id (\w+)\)",
                         result.stdout)
            assert m, result.stdout
            self.record(name, m[1], content, m[3])
        else:
            self.write_failed(f"zoo import {how}", result.stderr)
        self.wrote(content, result.returncode == 0)

    @rule(content=st.integers(0, CONTENTS - 1), name=st.sampled_from(LOCAL))
    def save(self, content: int, name: str) -> None:
        self.step()
        note(f">>> torch.manual_seed({content}); zoo.save(zoo.build(TINY_BERT), {name!r})")
        reply = self.py("save_name", seed=content, config=TINY_BERT, target=name)
        if reply["ok"]:
            self.record(name, reply["name"], content, reply["id"])
        else:
            self.judge_py_error("zoo.save", reply)
            self.write_failed("zoo.save", f"{reply['type']}: {reply['message']}")
        self.wrote(content, reply["ok"])

    @rule(repo=st.sampled_from(sorted(HUB)))
    def pull(self, repo: str) -> None:
        self.step()
        result = self.zoo("pull", repo)
        if result.returncode == 0:
            m = re.match(rf"{re.escape(repo)} (v\d+) \((\w+)\)", result.stdout)
            assert m, result.stdout
            self.record(repo, m[1], HUB[repo], None)
            self.wrote(HUB[repo], True)
        else:
            self.write_failed("zoo pull", result.stderr)

    @rule(label=st.sampled_from((*LOCAL, *sorted(HUB))), which=st.sampled_from(WHICH))
    def load(self, label: str, which: str) -> None:
        self.step()
        known = self.versions.get(label, {})
        if label in HUB and not known:
            self.pending.setdefault(label, set()).add(HUB[label])  # a cold load pulls
        self.check_load(label, which, known)

    @rule(label=st.sampled_from((*LOCAL, *sorted(HUB))), which=st.sampled_from(("all", *WHICH[1:])))
    def rm(self, label: str, which: str) -> None:
        self.step()
        target = label if which == "all" else f"{label}@{which}"
        result = self.zoo("rm", target, ok=(0, 1))
        aliased = self.aliases.get(label)
        if result.returncode == 0 and aliased in (list(self.versions.get(label, {})) if which == "all" else [which]) \
                and not self.marks_damaged and aliased in self.versions.get(label, {}):
            self.fail("aliased-removed", f"zoo rm {target} removed {label} {aliased}, which the alias prod points at")
        if result.returncode == 0:
            gone = list(self.versions.get(label, {})) if which == "all" else [which]
            for vname in gone:
                self.versions.get(label, {}).pop(vname, None)
                self.pins.discard((label, vname))
            if which == "all":
                self.pending.pop(label, None)

    @rule()
    def gc(self) -> None:
        self.step()
        self.zoo("gc")

    @rule(label=st.sampled_from((None, *LOCAL, *sorted(HUB))))
    def verify(self, label: str | None) -> None:
        self.step()
        result = self.zoo("verify", *([label] if label else []), ok=(0, 1))
        self.silent.clear()  # re-hashed: what it did not report must now be right, and loads are checked so
        if result.returncode == 0:
            if "all files intact" not in result.stdout:
                self.fail("verify-output", f"zoo verify exited 0 but said: {result.stdout}")
            self.verified_intact = label is None

    @rule(label=st.sampled_from((*LOCAL, *sorted(HUB))), which=st.sampled_from(WHICH))
    def pin(self, label: str, which: str) -> None:
        self.step()
        result = self.zoo("pin", self.ref(label, which), ok=(0,))
        if result.returncode == 0:
            m = re.match(r"pinned \S+ (v\d+)", result.stdout)
            assert m, result.stdout
            self.pins.add((label, m[1]))

    @rule(label=st.sampled_from((*LOCAL, *sorted(HUB))), which=st.sampled_from(WHICH))
    def tag(self, label: str, which: str) -> None:
        self.step()
        result = self.zoo("tag", self.ref(label, which), "prod", ok=(0,))
        if result.returncode == 0:
            m = re.search(r"-> (v\d+)", result.stdout)
            assert m, result.stdout
            self.aliases[label] = m[1]

    @rule(label=st.sampled_from((*LOCAL, *sorted(HUB))))
    def untag(self, label: str) -> None:
        self.step()
        if label in self.aliases and not self.marks_damaged:
            self.zoo("untag", label, "prod")
            del self.aliases[label]

    @rule(label=st.sampled_from((*LOCAL, *sorted(HUB))))
    def unpin(self, label: str) -> None:
        self.step()
        self.zoo("unpin", label)
        self.pins = {p for p in self.pins if p[0] != label}

    @precondition(lambda self: self.quota)
    @rule(label=st.sampled_from((*LOCAL, *sorted(HUB))), which=st.sampled_from(WHICH))
    def keep_loaded(self, label: str, which: str) -> None:
        """A process loads a version and stays alive: eviction must leave that version alone."""
        self.step()
        if which != "newest" and which not in self.versions.get(label, {}):
            return
        if which == "newest":
            listed = self.listed(label)
            if not listed:
                return
            which = max(listed, key=lambda v: int(v[1:]))
        note(f">>> model = zoo.load({self.ref(label, which)!r})  # in a process that stays alive")
        reply = self.world.worker.call("load", self.env(), cwd=str(self.cwd), ref=self.ref(label, which), hold=True)
        if reply["ok"]:
            self.held.add((label, which))

    @precondition(lambda self: self.quota)
    @rule()
    def end_loaded_processes(self) -> None:
        self.step()
        note("# the processes that kept models loaded exit")
        self.world.worker.release()
        self.held.clear()

    # -- what disks and kill -9 do --------------------------------------------------------------
    @rule(kind=st.sampled_from(KINDS), pick=st.integers(0, 99), at=st.floats(0, 1), keep_mtime=st.booleans())
    def corrupt(self, kind: str, pick: int, at: float, keep_mtime: bool) -> None:
        self.step()
        files = [p for p in store_files(self.home, kind) if p.exists() and p.stat().st_size > 0]
        if not files:
            return
        path = files[pick % len(files)]
        before, st_ = sha256_file(path), path.stat()
        offset = min(int(at * st_.st_size), st_.st_size - 1)
        note(f"# flip byte {offset} of {path.relative_to(self.home)} in place"
             + (", size and mtime kept" if keep_mtime else ""))
        with open(path, "r+b") as f:
            f.seek(offset)
            byte = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([byte ^ 0x01]))
        if keep_mtime:
            os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns))
            self.silent.add(before)
        self.damaged_store(kind, path)

    @rule(kind=st.sampled_from(KINDS), pick=st.integers(0, 99))
    def delete(self, kind: str, pick: int) -> None:
        self.step()
        files = store_files(self.home, kind)
        if not files:
            return
        path = files[pick % len(files)]
        note(f"$ rm {path.relative_to(self.home)}")
        path.unlink()
        self.damaged_store(kind, path)

    def damaged_store(self, kind: str, path: Path) -> None:
        self.damaged = self.just_damaged = True
        self.verified_intact = False
        if kind == "marks":
            self.marks_damaged = True
        if kind == "manifest":
            repo, vname = manifest_version(self.home, path)
            label = repo[len("local/"):] if repo.startswith("local/") else repo
            if vname in self.versions.get(label, {}):
                self.versions[label][vname].certain = False
        local = set().union(*(self.shas(v.content) for label in LOCAL for v in self.versions.get(label, {}).values()))
        self.lost |= local - present_digests(self.home)

    @rule(content=st.integers(0, CONTENTS - 1), name=st.sampled_from(LOCAL), delay=st.floats(0, 1.5))
    def kill_import(self, content: int, name: str, delay: float) -> None:
        self.step()
        source = self.new_source(content, "")
        note(f"$ zoo import {source.path} --name {name} & sleep {delay:.2f}; kill -9 $!")
        proc = subprocess.Popen([*zoo_command(), "-q", "import", str(source.path), "--name", name],
                                env={**os.environ, **self.env()}, cwd=self.cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
        note(f"  -> exit {proc.returncode}")
        if proc.returncode == 0:
            m = re.match(rf"{re.escape(name)} (v\d+) \((new version|unchanged, already); content id (\w+)\)", out)
            if m:
                self.record(name, m[1], content, m[3])
                self.wrote(content, True)
        self.pending.setdefault(name, set()).add(content)

    @precondition(lambda self: self.daemon is not None)
    @rule(content=st.integers(0, CONTENTS - 1), name=st.sampled_from(LOCAL), delay=st.floats(0, 1.5))
    def kill_daemon_during_import(self, content: int, name: str, delay: float) -> None:
        self.step()
        source = self.new_source(content, "")
        note(f"$ zoo import {source.path} --name {name} & sleep {delay:.2f}; kill -9 <the daemon>; "
             f"zoo daemon --store {self.home} ... &")
        proc = subprocess.Popen([*zoo_command(), "-q", "import", str(source.path), "--name", name],
                                env={**os.environ, **self.env()}, cwd=self.cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        self.daemon.kill()
        out, err = proc.communicate(timeout=120)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        note(f"  -> the client: exit {proc.returncode}: {(out + err).strip()[:300]}")
        why = judge_cli(result)
        if why:
            self.fail("cli-error", f"a zoo import whose daemon was killed: {why}")
        self.daemon.start()
        self.pending.setdefault(name, set()).add(content)

    # -- the promises, after every step -------------------------------------------------------------
    def listed(self, label: str) -> dict[str, str]:
        result = self.zoo("versions", label, ok=(0, 1))
        rows = [line.split() for line in result.stdout.splitlines()[1:]] if result.returncode == 0 else []
        return {row[0]: row[1] for row in rows if row and re.fullmatch(r"v\d+", row[0])}

    @invariant()
    def promises_hold(self) -> None:
        self.check_sources()
        for label in sorted(set(self.versions) | set(self.pending)):
            listed = self.check_listing(label)
            if not self.just_damaged:
                for vname in sorted(listed, key=lambda v: int(v[1:])):
                    self.check_load(label, vname, self.versions.get(label, {}))
                if listed:
                    self.check_load(label, "newest", self.versions.get(label, {}), listed)
                if label in self.aliases:
                    self.check_load(label, "prod", self.versions.get(label, {}), expect=self.aliases[label])
        self.just_damaged = False

    def check_sources(self) -> None:
        for source in self.sources:
            if source.linked:
                continue
            now = dir_state(source.path)
            if now != source.state:
                changed = {k: (source.state.get(k), now.get(k)) for k in set(now) | set(source.state)
                           if now.get(k) != source.state.get(k)}
                source.linked = True  # said once
                self.fail("source-changed", f"the user's folder {source.path}, imported "
                                            f"{source.how or 'with the default (a copy)'}, changed "
                                            f"(sha256, mode, inode, links): {changed}")

    def check_listing(self, label: str) -> dict[str, str]:
        listed = self.listed(label)
        known = self.versions.setdefault(label, {})
        for vname, vid in sorted(listed.items()):
            ver = known.get(vname)
            if ver is not None:
                if ver.id and ver.id != vid and ver.certain:
                    self.fail("version-changed", f"{label} {vname} was content id {ver.id}, is now listed as {vid}")
                continue
            candidates = self.pending.get(label, set())
            content = self.ids.get(vid)
            if content not in candidates:
                content = self.identify(label, vname, candidates)
            if content is None:
                self.fail("phantom-version", f"zoo versions {label} lists {vname} ({vid}), which no step made "
                                             f"whole (a partial version?); pending contents: {sorted(candidates)}")
                continue
            note(f"# {label} {vname} appeared: content {content} (a killed writer's or a cold load's)")
            candidates.discard(content)
            known[vname] = Ver(content, vid)
        for vname, ver in sorted(known.items()):
            if vname in listed:
                continue
            del known[vname]
            if not ver.certain:
                continue
            newer = any(int(v[1:]) > int(vname[1:]) for v in listed)
            aliased = self.aliases.get(label) == vname and not self.marks_damaged
            if self.quota and newer and (label, vname) not in self.pins | self.held and not aliased:
                note(f"# {label} {vname} was evicted for the quota")
                continue
            why = ("pinned" if (label, vname) in self.pins else "aliased" if aliased else "in use by a live process"
                   if (label, vname) in self.held else "the newest version" if not newer else "not removed by anyone")
            self.fail("version-lost", f"{label} {vname} (content {ver.content}) is gone from zoo versions; it was {why}")
        return listed

    def identify(self, label: str, vname: str, candidates: set[int]) -> int | None:
        """Which pending content a version that appeared holds: as its manifest says (the load checks then judge
        its bytes, damaged or not), else as it loads."""
        repo = label if label in HUB else f"local/{label}"
        manifest = self.home / "versions" / ("models--" + repo.replace("/", "--")) / f"v{int(vname[1:]):04d}.json"
        try:
            files = {f["path"]: f["sha256"] for f in json.loads(manifest.read_text())["files"]}
        except (OSError, ValueError, KeyError, TypeError):
            files = None
        for c in sorted(candidates):
            if files == self.world.contents[c].files:
                return c
        note(f">>> zoo.load({label + '@' + vname!r})  # which content is it?")
        reply = self.py("load", ref=f"{label}@{vname}")
        if reply["ok"]:
            for c in sorted(candidates):
                if reply["tensors"] == self.world.contents[c].tensors:
                    return c
            note(f"# {label} {vname} loads as none of the contents {sorted(candidates)}")
        return None

    def check_load(self, label: str, which: str, known: dict[str, Ver], listed: dict | None = None,
                   expect: str | None = None) -> None:
        ref = self.ref(label, which)
        if expect is not None:  # an alias: the version it points at
            vname = expect
        elif which == "newest":
            if listed is None:
                listed = self.listed(label) if known else {}
            vname = max(listed, key=lambda v: int(v[1:])) if listed else None
        else:
            vname = which
        ver = known.get(vname) if vname else None
        note(f">>> zoo.load({ref!r})")
        reply = self.py("load", ref=ref)
        if ver is None:
            if reply["ok"] and label in HUB and reply["tensors"] != self.world.contents[HUB[label]].tensors:
                self.fail("wrong-weights", f"zoo.load({ref!r}) of a cold hub name returned other weights")
            if not reply["ok"] and not reply["zoo"]:  # asked for what is not there: any zoo error will do
                self.judge_py_error(f"zoo.load({ref!r}) of a version zoo does not have", reply)
            return
        content = self.world.contents[ver.content]
        damaged_silently = bool(self.shas(ver.content) & self.silent)
        if reply["ok"]:
            if reply["tensors"] == content.tensors:
                if label in HUB:
                    self.lost -= set(content.files.values())  # fetched again: every path must lead to it now
                return
            if damaged_silently and not self.verified_intact:
                self.world.tolerated_bitrot += 1
                note(f"# {ref}: the damaged bytes, unseen by the stat check (issue #16 C3)")
                return
            bad = sorted(k for k in content.tensors if reply["tensors"].get(k) != content.tensors[k])
            self.fail("wrong-weights", f"zoo.load({ref!r}) returned other weights than {label} {vname} holds "
                                       f"(content {ver.content}): {len(bad)} tensors differ, e.g. {bad[:3]}")
            return
        self.judge_py_error(f"zoo.load({ref!r})", reply)
        if expect is not None and self.marks_damaged:
            return  # the aliases file was damaged: the alias may not resolve (a zoo error), never to other weights
        lost = bool(self.shas(ver.content) & self.lost) and label in LOCAL
        if self.verified_intact or not (lost or damaged_silently or not ver.certain or
                                        (self.quota and "Quota" in reply["type"])):
            self.fail("load-failed", f"zoo.load({ref!r}) failed though {label} {vname} is intact or can be fetched "
                                     f"again{' (zoo verify said all files intact)' if self.verified_intact else ''}: "
                                     f"{reply['type']}: {reply['message']}")

    def judge_py_error(self, what: str, reply: dict) -> None:
        why = judge_error(reply["type"], reply["message"], reply["zoo"], reply.get("traceback", ""))
        if why:
            self.fail("raw-error", f"{what}: {why}")


# -- the test -------------------------------------------------------------------------------------

def _soak() -> tuple[float | None, int | None]:
    value = os.environ.get("ZOO_SOAK", "").strip().lower()
    if not value:
        return None, None
    if value.endswith(("x", "examples")):
        return None, int(re.sub(r"\D", "", value))
    return float(value.rstrip("s")), None


@pytest.fixture(scope="module")
def world(tmp_path_factory, hub):
    base = tmp_path_factory.mktemp("store-model")
    worker = Worker()
    try:
        contents = []
        for seed in range(CONTENTS):
            path = base / f"content{seed}"
            reply = worker.call("save_dir", {"ZOO_HOME": str(base / "unused-home")}, seed=seed, config=TINY_BERT,
                                target=str(path))
            assert reply["ok"], reply
            files = {p.relative_to(path).as_posix(): sha256_file(p) for p in sorted(path.rglob("*")) if p.is_file()}
            contents.append(Content(path, files, tensor_digests(path / "model.safetensors")))
        assert len({c.files["model.safetensors"] for c in contents}) == CONTENTS
        for repo, content in HUB.items():
            hub.add_repo(repo, {rel: contents[content].path / rel for rel in contents[content].files})
        yield World(base, worker, hub.endpoint, contents)
    finally:
        worker.close()


@pytest.mark.slow
def test_the_store_keeps_its_promises(world, tmp_path):
    seconds, examples = _soak()
    StoreMachine.world = world
    if seconds is None and examples is None:  # CI: a few short runs
        run_state_machine_as_test(StoreMachine, settings=settings(
            max_examples=int(os.environ.get("ZOO_MODEL_EXAMPLES", 8)), stateful_step_count=15, deadline=None,
            database=None, suppress_health_check=list(HealthCheck), phases=PHASES,
            verbosity=Verbosity.verbose if os.environ.get("ZOO_MODEL_VERBOSE") else Verbosity.normal), _min_steps=8)
        print(f"model-based test: {world.examples} examples, {world.steps} steps; loads of silently damaged bytes "
              f"(C3): {world.tolerated_bitrot}; tolerated: {world.tolerated}; rules run: {world.rules}")
        return
    log = Path(os.environ.get("ZOO_SOAK_LOG", tmp_path / "store-model-soak.log"))
    deadline = time.monotonic() + seconds if seconds else None
    failures = 0
    while (deadline is None or time.monotonic() < deadline) and (examples is None or world.examples < examples):
        captured = io.StringIO()
        try:
            with redirect_stdout(captured):
                run_state_machine_as_test(StoreMachine, settings=settings(
                    max_examples=5, stateful_step_count=30, deadline=None, database=None, phases=PHASES,
                    suppress_health_check=list(HealthCheck)), _min_steps=10)
        except Exception as exc:  # noqa: BLE001 - a soak records every failure and goes on
            failures += 1
            with open(log, "a") as f:
                notes = "\n".join(getattr(exc, "__notes__", []))  # the failing sequence, as hypothesis wrote it
                f.write(f"=== failure {failures} after {world.examples} examples, {world.steps} steps\n"
                        f"{captured.getvalue()}\n{type(exc).__name__}: {exc}\n{notes}\n\n")
        with open(log, "a") as f:
            f.write(f"--- {world.examples} examples, {world.steps} steps, {failures} failures, silently damaged "
                    f"loads (C3): {world.tolerated_bitrot}, tolerated: {world.tolerated}\n")
    print(f"soak: {world.examples} examples, {world.steps} steps, {failures} failures (log: {log})")
    assert failures == 0, log.read_text()[-20000:]


# Sequences the random search found (or that show the defects), replayed in every run: a found defect
# stays covered however the random search goes. Each is what hypothesis prints, as data.
SEQUENCES = {
    # #16 defect 1: a plain `zoo import DIR` hard-linked DIR's files into the store and made them read-only
    "import-copies-by-default": [("start", dict(mode="direct")),
                                 ("import_dir", dict(content=1, name="alpha", how=""))],
    "import-copies-by-default-daemon": [("start", dict(mode="daemon")),
                                        ("import_dir", dict(content=1, name="alpha", how="")),
                                        ("import_dir", dict(content=2, name="alpha", how="--copy"))],
    # #16 defect 2: a damaged hub blob was quarantined and fetched again into objects/, but the snapshot still
    # led to the damaged inode: the load returned the damaged weights, every time
    "damaged-hub-blob-loads-right": [("start", dict(mode="direct")), ("pull", dict(repo="zoo-test/tiny-b")),
                                     ("corrupt", dict(kind="blob", pick=1, at=0.5, keep_mtime=False)),
                                     ("load", dict(label="zoo-test/tiny-b", which="newest")),
                                     ("load", dict(label="zoo-test/tiny-b", which="newest"))],
    "damaged-object-shared-by-hub-and-local": [("start", dict(mode="daemon")),
                                               ("import_dir", dict(content=0, name="beta", how="--copy")),
                                               ("pull", dict(repo="zoo-test/tiny-a")),
                                               ("corrupt", dict(kind="object", pick=1, at=0.9, keep_mtime=False)),
                                               ("load", dict(label="zoo-test/tiny-a", which="newest")),
                                               ("load", dict(label="beta", which="newest"))],
    "verify-after-silent-damage": [("start", dict(mode="direct")), ("save", dict(content=2, name="alpha")),
                                   ("corrupt", dict(kind="object", pick=1, at=0.7, keep_mtime=True)),
                                   ("verify", dict(label=None)), ("import_dir", dict(content=2, name="alpha", how=""))],
    # CI found it: a damaged config.json shared by two imports (one --link); a later --link import of the same
    # content must leave every version that shares it loadable
    "damaged-shared-config-then-link-import": [
        ("start", dict(mode="direct")), ("import_dir", dict(content=3, name="beta", how="--copy")),
        ("import_dir", dict(content=2, name="alpha", how="--link")),
        ("corrupt", dict(kind="snapshot", pick=74, at=0.6014325679880267, keep_mtime=False)),
        ("import_dir", dict(content=0, name="beta", how="--link")),
        ("load", dict(label="alpha", which="newest"))],
    # CI found it: a pull of content already stored (its version's manifest unreadable, its object silently
    # damaged) made a new version of the damaged bytes; a pull checks a stored copy before it is kept
    "pull-checks-a-stored-copy": [
        ("start", dict(mode="direct")), ("pull", dict(repo="zoo-test/tiny-b")),
        ("corrupt", dict(kind="manifest", pick=2, at=4.0944331847096754e-244, keep_mtime=False)),
        ("corrupt", dict(kind="snapshot", pick=85, at=0.7921176926587483, keep_mtime=True)),
        ("pull", dict(repo="zoo-test/tiny-b")), ("load", dict(label="zoo-test/tiny-b", which="newest"))],
    # #17: an alias loads the version it points at, keeps it from zoo rm (and the quota), and a damaged aliases
    # file or history log never makes a load return other weights or fail for a plain name
    "alias-holds-its-version": [("start", dict(mode="daemon --max-size 260KB")), ("save", dict(content=1, name="alpha")),
                                ("save", dict(content=2, name="alpha")), ("tag", dict(label="alpha", which="v1")),
                                ("save", dict(content=3, name="alpha")), ("save", dict(content=0, name="alpha")),
                                ("rm", dict(label="alpha", which="v1")), ("rm", dict(label="alpha", which="all")),
                                ("corrupt", dict(kind="history", pick=0, at=0.5, keep_mtime=False)),
                                ("load", dict(label="alpha", which="newest")),
                                ("corrupt", dict(kind="marks", pick=0, at=0.3, keep_mtime=False)),
                                ("load", dict(label="alpha", which="v1"))],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_a_sequence(world, name):
    StoreMachine.world = world
    state = StoreMachine()
    try:
        for rule_name, args in SEQUENCES[name]:
            getattr(state, rule_name)(**args)
            state.promises_hold()
    finally:
        state.teardown()
