"""Revisions mean what they mean upstream; zoo's own versions are ``zoo:vN`` (#16, defect 4).

The upstream (olah, tests/hubserver.py) has a repository whose tag ``v1`` is another commit than ``main``.
- Over the hub protocol (an unmodified huggingface_hub against a real ``zoo daemon --http``), ``revision="v1"``
  is the upstream's tag, before and after ``main`` was pulled (when zoo's own v1 is another commit), and
  ``revision="zoo:v1"`` is zoo's version 1.
- In Python (``zoo.load_config`` in a fresh process) and the CLI, ``org/name@v1`` once the store knows the
  upstream has a tag ``v1`` is refused as ambiguous, naming ``@zoo:v1`` and the tag's commit;
  ``@zoo:vN`` and the commit load what they name. Without such a tag, ``@v1`` stays zoo's version 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_BERT
from http_daemon import HttpDaemon


def _files(n: int) -> dict[str, bytes]:
    from safetensors.numpy import save

    config = json.dumps({**TINY_BERT, "n": n}).encode()
    return {"config.json": config,
            "model.safetensors": save({"marker": np.full((64,), n, dtype=np.float32)})}


def tagged_repo(hub, name: str) -> tuple[str, str, str]:
    """A repository whose tag v1 is commit ``tag`` (n=1) and whose main is the next commit (n=2)."""
    repo = f"zoo-tests/{name}-{os.getpid()}-{time.monotonic_ns()}"
    tag = hub.add_repo(repo, _files(1), tag="v1")
    main = hub.add_repo(repo, _files(2))
    assert tag != main
    return repo, tag, main


def _n(path: str) -> int:
    return json.loads(Path(path).read_text())["n"]


@pytest.mark.slow
def test_hub_clients_get_the_upstreams_tag_and_zoo_versions_as_zoo_vN(hub, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.errors import RevisionNotFoundError

    early, early_tag, _ = tagged_repo(hub, "tag-first")
    late, late_tag, late_main = tagged_repo(hub, "main-first")
    with HttpDaemon(tmp_path / "served", upstream=hub.endpoint) as daemon:
        def get(repo: str, revision: str, path: str = "config.json", n: int = 0) -> str:
            return hf_hub_download(repo, path, revision=revision, cache_dir=tmp_path / f"c-{time.monotonic_ns()}",
                                   endpoint=daemon.endpoint)

        # before main was ever pulled: the tag is the upstream's (it was "not found")
        assert _n(get(early, "v1")) == 1
        # main first: zoo's v1 is main's commit; the tag v1 is still the upstream's tag, not zoo's v1
        assert _n(get(late, "main")) == 2
        get(late, "main", "model.safetensors")
        tag_path = get(late, "v1")
        assert _n(tag_path) == 1 and f"/snapshots/{late_tag}/" in tag_path
        weights = get(late, "v1", "model.safetensors")
        assert Path(weights).read_bytes() == _files(1)["model.safetensors"]  # the tag's bytes
        api = HfApi(endpoint=daemon.endpoint)
        assert api.model_info(late, revision="v1").sha == late_tag
        # zoo's own versions, as zoo:vN (huggingface_hub quotes the ':')
        assert api.model_info(late, revision="zoo:v1").sha == late_main
        assert _n(get(late, "zoo:v1")) == 2
        snap = Path(snapshot_download(late, revision="zoo:v2", cache_dir=tmp_path / "snap", endpoint=daemon.endpoint))
        assert _n(snap / "config.json") == 1  # the tag's commit became zoo's v2
        assert (snap / "model.safetensors").read_bytes() == _files(1)["model.safetensors"]
        with pytest.raises(RevisionNotFoundError):
            api.model_info(late, revision="zoo:v9")
        with pytest.raises(RevisionNotFoundError):
            api.model_info(late, revision="v9")  # no such tag upstream (zoo's v9 does not exist either)


def _run(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


@pytest.mark.slow
def test_python_and_cli_refuse_a_plain_vN_the_upstream_has_as_a_tag(hub, tmp_path):
    repo, tag, main = tagged_repo(hub, "py")
    plain, _, plain_main = tagged_repo(hub, "py-untagged")
    env = {**os.environ, "ZOO_HOME": str(tmp_path / "home"), "HF_ENDPOINT": hub.endpoint, "ZOO_QUIET": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("ZOO_OFFLINE", None)
    for name in (repo, f"{repo}@v1", plain):  # zoo's v1 = main; the upstream's tag v1 (another commit) = zoo's v2
        out = _run(["-m", "zoo", "pull", name], env, tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
    code = (
        "import json, sys, zoo\n"
        "out = {}\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        out[name] = zoo.load_config(name).raw['n']\n"
        "    except zoo.ZooError as exc:\n"
        "        out[name] = f'{type(exc).__name__}: {exc}'\n"
        "print(json.dumps(out))\n"
    )
    names = [f"{repo}@v1", f"hf:{repo}@v1", f"{repo}@zoo:v1", f"hf:{repo}@zoo:v2", f"{repo}@{tag}", f"{repo}@v2",
             f"{plain}@v1", f"{plain}@zoo:v1", f"{repo}@zoo:main"]
    env_offline = {**env, "ZOO_OFFLINE": "1"}  # warm: nothing is asked upstream to decide
    hub.reset_counts()
    out = _run(["-c", code, *names], env_offline, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.splitlines()[-1])
    for name in (f"{repo}@v1", f"hf:{repo}@v1"):
        assert got[name].startswith("AmbiguousNameError"), got[name]
        assert f"{repo}@zoo:v1" in got[name] and f"{repo}@{tag}" in got[name], got[name]
    assert got[f"{repo}@zoo:v1"] == 2 and got[f"hf:{repo}@zoo:v2"] == 1 and got[f"{repo}@{tag}"] == 1
    assert got[f"{repo}@v2"] == 1  # no upstream ref v2: zoo's version 2
    assert got[f"{plain}@v1"] == 2 and got[f"{plain}@zoo:v1"] == 2  # no tag v1 known upstream: zoo's v1
    assert got[f"{repo}@zoo:main"].startswith("InvalidNameError"), got[f"{repo}@zoo:main"]
    assert hub.requests() == []

    refused = _run(["-m", "zoo", "pin", f"{repo}@v1"], env, tmp_path)
    assert refused.returncode != 0 and "@zoo:v1" in refused.stderr and tag in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    pinned = _run(["-m", "zoo", "pin", f"{repo}@zoo:v1"], env, tmp_path)
    assert pinned.returncode == 0 and "v1" in pinned.stdout, pinned.stderr
