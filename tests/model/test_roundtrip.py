"""build -> save -> load round trips for every BERT head, sharded and legacy .bin checkpoints."""

import json
import warnings

import pytest
import torch
import transformers

import zoo
from zoo_bert import HEADS

from conftest import TINY_BERT


def _inputs(batch=2, length=9):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, TINY_BERT["vocab_size"], (batch, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0
    return ids, mask


def _forward(model, head):
    ids, mask = _inputs()
    if head == "BertForMultipleChoice":
        ids, mask = ids.unsqueeze(0), mask.unsqueeze(0)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
    return [v for v in out.values() if isinstance(v, torch.Tensor)]


@pytest.mark.parametrize("head", HEADS)
def test_every_bert_head_round_trips(tmp_path, tiny_bert, head):
    config = dict(tiny_bert, is_decoder=head == "BertLMHeadModel")
    if head == "BertForQuestionAnswering":
        config["num_labels"] = 2  # start and end logits
    model = zoo.build(config, task=head).eval()
    assert type(model).__name__ == head
    zoo.save(model, tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved["architectures"] == [head]
    assert saved["model_type"] == "bert"
    assert saved["transformers_version"] == transformers.__version__
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete checkpoint loads without any warning
        loaded = zoo.load(tmp_path / "ckpt")
    assert type(loaded) is type(model)
    for a, b in zip(_forward(model, head), _forward(loaded, head)):
        assert torch.equal(a, b)
    # The same directory through transformers itself gives the same outputs.
    reference = getattr(transformers, head).from_pretrained(tmp_path / "ckpt").eval()
    for a, b in zip(_forward(reference, head), _forward(loaded, head)):
        assert (a - b).abs().max().item() == 0.0


def test_tied_weights_are_saved_once_and_retied(tmp_path, tiny_bert):
    model = zoo.build(tiny_bert, task="fill-mask")
    zoo.save(model, tmp_path / "mlm")
    from safetensors import safe_open

    with safe_open(tmp_path / "mlm" / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "bert.embeddings.word_embeddings.weight" in keys
    assert "cls.predictions.decoder.weight" not in keys
    loaded = zoo.load(tmp_path / "mlm")
    assert loaded.cls.predictions.decoder.weight is loaded.bert.embeddings.word_embeddings.weight


def test_base_checkpoint_into_head_reports_new_weights(tmp_path, tiny_bert):
    base = zoo.build(tiny_bert).eval()
    zoo.save(base, tmp_path / "base")
    with pytest.warns(zoo.WeightsWarning, match=r"2 weights missing .*classifier"):
        clf = zoo.load(tmp_path / "base", task="text-classification")
    # The encoder weights came from the checkpoint (prefix added), the new head is initialised.
    assert torch.equal(clf.bert.embeddings.word_embeddings.weight, base.embeddings.word_embeddings.weight)
    assert not clf.classifier.weight.is_meta
    assert clf.classifier.weight.abs().sum() > 0
    with pytest.raises(zoo.WeightsMismatchError, match="classifier"):
        zoo.load(tmp_path / "base", task="text-classification", strict=True)


def test_head_checkpoint_into_base_model_reports_unused(tmp_path, tiny_bert):
    clf = zoo.build(tiny_bert, task="text-classification").eval()
    zoo.save(clf, tmp_path / "clf")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asking for the base model means dropping the head: no warning
        base, report = zoo.load(tmp_path / "clf", task="base", output_loading_info=True)
    assert set(report.unused) == {"classifier.weight", "classifier.bias"}  # but the report says so
    assert torch.equal(base.embeddings.word_embeddings.weight, clf.bert.embeddings.word_embeddings.weight)


def test_sharded_save_and_load(tmp_path, tiny_bert):
    model = zoo.build(tiny_bert, task="fill-mask").eval()
    out = tmp_path / "sharded"
    zoo.save(model, out, max_shard_size="20KB")
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) > 2
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    assert not (out / "model.safetensors").exists()
    loaded = zoo.load(out)
    for a, b in zip(_forward(model, "BertForMaskedLM"), _forward(loaded, "BertForMaskedLM")):
        assert torch.equal(a, b)
    # Saving again unsharded leaves only the new format in the directory.
    zoo.save(loaded, out)
    assert not list(out.glob("model-*.safetensors"))
    assert not (out / "model.safetensors.index.json").exists()
    assert not list(out.glob(".*.tmp"))
    for a, b in zip(_forward(model, "BertForMaskedLM"), _forward(zoo.load(out), "BertForMaskedLM")):
        assert torch.equal(a, b)


def _legacy(tmp_path, tiny_bert, sharded):
    model = zoo.build(tiny_bert, task="token-classification").eval()
    out = tmp_path / ("bin-sharded" if sharded else "bin")
    out.mkdir()
    config = model.config.to_dict()
    config["architectures"] = ["BertForTokenClassification"]
    (out / "config.json").write_text(json.dumps(config))
    state = model.state_dict()
    if sharded:
        names = list(state)
        half = len(names) // 2
        parts = {"pytorch_model-00001-of-00002.bin": names[:half], "pytorch_model-00002-of-00002.bin": names[half:]}
        for file, keys in parts.items():
            torch.save({k: state[k] for k in keys}, out / file)
        weight_map = {k: file for file, keys in parts.items() for k in keys}
        (out / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    else:
        torch.save(state, out / "pytorch_model.bin")
    return model, out


@pytest.mark.parametrize("sharded", [False, True])
def test_legacy_bin_loads(tmp_path, tiny_bert, sharded):
    model, out = _legacy(tmp_path, tiny_bert, sharded)
    loaded = zoo.load(out)
    assert type(loaded).__name__ == "BertForTokenClassification"
    for a, b in zip(_forward(model, "x"), _forward(loaded, "x")):
        assert torch.equal(a, b)


def test_safetensors_preferred_over_bin(tmp_path, tiny_bert):
    model, out = _legacy(tmp_path, tiny_bert, sharded=False)
    other = zoo.build(tiny_bert, task="token-classification").eval()
    zoo.save(other, out)  # writes model.safetensors beside the older pytorch_model.bin
    loaded = zoo.load(out)
    assert torch.equal(loaded.classifier.weight, other.classifier.weight)


def test_build_from_config_object_and_model_config(tiny_bert, minilm_dir):
    config = transformers.BertConfig(**{k: v for k, v in tiny_bert.items() if k != "model_type"})
    model = zoo.build(config)
    assert type(model).__name__ == "BertModel"
    assert model.config is config
    # Random init, like BertModel(BertConfig()): real values, not meta tensors.
    assert not any(p.is_meta for p in model.parameters())
    assert model.embeddings.word_embeddings.weight.std() > 0
    cfg = zoo.load_config(minilm_dir)
    assert type(zoo.build(cfg, task="fill-mask")).__name__ == "BertForMaskedLM"
    with pytest.raises(zoo.UnknownTaskError, match="fill-mask"):
        zoo.build(cfg, task="summarise")


def test_save_rejects_models_without_config(tmp_path):
    with pytest.raises(zoo.ConfigError, match="keeps its config"):
        zoo.save(torch.nn.Linear(2, 2), tmp_path / "x")


class _TiedConfig:
    model_type = "tied-test"

    def __init__(self, width=8):
        self.width = width

    @classmethod
    def from_dict(cls, data):
        return cls(data.get("width", 8))

    def to_dict(self):
        return {"model_type": self.model_type, "width": self.width}


class _Tied(torch.nn.Module):
    """A plain-torch model sharing one parameter between two modules (no tie_weights method)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.a = torch.nn.Linear(config.width, config.width, bias=False)
        self.b = torch.nn.Linear(config.width, config.width, bias=False)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(self.a(x))


def test_shared_parameters_of_plain_torch_models_stay_shared(tmp_path):
    def zoo_register_architectures(register):
        register(zoo.Architecture("tied-test", _TiedConfig, {"_Tied": _Tied}))

    import types

    plugin = types.ModuleType("tied")
    plugin.zoo_register_architectures = zoo.hookimpl(zoo_register_architectures)
    registry = zoo.Registry([("tied", plugin)], entry_points=False)
    model = zoo.build({"model_type": "tied-test"}, registry=registry).eval()
    zoo.save(model, tmp_path / "tied")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing reported missing: the tie restores b.weight
        loaded = zoo.load(tmp_path / "tied", registry=registry)
    assert loaded.b.weight is loaded.a.weight
    x = torch.randn(3, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_saved_tensors_start_aligned_and_safetensors_reads_them(tmp_path, tiny_bert):
    """A mapped tensor off a 64-byte boundary can round differently (a one-output Linear takes a dot-product
    path): zoo.save aligns the data area and every tensor whose size allows, so mapped == in memory."""
    import struct

    from safetensors import safe_open

    model = zoo.build(dict(tiny_bert), task="BertForMultipleChoice").eval()
    out = zoo.save(model, tmp_path / "aligned") / "model.safetensors"
    n = struct.unpack("<Q", out.read_bytes()[:8])[0]
    header = json.loads(out.read_bytes()[8:8 + n])
    assert (8 + n) % 64 == 0
    for name, info in header.items():
        if name != "__metadata__" and (info["data_offsets"][1] - info["data_offsets"][0]) % 64 == 0:
            assert info["data_offsets"][0] % 64 == 0, name
    with safe_open(out, "pt") as f:
        for name, tensor in model.state_dict().items():
            assert torch.equal(f.get_tensor(name), tensor)
    for seed in range(8):  # outputs of the mapped model equal the in-memory one, whatever the values
        torch.manual_seed(seed)
        model = zoo.build(dict(tiny_bert), task="BertForMultipleChoice").eval()
        zoo.save(model, tmp_path / f"s{seed}")
        loaded = zoo.load(tmp_path / f"s{seed}")
        for a, b in zip(_forward(model, "BertForMultipleChoice"), _forward(loaded, "BertForMultipleChoice")):
            assert torch.equal(a, b), seed
