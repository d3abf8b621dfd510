"""zoo.model.checkpoint.check_folder decides whether a checkpoint folder is complete and valid; loads use it.
Through the doors: zoo.load in a fresh process, the `zoo` command in a subprocess."""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_BERT, run_python

import zoo
from zoo.model.checkpoint import check_folder
from zoo.errors import (
    CheckpointNotFoundError,
    ConfigError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    WeightsNotFoundError,
    ZooError,
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A tiny BERT saved by zoo.save, sharded (three shards and an index)."""
    directory = tmp_path_factory.mktemp("ckpt") / "bert"
    zoo.save(zoo.build(TINY_BERT), directory, max_shard_size=20_000)
    assert (directory / "model.safetensors.index.json").is_file()
    return directory


def _copy(saved: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    out.mkdir()
    for path in saved.iterdir():
        (out / path.name).write_bytes(path.read_bytes())
    return out


def _index(folder: Path) -> dict:
    return json.loads((folder / "model.safetensors.index.json").read_text())


def _write_index(folder: Path, index: dict) -> None:
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


LOAD = """
import sys, zoo
from zoo.errors import ZooError
try:
    zoo.load({path!r})
except ZooError as exc:
    print("ZOOERROR", type(exc).__name__, exc)
    sys.exit(3)
print("LOADED")
"""


def _load_in_fresh_process(path: Path, timeout: int = 300) -> tuple[str, str]:
    """(class name of the zoo error, its message) of zoo.load(path) in a fresh process."""
    result = run_python(LOAD.format(path=str(path)), timeout=timeout)
    assert result.returncode == 3, (result.stdout + result.stderr)[-3000:]  # a zoo error, not a traceback
    line = next(line for line in result.stdout.splitlines() if line.startswith("ZOOERROR"))
    _, name, message = line.split(" ", 2)
    return name, message


def test_a_complete_folder_passes(saved):
    assert check_folder(saved) is None


def test_a_folder_that_does_not_exist_is_said_to_not_exist(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="no such directory"):
        check_folder(tmp_path / "does" / "not" / "exist")


def test_no_weights(saved, tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "config.json").write_bytes((saved / "config.json").read_bytes())
    with pytest.raises(WeightsNotFoundError, match="no weights"):
        check_folder(folder)


def test_no_model_type(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    del config["model_type"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="model_type"):
        check_folder(folder)


def test_a_weights_file_that_is_not_safetensors(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    for shard in folder.glob("model-*.safetensors"):
        shard.unlink()
    (folder / "model.safetensors.index.json").unlink()
    (folder / "model.safetensors").write_text("this is not a safetensors file\n")
    with pytest.raises(CorruptCheckpointError, match="model.safetensors is not a valid safetensors file"):
        check_folder(folder)


def test_a_shard_whose_offsets_pass_its_end(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    shard = sorted(folder.glob("model-*.safetensors"))[-1]
    data = shard.read_bytes()
    shard.write_bytes(data[:-10])  # truncated: the last tensor ends past the file
    with pytest.raises(CorruptCheckpointError, match=shard.name):
        check_folder(folder)


def test_a_damaged_adapter_beside_the_model(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    (folder / "adapter_model.safetensors").write_bytes(struct.pack("<Q", 10_000) + b"{}")
    with pytest.raises(CorruptCheckpointError, match="adapter_model.safetensors"):
        check_folder(folder)


def test_a_missing_shard(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    gone = sorted(folder.glob("model-*.safetensors"))[0]
    gone.unlink()
    with pytest.raises(CorruptCheckpointError, match=gone.name):
        check_folder(folder)


def test_an_index_that_places_a_tensor_in_the_wrong_shard(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    index = _index(folder)
    shards = sorted(set(index["weight_map"].values()))
    key = next(k for k, v in index["weight_map"].items() if v == shards[0])
    index["weight_map"][key] = shards[1]
    _write_index(folder, index)
    with pytest.raises(CorruptCheckpointError, match="do not hold them"):
        check_folder(folder)


@pytest.mark.parametrize("name,problem", [
    ("model-00001\x00-of-00003.safetensors", "NUL"),
    ("../model-00001-of-00003.safetensors", "path separator"),
    ("/etc/passwd", "path separator"),
    ("..", "hidden or relative"),
    ("m" * 256 + ".safetensors", "at most 255"),
    ("", "empty"),
    (7, "not a string"),
])
def test_unsafe_shard_names_in_an_index(saved, tmp_path, name, problem):
    folder = _copy(saved, tmp_path)
    index = _index(folder)
    index["weight_map"][next(iter(index["weight_map"]))] = name
    _write_index(folder, index)
    with pytest.raises(CorruptCheckpointError, match=problem):
        check_folder(folder)


def test_a_legacy_tar_bin_is_refused(saved, tmp_path):
    folder = tmp_path / "legacy"
    folder.mkdir()
    (folder / "config.json").write_bytes((saved / "config.json").read_bytes())
    (folder / "pytorch_model.bin").write_bytes(bytes(257) + b"ustar" + bytes(1000))
    with pytest.raises(UnsafeCheckpointError, match="legacy tar format"):
        check_folder(folder)


def test_a_truncated_zip_bin_is_refused(saved, tmp_path):
    import torch

    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "config.json").write_bytes((saved / "config.json").read_bytes())
    torch.save({"w": torch.ones(100)}, folder / "pytorch_model.bin")
    check_folder(folder)
    data = (folder / "pytorch_model.bin").read_bytes()
    (folder / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match="pytorch_model.bin"):
        check_folder(folder)


def test_the_check_never_imports_torch(saved):
    result = run_python(f"""
        import sys
        from zoo.model.checkpoint import check_folder
        check_folder({str(saved)!r})
        print(sorted(m for m in ("torch", "transformers", "safetensors") if m in sys.modules))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


# -- through the user's doors --------------------------------------------------------------------------

@pytest.mark.slow
def test_load_refuses_a_nul_in_a_shard_name_with_a_zoo_error(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    index = _index(folder)
    index["weight_map"] = {k: v.replace("-of-", "\x00-of-") for k, v in index["weight_map"].items()}
    _write_index(folder, index)
    name, message = _load_in_fresh_process(folder)
    assert name == "CorruptCheckpointError"
    assert "model.safetensors.index.json" in message and "NUL" in message


@pytest.mark.slow
def test_load_refuses_a_damaged_adapter_beside_the_model(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    (folder / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    name, message = _load_in_fresh_process(folder)
    assert name == "CorruptCheckpointError"
    assert "adapter_model.safetensors" in message


@pytest.mark.slow
@pytest.mark.parametrize("field,value", [
    ("num_hidden_layers", 1_000_000),
    ("text_config.num_hidden_layers", 1_000_000),
])
def test_load_refuses_a_config_with_a_million_layers_at_once(saved, tmp_path, field, value):
    folder = _copy(saved, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    if "." in field:
        outer, inner = field.split(".")
        config[outer] = {inner: value}
    else:
        config[field] = value
    (folder / "config.json").write_text(json.dumps(config))
    name, message = _load_in_fresh_process(folder, timeout=120)  # before: no answer within 120 s
    assert name == "ConfigError"
    assert field in message and "1000000" in message and "ZOO_MAX_LAYERS" in message


def test_build_refuses_a_million_layers():
    with pytest.raises(ConfigError, match="num_hidden_layers is 1000000"):
        zoo.build(dict(TINY_BERT, num_hidden_layers=1_000_000))


def test_a_layer_list_is_not_summed_unless_it_is_depths():
    from zoo.model.config import check_sizes

    check_sizes({"cross_attention_layers": list(range(3, 100, 5))}, "config")  # indices of layers
    with pytest.raises(ConfigError, match="depths"):
        check_sizes({"depths": [600, 600]}, "config")


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["nul in a shard name", "a million layers"])
def test_zoo_import_refuses_what_a_load_would_refuse(saved, tmp_path, damage):
    folder = _copy(saved, tmp_path)
    if damage == "nul in a shard name":
        index = _index(folder)
        index["weight_map"] = {k: v.replace("-of-", "\x00-of-") for k, v in index["weight_map"].items()}
        _write_index(folder, index)
        expected = "NUL"
    else:
        config = json.loads((folder / "config.json").read_text())
        config["num_hidden_layers"] = 1_000_000
        (folder / "config.json").write_text(json.dumps(config))
        expected = "num_hidden_layers is 1000000"
    result = subprocess.run([sys.executable, "-m", "zoo", "import", str(folder), "--name", "refused"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("zoo: error: ") and expected in result.stderr
    assert "Traceback" not in result.stderr
    listed = subprocess.run([sys.executable, "-m", "zoo", "versions", "refused"], capture_output=True, text=True,
                            timeout=120)
    assert "v1" not in listed.stdout  # nothing was stored
