"""Each bad input gets a typed zoo error that names the problem and the fix; nothing runs from a checkpoint."""

import json
import os

import pytest
import torch

import zoo
from zoo.model import build

from conftest import write_config


@pytest.fixture
def saved(tmp_path, tiny_bert):
    model = zoo.build(tiny_bert)
    return zoo.save(model, tmp_path / "good")


def test_path_that_does_not_exist(tmp_path):
    with pytest.raises(zoo.CheckpointNotFoundError, match="no such directory.*save_pretrained") as info:
        zoo.load(tmp_path / "nope")
    assert isinstance(info.value, FileNotFoundError)


def test_directory_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(zoo.ConfigError, match="no config.json.*zoo.save"):
        zoo.load(tmp_path / "empty")


def test_malformed_json(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "bert",\n "hidden_size": }')
    with pytest.raises(zoo.ConfigError, match="not valid JSON.*line 2"):
        zoo.load(d)
    (d / "config.json").write_text("[1, 2]")
    with pytest.raises(zoo.ConfigError, match="expected an object"):
        zoo.load(d)


def test_config_without_model_type(tmp_path):
    d = write_config(tmp_path / "nomt", {"architectures": ["BertModel"], "hidden_size": 32})
    with pytest.raises(zoo.ConfigError, match=r"no 'model_type'.*BertModel.*\"model_type\": \"bert\""):
        zoo.load(d)


def test_unknown_model_type_names_installed_and_close_matches(tmp_path):
    d = write_config(tmp_path / "bret", {"model_type": "bret", "transformers_version": "5.0.0"})
    with pytest.raises(zoo.UnknownArchitectureError) as info:
        zoo.load(d)
    message = str(info.value)
    assert "'bret'" in message and "Installed architectures: bert" in message
    assert "Did you mean: bert?" in message
    assert isinstance(info.value, KeyError)


def test_unknown_model_type_that_transformers_knows(tmp_path):
    d = write_config(tmp_path / "gpt2", {"model_type": "gpt2", "transformers_version": "5.0.0"})
    with pytest.raises(zoo.UnknownArchitectureError, match="transformers .* knows 'gpt2'.*plugin"):
        zoo.load(d, registry=zoo.Registry(disabled=["transformers"]))  # else its fallback serves gpt2


def test_unknown_model_type_from_newer_transformers(tmp_path):
    d = write_config(tmp_path / "future", {"model_type": "quantum-bert", "transformers_version": "99.1.0"})
    with pytest.raises(zoo.UnknownArchitectureError, match=r"99\.1\.0.*pip install -U 'transformers>=99\.1\.0'"):
        zoo.load(d)


def test_unknown_model_type_of_a_known_plugin(tmp_path):
    d = write_config(tmp_path / "tn", {"model_type": "tinynet"})
    registry = zoo.Registry(entry_points=False, plugins=[])
    with pytest.raises(zoo.UnknownArchitectureError, match="pip install -e examples/zoo-tinynet"):
        zoo.load(d, registry=registry)


def test_no_weights_file(tmp_path, tiny_bert):
    d = write_config(tmp_path / "noweights", tiny_bert)
    (d / "tf_model.h5").write_bytes(b"\x89HDF")
    with pytest.raises(zoo.WeightsNotFoundError, match="no weights.*model.safetensors.*tf_model.h5.*PyTorch"):
        zoo.load(d)


def test_truncated_safetensors(saved):
    path = saved / "model.safetensors"
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(zoo.CorruptCheckpointError, match="truncated.*again"):
        zoo.load(saved)
    path.write_bytes(b"\x01\x02")
    with pytest.raises(zoo.CorruptCheckpointError, match="too short"):
        zoo.load(saved)
    path.write_bytes((10).to_bytes(8, "little") + b"not json!!" + b"\0" * 16)
    with pytest.raises(zoo.CorruptCheckpointError, match="not valid JSON"):
        zoo.load(saved)


def test_missing_shard_raises_before_building(tmp_path, tiny_bert, monkeypatch):
    model = zoo.build(tiny_bert)
    out = zoo.save(model, tmp_path / "sharded", max_shard_size="20KB")
    shards = sorted(out.glob("model-*.safetensors"))
    shards[1].unlink()

    def must_not_build(*args, **kwargs):
        raise AssertionError("a model was built from an incomplete checkpoint")

    monkeypatch.setattr(build, "empty_model", must_not_build)
    with pytest.raises(zoo.CorruptCheckpointError, match=rf"1 are missing: {shards[1].name}.*incomplete"):
        zoo.load(out)


def test_truncated_shard(tmp_path, tiny_bert):
    out = zoo.save(zoo.build(tiny_bert), tmp_path / "sharded", max_shard_size="20KB")
    shard = sorted(out.glob("model-*.safetensors"))[-1]
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size - 1)
    with pytest.raises(zoo.CorruptCheckpointError, match=shard.name):
        zoo.load(out)


