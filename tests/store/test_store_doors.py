"""The store's promises, checked through the doors a user uses: the ``zoo`` command in a subprocess and
``zoo.load`` in a fresh process, asserting the invariant itself (the source file's bytes, mode, inode and
link count; the loaded tensors against the reference checkpoint)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_python


def zoo_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def _snapshot_of_files(directory: Path) -> dict[str, tuple]:
    """What `zoo import` must leave as it was: every file's bytes, mode, inode and link count."""
    out = {}
    for path in sorted(directory.rglob("*")):
        st = path.lstat()
        out[path.relative_to(directory).as_posix()] = (
            path.read_bytes() if path.is_file() else None, st.st_mode, st.st_ino, st.st_nlink)
    return out


def _saved_tiny(tmp_path: Path, tiny_bert: dict) -> Path:
    """A folder as a user has one: written by transformers' save_pretrained (config, weights)."""
    result = run_python(f"""
        import zoo
        zoo.build({tiny_bert!r}).save_pretrained({str(tmp_path / 'src')!r})
    """)
    assert result.returncode == 0, result.stderr
    return tmp_path / "src"


@pytest.mark.parametrize("flags", [[], ["--copy"]])
def test_zoo_import_default_and_copy_leave_the_folder_exactly_as_it_was(tmp_path, tiny_bert, flags):
    src = _saved_tiny(tmp_path, tiny_bert)
    before = _snapshot_of_files(src)
    result = zoo_cli("-q", "import", str(src), "--name", "mine", *flags)
    assert result.returncode == 0, result.stderr
    assert _snapshot_of_files(src) == before  # bytes, mode, inode, link count
    # and the store's copy is its own inode: writing the source later never changes the version
    weights = src / "model.safetensors"
    os.chmod(weights, 0o644)
    with open(weights, "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x00")
    check = zoo_cli("-q", "verify", "local:mine")
    assert check.returncode == 0, check.stdout + check.stderr


def test_zoo_import_link_is_the_one_that_links(tmp_path, tiny_bert):
    src = _saved_tiny(tmp_path, tiny_bert)
    ino = (src / "model.safetensors").stat().st_ino
    result = zoo_cli("-q", "import", str(src), "--name", "mine", "--link")
    assert result.returncode == 0, result.stderr
    st = (src / "model.safetensors").stat()
    assert st.st_ino == ino and st.st_nlink >= 2  # asked for: the store shares the inode
    assert st.st_mode & 0o222 == 0  # and says so: the file is read-only now


def _load_and_compare(minilm_dir: Path) -> subprocess.CompletedProcess:
    """A fresh process: zoo.load of the cached name against the reference checkpoint, tensor by tensor."""
    return run_python(f"""
        import warnings, torch, zoo
        warnings.simplefilter("ignore")
        got = zoo.load("bert-base-cased").state_dict()
        ref = zoo.load({str(minilm_dir)!r}).state_dict()
        assert got.keys() == ref.keys()
        bad = [k for k in ref if not torch.equal(got[k], ref[k])]
        print("DIFFERENT", len(bad), bad[:3])
    """)


