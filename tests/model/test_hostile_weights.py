"""Hostile weight and config files (issue 6, defects 2, 9, 10, 11): each is refused with a zoo error that
names the file, the problem and the fix, before a model is built; files the formats allow still load."""

import json
import os
import re
import struct
import tarfile
import threading
import warnings
import zipfile

import pytest
import torch

import zoo
from zoo.model import build
from zoo.api import default_registry
from zoo.model.config import parse_config
from zoo.plugins.spec import resolve_class
from zoo.model.weights import read_safetensors_header

from conftest import write_config


@pytest.fixture
def saved(tmp_path, tiny_bert):
    return zoo.save(zoo.build(tiny_bert), tmp_path / "good")


@pytest.fixture
def no_build(monkeypatch):
    monkeypatch.setattr(build, "empty_model", lambda *a, **k: pytest.fail("a model was built"))


def rewrite_header(path, edit):
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    edit(header)
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n:])


def rewrite_zip(path, edit, compression=zipfile.ZIP_STORED):
    """Write the zip again with Python's zipfile, passing each record's bytes through ``edit``."""
    with zipfile.ZipFile(path) as src:
        records = [(info.filename, src.read(info)) for info in src.infolist()]
    with zipfile.ZipFile(path, "w", compression) as dst:
        for name, data in records:
            dst.writestr(name, edit(name, data))


def bin_checkpoint(directory, config, state):
    write_config(directory, config)
    torch.save(state, directory / "pytorch_model.bin")
    return directory


def safetensors_file(path, header, data=b"", pad=b""):
    raw = json.dumps(header).encode() + pad
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


# -- 2. a truncated record inside a zip-format pytorch_model.bin ---------------------------------------------

def test_truncated_record_in_zip_bin_is_refused_before_building(tmp_path, tiny_bert, no_build):
    d = bin_checkpoint(tmp_path / "bin", tiny_bert, zoo.build(tiny_bert).state_dict())
    with zipfile.ZipFile(d / "pytorch_model.bin") as z:
        records = [i for i in z.infolist() if "/data/" in i.filename and not i.filename.endswith("/")]
    victim = max(records, key=lambda i: (i.file_size, i.filename)).filename  # a big record in the middle
    rewrite_zip(d / "pytorch_model.bin", lambda name, data: data[: len(data) // 2] if name == victim else data)
    with pytest.raises(zoo.CorruptCheckpointError) as info:
        zoo.load(d)
    message = str(info.value)
    assert str(d / "pytorch_model.bin") in message and victim in message
    assert "truncated" in message and "again" in message


def test_zip_bin_rewritten_intact_or_compressed_still_loads(tmp_path, tiny_bert):
    model = zoo.build(tiny_bert).eval()
    for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        d = bin_checkpoint(tmp_path / f"bin{compression}", tiny_bert, model.state_dict())
        rewrite_zip(d / "pytorch_model.bin", lambda name, data: data, compression)
        loaded = zoo.load(d)
        for name, tensor in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], tensor), name


