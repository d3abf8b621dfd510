"""`zoo info NAME` answers from config.json and the safetensors headers, without importing torch, and its
figures are what a load gives; `zoo info --load` also loads."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_BERT

import zoo

ZOO = Path(sys.executable).with_name("zoo")  # the console script a user runs
HEAVY = ("torch", "transformers", "safetensors")


def zoo_cli(*args, env=None):
    return subprocess.run([str(ZOO), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def _imported(importtime_stderr: str) -> set[str]:
    """Top-level packages named by ``-X importtime`` lines (``import time: self | cumulative | name``)."""
    names = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A tiny GPT-2 (its output embedding is tied to its input: stored once) saved by zoo.save, sharded."""
    config = dict(model_type="gpt2", vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                  architectures=["GPT2LMHeadModel"])
    directory = tmp_path_factory.mktemp("info") / "gpt2"
    zoo.save(zoo.build(config), directory, max_shard_size=40_000)
    return directory


def test_info_does_not_import_torch(saved):
    result = zoo_cli("info", str(saved), env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "model_type:           gpt2" in result.stdout
    assert "parameters:" in result.stdout and "load:" not in result.stdout
    imported = _imported(result.stderr)
    assert "zoo" in imported  # the probe works
    assert not imported & set(HEAVY), imported & set(HEAVY)


def test_info_figures_are_what_a_load_and_the_file_hold(saved):
    result = zoo_cli("info", str(saved), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout)
    model = zoo.load(saved)
    # every parameter once (the tied lm_head is gpt2's wte), and the persistent buffers
    persistent = [b for name, b in model.named_buffers() if name.rpartition(".")[2] not in
                  model.get_submodule(name.rpartition(".")[0])._non_persistent_buffers_set]
    assert figures["parameters"] == sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for b in persistent if b.is_floating_point())
    assert figures["tensors"] == len(list(model.parameters())) + len(persistent)
    from safetensors import safe_open  # the reference reader agrees on the files

    names, sizes = [], {}
    for shard in sorted(saved.glob("*.safetensors")):
        with safe_open(shard, "pt") as f:
            for key in f.keys():
                names.append(key)
                t = f.get_tensor(key)
                dtype = {"torch.float32": "F32"}[str(t.dtype)]
                sizes[dtype] = sizes.get(dtype, 0) + t.numel() * t.element_size()
    assert figures["tensors"] == len(names)
    assert figures["dtypes"] == sizes
    assert figures["files"] == {p.name: p.stat().st_size for p in saved.iterdir()}
    assert figures["head"] == "GPT2LMHeadModel" and figures["format"] == "safetensors"


@pytest.mark.slow
def test_info_load_loads_and_agrees(saved):
    quick = zoo_cli("info", str(saved))
    full = zoo_cli("info", str(saved), "--load")
    assert full.returncode == 0, full.stderr[-3000:]
    assert full.stdout.startswith(quick.stdout)  # the same figures first, then the load
    assert "load:                 GPT2LMHeadModel, as saved" in full.stdout
    figures = json.loads(zoo_cli("info", str(saved), "--json").stdout)
    assert f"{figures['tensors']:,} tensors, {figures['parameters']:,} parameters as loaded" in full.stdout


def test_info_of_a_cached_name_without_torch(tmp_path):
    zoo.save(zoo.build(TINY_BERT), "info-me")
    result = zoo_cli("info", "info-me", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "model_type:           bert" in result.stdout
    assert not _imported(result.stderr) & set(HEAVY)


def test_info_refuses_a_damaged_folder_in_one_line(saved, tmp_path):
    folder = tmp_path / "damaged"
    folder.mkdir()
    for path in saved.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    shard = sorted(folder.glob("model-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:-1])
    result = zoo_cli("info", str(folder))
    assert result.returncode == 2
    assert result.stderr.startswith("zoo: error: ") and shard.name in result.stderr
    assert "Traceback" not in result.stderr
