"""Doors and tools for the model-based test of the store (tests/store/test_store_model.py); no pytest here.

- ``Worker``: one long-lived Python process that imports zoo and torch once, then runs each command
  (``zoo.load``, ``zoo.build`` + ``zoo.save``) in a child it forks for that command: every call is a
  fresh process as a user's script is (its own leases, no state carried between calls), without paying
  torch's import each time. ``python tests/store_model.py`` is that worker.
- ``zoo_cli``: the ``zoo`` command in a subprocess, and ``judge_cli`` / ``judge_error``: what a
  failed command may say (a zoo error that names a fix, never a traceback or a bare OS error).
- ``Daemon``: a real ``zoo daemon`` on a store's socket.
- Store files by kind (what the test damages) and the digests a test compares with.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent

# -- the worker (runs in its own process) ---------------------------------------------------------

def _serve() -> None:  # pragma: no cover - runs in the worker process
    import traceback
    import warnings

    import torch

    torch.set_num_threads(1)  # before any pool exists: forked children stay safe and light on 2 cores
    import zoo
    import transformers.models.bert.modeling_bert  # noqa: F401  (children find it imported)

    zoo.architectures()  # plugins found once, in the parent
    out = sys.stdout.buffer
    holders: list[int] = []

    def run(cmd: dict) -> dict:
        os.environ.update(cmd.get("env", {}))
        if cmd.get("cwd"):
            os.chdir(cmd["cwd"])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                if cmd["op"] == "load":
                    model = zoo.load(cmd["ref"])
                    tensors = {k: hashlib.sha256(v.detach().contiguous().cpu().numpy().tobytes()).hexdigest()
                               for k, v in model.state_dict().items()}
                    reply = {"ok": True, "class": type(model).__name__, "tensors": tensors}
                elif cmd["op"] in ("save_dir", "save_name"):
                    torch.manual_seed(cmd["seed"])
                    model = zoo.build(cmd["config"])
                    if cmd["op"] == "save_dir":
                        reply = {"ok": True, "path": str(zoo.save(model, Path(cmd["target"])))}
                    else:
                        version = zoo.save(model, cmd["target"])
                        reply = {"ok": True, "name": version.name, "id": version.id}
                else:
                    reply = {"ok": False, "type": "BadCommand", "zoo": False, "message": cmd["op"], "traceback": ""}
            except BaseException as exc:  # everything goes back to the test, which judges it
                reply = {"ok": False, "type": f"{type(exc).__module__}.{type(exc).__name__}",
                         "zoo": isinstance(exc, zoo.ZooError), "message": str(exc),
                         "traceback": traceback.format_exc()}
        reply["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught]
        return reply

    for line in sys.stdin.buffer:
        cmd = json.loads(line)
        if cmd["op"] == "release":
            for pid in holders:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            holders.clear()
            out.write(b'{"ok": true}\n')
            out.flush()
            continue
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.dup2(2, 1)  # anything a library prints goes to stderr; the reply goes to w
            data = (json.dumps(run(cmd)) + "\n").encode()
            _write_all(w, data)
            os.close(w)
            if cmd.get("hold"):  # keep the model (and the version's lease) until released
                signal.pause()
            os._exit(0)
        os.close(w)
        chunks = []
        while chunk := os.read(r, 1 << 16):
            chunks.append(chunk)
        os.close(r)
        if cmd.get("hold"):
            holders.append(pid)
        else:
            _, status = os.waitpid(pid, 0)
            if not chunks:
                chunks = [json.dumps({"ok": False, "type": "crash", "zoo": False, "traceback": "",
                                      "message": f"the process died: wait status {status}"}).encode() + b"\n"]
        out.write(b"".join(chunks))
        out.flush()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Worker:
    """The Python API's door: ``zoo.load`` / ``zoo.build`` / ``zoo.save`` each in a fresh (forked) process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve())], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=HERE.parent / "tests")

    def call(self, op: str, env: dict, timeout: float = 300, **args) -> dict:
        assert self.proc.poll() is None, "the worker process died"
        self.proc.stdin.write((json.dumps({"op": op, "env": env, **args}) + "\n").encode())
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the worker process died"
        return json.loads(line)

    def release(self) -> None:
        self.call("release", {})

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


# -- the command line's door ----------------------------------------------------------------------

def zoo_command() -> list[str]:
    exe = Path(sys.executable).parent / "zoo"  # the console script pip installed: what users type
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "zoo"]


def zoo_cli(args: list[str], env: dict, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*zoo_command(), "-q", *args], env={**os.environ, **env}, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


FIX_WORDS = re.compile(r"again|(see |with |run )?zoo (pull|import|verify|rm|gc|daemon|unpin|versions|ls)|pip install|--max-size|run |start |"
                       r"remove|delete|free |check |set |use |import it|save it|fetch", re.IGNORECASE)


def judge_error(kind: str, message: str, is_zoo: bool, traceback: str = "") -> str | None:
    """None when a failure is what zoo promises (its own error type, a message that names a fix); else why not."""
    if not is_zoo:
        return f"not a zoo error: {kind}: {message}\n{traceback}"
    if not FIX_WORDS.search(message):
        return f"a zoo error that names no fix: {kind}: {message}"
    return None