@pytest.mark.slow
def test_a_hub_file_damaged_in_place_never_loads_as_wrong_weights(hub_env, hub, minilm_dir):
    """Pull, flip one byte of the weights in place (size unchanged; object and blob are one inode), load."""
    pulled = zoo_cli("-q", "pull", "bert-base-cased", env=hub_env)
    assert pulled.returncode == 0, pulled.stderr
    home = Path(os.environ["ZOO_HOME"])
    weights = next(home.glob("hub/models--google-bert--bert-base-cased/snapshots/*/model.safetensors"))
    blob = weights.resolve()
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as f:  # a bad disk or a stray write: same size, new mtime
        f.seek(blob.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    for attempt in range(2):  # the repaired load, then a warm one: both exact, and only one fetch
        hub.reset_counts()
        result = _load_and_compare(minilm_dir)
        assert result.returncode == 0, result.stderr
        assert "DIFFERENT 0 []" in result.stdout, (attempt, result.stdout)
        gets = hub.gets_per_file().get("model.safetensors", 0)
        assert gets == (1 if attempt == 0 else 0), (attempt, gets)
    # every path a load can open leads to the verified bytes, and verify says so
    obj_ino = weights.resolve().stat().st_ino
    entry = next(f for f in json.loads(next(home.glob("versions/models--google-bert--bert-base-cased/v*.json"))
                                       .read_text())["files"] if f["path"] == "model.safetensors")
    assert (home / "objects" / "sha256" / entry["sha256"][:2] / entry["sha256"]).stat().st_ino == obj_ino
    verified = zoo_cli("verify", env=hub_env)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_zoo_gc_frees_and_counts_what_a_killed_writer_left_in_folders(tmp_path):
    """A process killed while staging (zoo.save's folder in tmp/) leaves files inside a folder: zoo gc
    removes them and counts their bytes (it counted only loose files)."""
    killed = run_python("""
        import os, signal, zoo
        from zoo.store import Store
        with Store().staging("save-x") as folder:
            (folder / "model.safetensors").write_bytes(os.urandom(3 * 2**20))
            (folder / "sub").mkdir()
            (folder / "sub" / "b.bin").write_bytes(os.urandom(2**20))
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert killed.returncode == -9
    tmp = Path(os.environ["ZOO_HOME"]) / "tmp"
    assert [p for p in tmp.iterdir()]  # the leftover is there
    dry = zoo_cli("gc", "-n")
    assert dry.returncode == 0, dry.stderr
    assert "4.0 MB" in dry.stdout or "4.2 MB" in dry.stdout, dry.stdout
    done = zoo_cli("-q", "gc")
    assert done.returncode == 0, done.stderr
    assert list(tmp.iterdir()) == []


@pytest.mark.parametrize("damage", ["no weights", "not safetensors", "no folder"])
def test_zoo_import_refuses_what_a_load_would_refuse_and_stores_nothing(tmp_path, tiny_bert, damage):
    src = _saved_tiny(tmp_path, tiny_bert)
    if damage == "no weights":
        (src / "model.safetensors").unlink()
        expected = "weights"
    elif damage == "not safetensors":
        (src / "model.safetensors").write_bytes(b"this is not a safetensors file, but it is long enough" * 10)
        expected = "model.safetensors"
    else:
        src = tmp_path / "does" / "not" / "exist"
        expected = "no such directory"
    result = zoo_cli("-q", "import", str(src), "--name", "mine")
    assert result.returncode != 0
    assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "has no config.json" not in result.stderr
    listed = zoo_cli("versions", "local:mine")
    assert "v1" not in listed.stdout  # no version was made


@pytest.fixture
def store_on_small_disk():
    """ZOO_HOME on a 200 MB tmpfs: room for the pull's free-space check (90 MB + a 64 MB margin)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    home = Path(os.environ["ZOO_HOME"])
    home.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200m", "tmpfs", str(home)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount tmpfs here: {mounted.stderr.decode().strip()}")
    yield home
    subprocess.run(["umount", "-l", str(home)], check=False)


@pytest.mark.slow
def test_a_disk_that_fills_during_a_pull_is_said_as_such(hub_env, store_on_small_disk):
    """Another writer fills the disk once the download has begun: the error names the disk, not the network."""
    import threading
    import time

    home = store_on_small_disk
    done = threading.Event()

    def fill_once_downloading():
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline:
            if list((home / "tmp").glob("*.part")):
                with open(home / "filler", "wb", buffering=0) as f:
                    try:
                        while True:
                            f.write(bytes(1 << 20))
                    except OSError:  # the disk is full
                        return
            time.sleep(0.001)

    filler = threading.Thread(target=fill_once_downloading)
    filler.start()
    try:
        result = zoo_cli("-q", "pull", "bert-base-cased", env=hub_env)
    finally:
        done.set()
        filler.join()
    assert (home / "filler").exists(), "the disk was not filled while downloading"
    assert result.returncode != 0
    err = result.stderr
    assert "no space left on the device" in err and "zoo gc" in err, err
    assert "Check the network" not in err and "could not reach" not in err and "Traceback" not in err, err


@pytest.mark.slow
def test_zoo_verify_mends_every_path_a_load_opens(hub_env, hub, minilm_dir):
    """A repository's blob that is not the stored object (a copy made by a tool that does not keep hard
    links, then damaged with its mtime kept): a load's stat check cannot see it, and verify, which hashed
    only objects/, said all files intact. After zoo verify, the load returns the verified bytes."""
    pulled = zoo_cli("-q", "pull", "bert-base-cased", env=hub_env)
    assert pulled.returncode == 0, pulled.stderr
    home = Path(os.environ["ZOO_HOME"])
    weights = next(home.glob("hub/models--google-bert--bert-base-cased/snapshots/*/model.safetensors"))
    blob = weights.resolve()
    st = blob.stat()
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.unlink()
    blob.write_bytes(bytes(data))  # another inode, damaged
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the stat a load checks is as recorded
    verified = zoo_cli("verify", env=hub_env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    result = _load_and_compare(minilm_dir)
    assert result.returncode == 0, result.stderr
    assert "DIFFERENT 0 []" in result.stdout, result.stdout
    assert weights.resolve().stat().st_nlink >= 2  # the blob is the object again


@pytest.mark.slow
def test_zoo_versions_of_a_hub_repo_never_shadow_an_upstream_ref_for_hub_cache_readers(hub_env, hub):
    """zoo pull NAME@zoo:v1 is zoo's version 1, made present without asking the upstream (it asked the
    upstream for a ref 'v1'); in the hub layout zoo's versions of a hub repository are refs/zoo:vN, so a
    huggingface_hub reader of the store (HF_HUB_CACHE=$ZOO_HOME/hub, offline) never takes revision="v1"
    for zoo's version when it may be the upstream's tag."""
    first = zoo_cli("-q", "pull", "bert-base-cased", env=hub_env)
    assert first.returncode == 0, first.stderr
    hub.reset_counts()
    again = zoo_cli("pull", "bert-base-cased@zoo:v1", env=hub_env)
    assert again.returncode == 0, again.stderr
    assert " v1 " in again.stdout and hub.requests() == [], (again.stdout, hub.requests())
    home = Path(os.environ["ZOO_HOME"])
    reader = run_python("""
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import LocalEntryNotFoundError
        repo = "google-bert/bert-base-cased"
        print("zoo:v1", open(hf_hub_download(repo, "config.json", revision="zoo:v1")).read()[:1])
        try:
            hf_hub_download(repo, "config.json", revision="v1")
            print("v1 FOUND")
        except LocalEntryNotFoundError:
            print("v1 not cached")
    """, env={"HF_HUB_CACHE": str(home / "hub"), "HF_HUB_OFFLINE": "1"})
    assert reader.returncode == 0, reader.stderr
    assert "zoo:v1 {" in reader.stdout and "v1 not cached" in reader.stdout, reader.stdout


def test_an_import_never_keeps_a_stored_copy_that_rotted_unseen(tmp_path, tiny_bert):
    """Found by the model-based soak: content already stored is not written again, but a stored object
    damaged with its size and mtime kept (bit rot: no stat shows it) was kept in place of the good bytes
    an import brought, so the new version (and the old one) loaded the damaged bytes or failed. With good
    bytes in hand the import checks the stored copy; a rotten one goes to quarantine and both versions
    load the imported bytes."""
    first = _saved_tiny(tmp_path, tiny_bert)
    assert zoo_cli("-q", "import", str(first), "--name", "alpha").returncode == 0
    home = Path(os.environ["ZOO_HOME"])
    entry = next(f for f in json.loads(next(home.glob("versions/models--local--alpha/v*.json")).read_text())["files"]
                 if f["path"] == "model.safetensors")
    obj = home / "objects" / "sha256" / entry["sha256"][:2] / entry["sha256"]
    st = obj.stat()
    os.chmod(obj, 0o644)
    with open(obj, "r+b") as f:
        f.seek(st.st_size - 4)
        f.write(b"\xff\xff\xff\xff")
    os.utime(obj, ns=(st.st_atime_ns, st.st_mtime_ns))  # unseen: size and mtime as recorded
    second = tmp_path / "again"
    second.mkdir()
    for p in first.iterdir():
        (second / p.name).write_bytes(p.read_bytes())  # the same content, other files
    imported = zoo_cli("-q", "import", str(second), "--name", "beta")
    assert imported.returncode == 0, imported.stderr
    check = run_python(f"""
        import torch, zoo
        from safetensors.torch import load_file
        ref = load_file({str(first / "model.safetensors")!r})
        for name in ("beta", "alpha"):
            got = zoo.load(name).state_dict()
            shared = [k for k in ref if k in got]
            assert len(shared) == len(ref), (len(shared), len(ref))
            print(name, all(torch.equal(got[k], ref[k]) for k in shared))
    """)
    assert check.returncode == 0, check.stderr
    assert "beta True" in check.stdout and "alpha True" in check.stdout, check.stdout
    assert list((home / "quarantine").iterdir())  # the rotten copy is kept aside, not deleted


@pytest.mark.slow
def test_a_repair_leaves_no_blob_of_the_damaged_inode_under_any_name(hub_env, hub, tmp_path, tiny_bert):
    """Found by the model-based soak: one config.json is blobs/<git sha1> in a hub repository and
    blobs/<sha256> in an import. Damage that keeps the stat, found by zoo verify and fetched again by zoo
    pull, left the import's blob as the damaged inode (only blobs named by the hub's etag were unlinked):
    the import then failed to load with 'config.json is not valid JSON ... fix the file'."""
    src = _saved_tiny(tmp_path, tiny_bert)
    hub.add_repo("acme/shared-config", {p.name: p for p in src.iterdir()})
    assert zoo_cli("-q", "pull", "acme/shared-config", env=hub_env).returncode == 0
    assert zoo_cli("-q", "import", str(src), "--name", "alpha").returncode == 0
    home = Path(os.environ["ZOO_HOME"])
    config = next(home.glob("hub/models--local--alpha/snapshots/*/config.json")).resolve()
    assert config.stat().st_nlink >= 3  # the object, the import's blob, the hub repository's blob
    st = config.stat()
    os.chmod(config, 0o644)
    with open(config, "r+b") as f:
        f.write(b"#")  # not JSON any more; size and mtime kept: no stat shows it
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns))
    zoo_cli("verify", "acme/shared-config", env=hub_env)  # finds it, quarantines it
    assert zoo_cli("-q", "pull", "acme/shared-config", env=hub_env).returncode == 0  # fetched again
    loaded = run_python("""
        import zoo
        print(zoo.load_config("alpha").raw["model_type"])
    """)
    assert loaded.returncode == 0 and loaded.stdout.strip() == "bert", loaded.stderr