def test_index_with_path_traversal(tmp_path, tiny_bert):
    out = zoo.save(zoo.build(tiny_bert), tmp_path / "sharded", max_shard_size="20KB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = "../../etc/passwd"
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(zoo.CorruptCheckpointError, match="not a plain file name"):
        zoo.load(out)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_in_bin_is_refused_and_nothing_runs(tmp_path, tiny_bert):
    d = write_config(tmp_path / "evil", dict(tiny_bert, architectures=["BertModel"]))
    marker = tmp_path / "pwned"
    torch.save({"embeddings.word_embeddings.weight": torch.zeros(2), "x": _Exploit(marker)}, d / "pytorch_model.bin")
    with pytest.raises(zoo.UnsafeCheckpointError, match="never runs code"):
        zoo.load(d)
    assert not marker.exists()
    with pytest.raises(zoo.UnsafeCheckpointError):
        zoo.load(d, strict=True)
    assert not marker.exists()


def test_truncated_bin(tmp_path, tiny_bert):
    d = write_config(tmp_path / "bin", tiny_bert)
    torch.save(zoo.build(tiny_bert).state_dict(), d / "pytorch_model.bin")
    data = (d / "pytorch_model.bin").read_bytes()
    (d / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(zoo.CorruptCheckpointError, match="damaged or incomplete"):
        zoo.load(d)


def test_checkpoint_from_newer_transformers(saved):
    config = json.loads((saved / "config.json").read_text())
    config["transformers_version"] = "99.2.0"
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.warns(zoo.VersionWarning, match=r"99\.2\.0, newer than the installed 5\.") as record:
        model = zoo.load(saved)
    assert "pip install -U 'transformers>=99.2.0'" in str(record[0].message)
    assert model is not None
    with pytest.raises(zoo.IncompatibleVersionError, match=r"99\.2\.0"):
        zoo.load(saved, strict=True)


def test_strict_mode_from_environment(saved, monkeypatch):
    config = json.loads((saved / "config.json").read_text())
    config["transformers_version"] = "99.2.0"
    (saved / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("ZOO_STRICT", "1")
    with pytest.raises(zoo.IncompatibleVersionError):
        zoo.load(saved)


def test_architectures_not_provided_by_plugin(saved):
    config = json.loads((saved / "config.json").read_text())
    config["architectures"] = ["BertForTimeTravel"]
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(zoo.UnknownTaskError, match="BertForTimeTravel.*task="):
        zoo.load(saved)
    assert type(zoo.load(saved, task="base")).__name__ == "BertModel"


def test_failed_loads_leave_the_checkpoint_untouched(tmp_path, tiny_bert):
    out = zoo.save(zoo.build(tiny_bert), tmp_path / "sharded", max_shard_size="20KB")
    config = json.loads((out / "config.json").read_text())
    config["transformers_version"] = "99.0.0"
    (out / "config.json").write_text(json.dumps(config))
    last = sorted(out.glob("model-*.safetensors"))[-1]
    with open(last, "r+b") as f:
        f.truncate(last.stat().st_size - 3)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(zoo.IncompatibleVersionError):
        zoo.load(out, strict=True)
    with pytest.warns(zoo.VersionWarning), pytest.raises(zoo.CorruptCheckpointError):
        zoo.load(out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_overlapping_tensors_in_a_header_are_refused(saved):
    path = saved / "model.safetensors"
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    names = [k for k in header if k != "__metadata__"]
    header[names[1]]["data_offsets"] = header[names[0]]["data_offsets"]  # alias another tensor's bytes
    header[names[1]]["shape"] = header[names[0]]["shape"]
    header[names[1]]["dtype"] = header[names[0]]["dtype"]
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n:])
    with pytest.raises(zoo.CorruptCheckpointError, match="overlap or leave gaps"):
        zoo.load(saved)


def test_bin_index_with_missing_shard_raises_before_building(tmp_path, tiny_bert, monkeypatch):
    d = write_config(tmp_path / "binshards", tiny_bert)
    state = zoo.build(tiny_bert).state_dict()
    names = list(state)
    torch.save({k: state[k] for k in names[:5]}, d / "pytorch_model-00001-of-00002.bin")
    weight_map = {k: ("pytorch_model-00001-of-00002.bin" if i < 5 else "pytorch_model-00002-of-00002.bin")
                  for i, k in enumerate(names)}
    (d / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    monkeypatch.setattr(build, "empty_model", lambda *a, **k: pytest.fail("built a model"))
    with pytest.raises(zoo.CorruptCheckpointError, match="pytorch_model-00002-of-00002.bin are missing"):
        zoo.load(d)


def test_patch_newer_transformers_warns_too(saved):
    import transformers
    from packaging.version import Version

    v = Version(transformers.__version__)
    config = json.loads((saved / "config.json").read_text())
    config["transformers_version"] = f"{v.major}.{v.minor}.{v.micro + 1}"
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.warns(zoo.VersionWarning, match="newer than the installed"):
        zoo.load(saved)


def test_bad_dtype_and_broken_plugin_class_are_zoo_errors(saved):
    import types

    with pytest.raises(zoo.InvalidArgumentError, match="float99"):
        zoo.load(saved, dtype="float99")

    def zoo_register_architectures(register):
        register(zoo.Architecture("bert", "transformers:BertConfig", {"BertModel": "zoo_missing_module:Model"}))

    plugin = types.ModuleType("halfbaked")
    plugin.zoo_register_architectures = zoo.hookimpl(zoo_register_architectures)
    registry = zoo.Registry([("halfbaked", plugin)], entry_points=False)
    with pytest.raises(zoo.PluginLoadError, match="plugin 'halfbaked' names class 'zoo_missing_module:Model'"):
        zoo.load(saved, registry=registry)