def test_shared_storages_and_views_in_a_bin_still_load(tmp_path, tiny_bert):
    state = zoo.build(tiny_bert).state_dict()
    state["extra.view"] = state["embeddings.word_embeddings.weight"][3:7]  # a view: same storage, offset
    d = bin_checkpoint(tmp_path / "bin", tiny_bert, state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", zoo.WeightsWarning)  # extra.view is not a weight of BertModel
        loaded = zoo.load(d)
    assert torch.equal(loaded.embeddings.word_embeddings.weight, state["embeddings.word_embeddings.weight"])


# -- 9. raw tracebacks: nesting, impossible sizes, non-tensor values --------------------------------------------

DEEP = 100_000  # far past Python's recursion limit


def test_deeply_nested_config_json(tmp_path):
    d = tmp_path / "deep"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "bert", "x": ' + "[" * DEEP + "]" * DEEP + "}")
    with pytest.raises(zoo.ConfigError, match=rf"{d / 'config.json'}.*nested too deeply.*Fix the file"):
        zoo.load(d)


def test_deeply_nested_safetensors_header(saved, no_build):
    rewrite_header(saved / "model.safetensors", lambda h: h.update({"__metadata__": None}))
    path = saved / "model.safetensors"
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    deep = b'{"x": ' + b"[" * DEEP + b"]" * DEEP + b", " + data[9:8 + n]
    path.write_bytes(len(deep).to_bytes(8, "little") + deep + data[8 + n:])
    with pytest.raises(zoo.CorruptCheckpointError, match=rf"{path}.*nested too deeply.*again"):
        zoo.load(saved)


def test_deeply_nested_shard_index(tmp_path, tiny_bert, no_build):
    out = zoo.save(zoo.build(tiny_bert), tmp_path / "sharded", max_shard_size="20KB")
    index = out / "model.safetensors.index.json"
    text = index.read_text()
    index.write_text('{"metadata": ' + "[" * DEEP + "]" * DEEP + ", " + text.strip()[1:])
    with pytest.raises(zoo.CorruptCheckpointError, match=rf"{index}.*nested too deeply.*Re-save"):
        zoo.load(out)


@pytest.mark.parametrize("field, value, need", [
    ("num_attention_heads", 0, "positive"),
    ("vocab_size", -5, "non-negative"),
    ("hidden_size", 0, "positive"),
    ("num_hidden_layers", -1, "non-negative"),
])
def test_impossible_sizes_are_config_errors(tmp_path, tiny_bert, field, value, need):
    config = dict(tiny_bert, **{field: value})
    d = write_config(tmp_path / "cfg", config)
    with pytest.raises(zoo.ConfigError, match=rf"{d / 'config.json'}: {field} is {value}.*{need} integer.*config.json"):
        zoo.load(d)
    with pytest.raises(zoo.ConfigError, match=rf"{field} is {value}"):
        zoo.build(config)


def test_size_check_looks_into_nested_configs_and_keeps_valid_zeros(tiny_bert):
    registry = default_registry()

    with pytest.raises(zoo.ConfigError, match=r"text_config\.num_attention_heads is 0"):
        parse_config(dict(tiny_bert, text_config={"num_attention_heads": 0}), registry)
    with pytest.raises(zoo.ConfigError, match=r"num_heads is \[4, -2\]"):
        parse_config(dict(tiny_bert, num_heads=[4, -2]), registry)
    # zeros that real configs carry (BERT's chunk_size_feed_forward, DeBERTa-v3's type_vocab_size), booleans,
    # floats, nulls and DeBERTa's max_relative_positions=-1 are not sizes this check refuses
    ok = dict(tiny_bert, chunk_size_feed_forward=0, type_vocab_size=0, no_repeat_ngram_size=0,
              max_relative_positions=-1, num_beams=1, n_inner=None, tie_word_embeddings=True)
    parse_config(ok, registry)
    assert zoo.build(ok) is not None


def test_unknown_activation_names_the_field(tmp_path, tiny_bert):
    d = write_config(tmp_path / "act", dict(tiny_bert, hidden_act="evil"))
    cfg = zoo.load_config(d)
    cls = resolve_class(cfg.architecture.heads[cfg.architecture.head_for(None, list(cfg.architectures))], cfg.plugin)
    with pytest.raises(zoo.ConfigError, match=rf"{d / 'config.json'}: BertModel cannot be built.*hidden_act='evil'"):
        with cfg.building(cls):
            cls(cfg.config)
    with pytest.raises(zoo.ConfigError, match=r"ZeroDivisionError"):  # no field to name: the error's own words
        with cfg.building(cls):
            1 // 0


def test_unknown_activation_through_load_and_build(tmp_path, tiny_bert):
    d = write_config(tmp_path / "act", dict(tiny_bert, hidden_act="evil"))
    with pytest.raises(zoo.ConfigError, match="hidden_act='evil'"):
        zoo.build(dict(tiny_bert, hidden_act="evil"))
    torch.save(zoo.build(tiny_bert).state_dict(), d / "pytorch_model.bin")
    with pytest.raises(zoo.ConfigError, match="hidden_act='evil'"):
        zoo.load(d)


@pytest.mark.parametrize("value", [3, "hello", [1, 2], None])
def test_non_tensor_values_in_a_bin(tmp_path, tiny_bert, value):
    state = zoo.build(tiny_bert).state_dict()
    state["step"] = value
    d = bin_checkpoint(tmp_path / "bin", tiny_bert, state)
    with pytest.raises(zoo.CorruptCheckpointError, match=rf"{d / 'pytorch_model.bin'}.*'step' is a "
                       rf"{type(value).__name__}.*state_dict\(\)"):
        zoo.load(d)


# -- 10. messages: entries that are not files, the legacy tar format ------------------------------------------

def _load_in_thread(directory, seconds=60):
    """zoo.load in a daemon thread, so that a load blocked on a FIFO fails the test instead of hanging it."""
    outcome = {}

    def target():
        try:
            outcome["value"] = zoo.load(directory)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"zoo.load({directory}) blocked"
    return outcome


@pytest.mark.parametrize("kind, words", [
    ("directory", "model.safetensors is a directory, not a file"),
    ("dangling symlink", "model.safetensors is a symlink to .*gone.safetensors, which does not exist"),
    ("fifo", r"model.safetensors is a FIFO \(named pipe\), not a file"),
])
def test_weights_entry_that_is_not_a_file(tmp_path, tiny_bert, kind, words):
    d = write_config(tmp_path / "ckpt", tiny_bert)
    entry = d / "model.safetensors"
    if kind == "directory":
        entry.mkdir()
    elif kind == "dangling symlink":
        entry.symlink_to(tmp_path / "gone.safetensors")
    else:
        os.mkfifo(entry)
    error = _load_in_thread(d).get("error")
    assert isinstance(error, zoo.WeightsNotFoundError), error
    message = str(error)
    assert str(d) in message and "found model.safetensors" not in message
    assert re.search(words, message), message
    assert "replace the entry" in message


def test_fifo_shard_and_fifo_config_do_not_block(tmp_path, tiny_bert):
    out = zoo.save(zoo.build(tiny_bert), tmp_path / "sharded", max_shard_size="20KB")
    shard = sorted(out.glob("model-*.safetensors"))[0]
    shard.unlink()
    os.mkfifo(shard)
    error = _load_in_thread(out).get("error")
    assert isinstance(error, zoo.CorruptCheckpointError) and f"{shard.name} is a FIFO" in str(error), error
    config = out / "config.json"
    config.unlink()
    os.mkfifo(config)
    error = _load_in_thread(out).get("error")
    assert isinstance(error, zoo.ConfigError) and "config.json is a FIFO" in str(error), error


def test_open_refuses_a_fifo_without_blocking(tmp_path):
    """Also when the entry turns into a FIFO after the directory was checked."""
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    outcome = {}

    def target():
        try:
            read_safetensors_header(fifo)
        except zoo.CorruptCheckpointError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive() and "FIFO" in str(outcome["error"])


def test_legacy_tar_bin_says_old_format_and_how_to_convert(tmp_path, tiny_bert, no_build):
    d = write_config(tmp_path / "old", tiny_bert)
    path = d / "pytorch_model.bin"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:  # the layout torch < 0.4 wrote
        for name in ("sys_info", "pickle", "storages", "tensors"):
            (tmp_path / name).write_bytes(b"\x80\x02}q\x00.")
            tar.add(tmp_path / name, arcname=name)
    with pytest.raises(zoo.UnsafeCheckpointError) as info:
        zoo.load(d)
    message = str(info.value)
    assert str(path) in message and "legacy tar format" in message and "damaged" not in message
    assert "weights_only=False" in message and "safetensors" in message and "save_pretrained" in message


# -- 11. safetensors parsing follows the format, as the safetensors library does ------------------------------

def _tensor(header, index=0):
    names = [k for k in header if k != "__metadata__"]
    return header[names[index]]


@pytest.mark.parametrize("edit, words", [
    ("trailing", "bytes after the last tensor belong to no tensor"),
    ("float in shape", "malformed header entry"),
    ("true in shape", "malformed header entry"),
    ("string in shape", "malformed header entry"),
    ("float offset", "malformed header entry"),
    ("list metadata", "__metadata__ must map strings to strings"),
    ("int metadata value", "__metadata__ must map strings to strings"),
])
def test_lenient_safetensors_is_refused(saved, no_build, edit, words):
    path = saved / "model.safetensors"
    if edit == "trailing":
        with open(path, "ab") as f:
            f.write(b"\0" * 8)
    elif edit == "float in shape":  # 32.5 used to be read as 32
        rewrite_header(path, lambda h: _tensor(h)["shape"].__setitem__(-1, _tensor(h)["shape"][-1] + 0.5))
    elif edit == "true in shape":  # bool is an int in Python: [d, true] used to be read as [d, 1]
        rewrite_header(path, lambda h: _tensor(h)["shape"].append(True))
    elif edit == "string in shape":
        rewrite_header(path, lambda h: _tensor(h)["shape"].__setitem__(0, str(_tensor(h)["shape"][0])))
    elif edit == "float offset":
        rewrite_header(path, lambda h: _tensor(h)["data_offsets"].__setitem__(1, _tensor(h)["data_offsets"][1] * 1.0))
    elif edit == "list metadata":
        rewrite_header(path, lambda h: h.update({"__metadata__": ["format", "pt"]}))
    else:
        rewrite_header(path, lambda h: h.update({"__metadata__": {"format": "pt", "step": 3}}))
    with pytest.raises(zoo.CorruptCheckpointError) as info:
        zoo.load(saved)
    message = str(info.value)
    assert str(path) in message and words in message and "again" in message


F32x2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
CASES = {  # name: (header, data, padding); the safetensors library is the judge of which are valid
    "plain": ({"a": F32x2}, b"\0" * 8, b""),
    "trailing byte": ({"a": F32x2}, b"\0" * 9, b""),
    "no tensors": ({}, b"", b""),
    "no tensors, one byte": ({}, b"\0", b""),
    "metadata only": ({"__metadata__": {"format": "pt"}}, b"", b""),
    "null metadata": ({"__metadata__": None, "a": F32x2}, b"\0" * 8, b""),
    "null metadata value": ({"__metadata__": {"k": None}, "a": F32x2}, b"\0" * 8, b""),
    "nested metadata": ({"__metadata__": {"k": {"x": "y"}}, "a": F32x2}, b"\0" * 8, b""),
    "space padding": ({"a": F32x2}, b"\0" * 8, b"    "),
    "NUL padding": ({"a": F32x2}, b"\0" * 8, b"\0"),
    "empty tensor beside another": ({"e": {"dtype": "F32", "shape": [0, 3], "data_offsets": [0, 0]}, "a": F32x2},
                                    b"\0" * 8, b""),
    "scalar": ({"a": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}}, b"\0" * 4, b""),
    "extra entry key": ({"a": dict(F32x2, note="x")}, b"\0" * 8, b""),
    "float shape": ({"a": dict(F32x2, shape=[2.0])}, b"\0" * 8, b""),
    "bool shape": ({"a": {"dtype": "U8", "shape": [True], "data_offsets": [0, 1]}}, b"\0", b""),
    "negative shape": ({"a": {"dtype": "U8", "shape": [-1, -8], "data_offsets": [0, 8]}}, b"\0" * 8, b""),
    "bool offsets": ({"a": {"dtype": "U8", "shape": [1], "data_offsets": [False, True]}}, b"\0", b""),
    "gap": ({"a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}, b"\0\0", b""),
}


@pytest.mark.parametrize("case", list(CASES))
def test_header_rules_match_the_safetensors_library(tmp_path, case):
    from safetensors import SafetensorError, safe_open

    header, data, pad = CASES[case]
    path = safetensors_file(tmp_path / "x.safetensors", header, data, pad)
    try:
        with safe_open(str(path), "pt") as f:
            list(f.keys())
        library_accepts = True
    except SafetensorError:
        library_accepts = False
    try:
        read_safetensors_header(path)
        zoo_accepts = True
    except zoo.CorruptCheckpointError:
        zoo_accepts = False
    assert zoo_accepts == library_accepts


def test_huge_max_position_embeddings_is_refused_before_allocating(tmp_path, tiny_bert):
    """max_position_embeddings: 1e11 would allocate ~800 GB of position ids; zoo measures on meta first."""
    config = dict(tiny_bert, max_position_embeddings=100_000_000_000)
    with pytest.raises(zoo.ConfigError, match=r"needs [\d,.]+ GB of memory.*max_position_embeddings=100000000000"):
        zoo.build(config)
    out = zoo.save(zoo.build(tiny_bert), tmp_path / "ok")
    cfg = json.loads((out / "config.json").read_text())
    cfg["max_position_embeddings"] = 100_000_000_000
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(zoo.ConfigError, match="needs .* GB of memory"):
        zoo.load(out)


def test_minus_one_is_a_sentinel_for_counts_not_for_sizes():
    from zoo.model.config import check_sizes

    check_sizes({"model_type": "vilt", "num_images": -1}, "config.json")  # ViLT's default: "no limit"
    with pytest.raises(zoo.ConfigError, match="vocab_size"):
        check_sizes({"model_type": "bert", "vocab_size": -1}, "config.json")