def judge_cli(result: subprocess.CompletedProcess, ok_codes: tuple = (0,)) -> str | None:
    """None when the command succeeded or failed the way zoo promises; else what is wrong."""
    if "Traceback (most recent call last)" in result.stderr:
        return f"a raw traceback (exit {result.returncode}):\n{result.stderr[-3000:]}"
    if result.returncode in ok_codes:
        return None
    if result.returncode == 2 and "zoo: error:" in result.stderr:
        return judge_error("zoo error", result.stderr.strip(), True)
    return f"exit {result.returncode} without a zoo error: {result.stderr.strip()[-2000:]}"


# -- a real daemon --------------------------------------------------------------------------------

class Daemon:
    def __init__(self, home: Path, env: dict, args: tuple = ()) -> None:
        self.home, self.env, self.args = home, env, tuple(args)
        self.proc: subprocess.Popen | None = None
        self.log = home.parent / f"{home.name}-daemon.log"

    def start(self) -> "Daemon":
        self.home.mkdir(parents=True, exist_ok=True)
        sock = self.home / "daemon.sock"
        self.proc = subprocess.Popen([*zoo_command(), "daemon", "--store", str(self.home), *self.args],
                                     env={**os.environ, **self.env}, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "ab"))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the daemon exited: {self.log.read_text()[-3000:]}"
            if sock.exists():
                try:
                    with socket.socket(socket.AF_UNIX) as probe:
                        probe.connect(str(sock))
                    return self
                except OSError:
                    pass
            time.sleep(0.05)
        raise AssertionError(f"the daemon did not start: {self.log.read_text()[-3000:]}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=60)

    def stop(self) -> int | None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        return self.proc.returncode if self.proc else None


# -- files ----------------------------------------------------------------------------------------

def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def tensor_digests(safetensors_file: Path) -> dict[str, str]:
    """sha256 of each tensor's bytes, read with safetensors (numpy): the reference a load is compared with."""
    from safetensors.numpy import load_file

    return {k: sha256_bytes(v.tobytes()) for k, v in load_file(str(safetensors_file)).items()}


def file_state(path: Path) -> tuple:
    """What a user's file must keep: bytes, mode, inode, link count."""
    st = path.stat()
    return sha256_file(path), oct(st.st_mode), st.st_ino, st.st_nlink


def dir_state(directory: Path) -> dict[str, tuple]:
    return {p.relative_to(directory).as_posix(): file_state(p) for p in sorted(directory.rglob("*")) if p.is_file()}


KINDS = ("object", "blob", "snapshot", "manifest", "ref", "fingerprint", "marks", "history")


def store_files(home: Path, kind: str) -> list[Path]:
    """The store's files of one kind, in a stable order (what a damage step picks from)."""
    if kind == "object":
        found = (home / "objects").rglob("*")
    elif kind == "blob":
        found = (home / "hub").glob("models--*/blobs/*")
    elif kind == "snapshot":
        found = (home / "hub").glob("models--*/snapshots/**/*")
    elif kind == "manifest":
        found = (home / "versions").rglob("*.json")
    elif kind == "ref":
        found = (home / "hub").glob("models--*/refs/**/*")
    elif kind in ("marks", "history"):  # aliases and labels; the log of events
        found = (home / kind).glob("models--*")
    else:
        found = (home / "imported").rglob("*")
    return sorted(p for p in found if p.is_symlink() or p.is_file())


def present_digests(home: Path) -> set[str]:
    """sha256 of every content the store holds where a load or a repair can take it from."""
    found = set()
    for p in [*store_files(home, "object"), *store_files(home, "blob")]:
        try:
            found.add(sha256_file(p))
        except OSError:
            pass
    return found


def manifest_version(home: Path, manifest: Path) -> tuple[str, str]:
    """``versions/models--local--alpha/v0002.json`` -> ("local/alpha", "v2")."""
    folder = manifest.relative_to(home / "versions").parts[0]
    repo = folder[len("models--"):].replace("--", "/")
    number = re.sub(r"\D", "", manifest.stem) or "0"
    return repo, f"v{int(number)}"


# -- the model's records --------------------------------------------------------------------------

@dataclass
class Content:
    path: Path
    files: dict[str, str]  # relative path -> sha256
    tensors: dict[str, str]  # state-dict key -> sha256 of the tensor's bytes


@dataclass
class Ver:
    content: int
    id: str | None = None  # the first 12 characters of the version's id, once a command said it
    certain: bool = True  # False once its manifest was damaged: it may vanish; if listed it must still load right


@dataclass
class Source:
    path: Path
    how: str
    state: dict
    linked: bool = False


class World:
    """What lives across examples: the worker, the hub, the contents, the counts."""

    def __init__(self, base: Path, worker: Worker, endpoint: str, contents: list[Content]) -> None:
        self.base, self.worker, self.endpoint, self.contents = base, worker, endpoint, contents
        self.examples = self.steps = self.tolerated_bitrot = 0
        self.tolerated: dict[str, int] = {}
        self.rules: dict[str, int] = {}  # how often each rule ran
        self.tolerate = {k for k in os.environ.get("ZOO_MODEL_TOLERATE", "").split(",") if k}


class Failure(AssertionError):
    pass


def note(text: str) -> None:
    """hypothesis's note (printed with a failing sequence); printed when a step runs outside hypothesis."""
    from hypothesis import note as _note

    try:
        _note(text)
    except Exception:  # noqa: BLE001 - no test context: replaying a sequence by hand
        print(text)


if __name__ == "__main__":
    _serve()
