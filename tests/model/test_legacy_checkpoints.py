"""Older checkpoint layouts load to the same weights as transformers loads them: legacy key names
(bert-base-cased's LayerNorm.gamma/beta and bert. prefix), tied decoder biases, and transformers'
per-model conversions (merged experts). A body weight the checkpoint lacks is an error, not random."""

import json
import subprocess
import sys
import warnings

import pytest
import torch
import transformers

import zoo
from legacy_layout import write_legacy_bert


def _ids():
    return torch.tensor([[101, 7592, 1010, 2088, 999, 102], [101, 2023, 2003, 1037, 3231, 102]])


def _bert_registry(**overrides):
    from zoo_bert import HEADS, TASKS

    class Plugin:
        @staticmethod
        @zoo.hookimpl
        def zoo_register_architectures(register):
            register(zoo.Architecture("bert", "transformers:BertConfig",
                                      {h: f"transformers:{h}" for h in HEADS}, tasks=TASKS, **overrides))

    return zoo.Registry([("bert-variant", Plugin)], entry_points=False)


def _load_quietly(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", zoo.WeightsWarning)  # nothing missing, nothing suspicious
        return zoo.load(*args, output_loading_info=True, **kwargs)


def _assert_same(ours, reference, ids=None):
    ours_sd, ref_sd = ours.state_dict(), reference.state_dict()
    assert set(ours_sd) == set(ref_sd)
    for key in ref_sd:
        assert torch.equal(ours_sd[key], ref_sd[key]), key
    with torch.no_grad():
        ids = _ids() if ids is None else ids
        a, b = ours(ids), reference(ids)
    for key in b:
        if isinstance(b[key], torch.Tensor):
            assert (a[key] - b[key]).abs().max().item() == 0.0, key


@pytest.fixture(scope="module")
def legacy_safetensors(tmp_path_factory, minilm_dir):
    return write_legacy_bert(minilm_dir, tmp_path_factory.mktemp("legacy") / "bert-base-cased-layout")


@pytest.fixture(scope="module")
def legacy_bin(tmp_path_factory, minilm_dir):
    return write_legacy_bert(minilm_dir, tmp_path_factory.mktemp("legacy") / "bin-layout", fmt="bin")


@pytest.fixture(params=["safetensors", pytest.param("bin", marks=pytest.mark.slow)])
def legacy_dir(request):
    return request.getfixturevalue(f"legacy_{request.param}")


def test_legacy_layout_default_head_equals_transformers(legacy_dir):
    model, report = _load_quietly(legacy_dir)
    assert type(model).__name__ == "BertForMaskedLM"
    reference = transformers.AutoModelForMaskedLM.from_pretrained(legacy_dir).eval()
    _assert_same(model, reference)
    renames = {a.rule: a.keys for a in report.conversions}
    assert renames == {"LayerNorm.gamma -> LayerNorm.weight": 14, "LayerNorm.beta -> LayerNorm.bias": 14}
    assert report.initialised == () and report.unexpected == ()
    # The decoder is tied to the embeddings and its bias to cls.predictions.bias, as transformers ties them.
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert torch.equal(model.cls.predictions.decoder.bias, model.cls.predictions.bias)
    # The next-sentence head and the pooler are not part of BertForMaskedLM: dropped and reported, no warning.
    assert set(report.unused) == {"cls.seq_relationship.weight", "cls.seq_relationship.bias",
                                  "bert.pooler.dense.weight", "bert.pooler.dense.bias"}


def test_legacy_layout_as_base_model_equals_transformers(legacy_dir):
    model, report = _load_quietly(legacy_dir, task="base")
    assert type(model).__name__ == "BertModel"
    _assert_same(model, transformers.AutoModel.from_pretrained(legacy_dir).eval())
    assert sum(a.keys for a in report.conversions) == 28
    assert all(k.startswith("cls.") for k in report.unused)


@pytest.mark.slow
def test_resaved_legacy_checkpoint_loads_without_renames(tmp_path, legacy_safetensors):
    model = zoo.load(legacy_safetensors)
    zoo.save(model, tmp_path / "resaved")
    from safetensors import safe_open

    with safe_open(tmp_path / "resaved" / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert not any(k.endswith((".gamma", ".beta")) for k in keys)
    again, report = _load_quietly(tmp_path / "resaved")
    assert report.conversions == ()
    _assert_same(again, model)
    # transformers reads zoo's names without renames too
    _assert_same(transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "resaved").eval(), again)


def test_missing_body_weight_is_an_error(tmp_path, minilm_dir):
    out = write_legacy_bert(minilm_dir, tmp_path / "broken",
                            drop=("encoder.layer.3.attention.self.query.weight",))
    with pytest.raises(zoo.MissingWeightsError, match=r"bert\.encoder\.layer\.3\.attention\.self\.query\.weight") as info:
        zoo.load(out)
    assert "incomplete" in str(info.value)
    with pytest.raises(zoo.MissingWeightsError, match=r"encoder\.layer\.3\.attention\.self\.query\.weight"):
        zoo.load(out, task="base")


def test_unrenamed_legacy_names_are_an_error_naming_the_cause(legacy_safetensors):
    registry = _bert_registry(transformers_conversions=False)  # a plugin that knows no legacy names
    with pytest.raises(zoo.MissingWeightsError, match=r"LayerNorm\.weight.*names them differently.*LayerNorm\.gamma.*key_renames"):
        zoo.load(legacy_safetensors, task="base", registry=registry)


def test_plugin_declared_renames_are_data(legacy_safetensors):
    registry = _bert_registry(
        transformers_conversions=False,
        key_renames={r"LayerNorm\.gamma$": "LayerNorm.weight", r"LayerNorm\.beta$": "LayerNorm.bias"},
    )
    model, report = _load_quietly(legacy_safetensors, task="base", registry=registry)
    assert {(a.source, a.keys) for a in report.conversions} == {("plugin 'bert-variant'", 14)}
    _assert_same(model, transformers.AutoModel.from_pretrained(legacy_safetensors).eval())


def test_bad_rename_pattern_is_refused_at_registration():
    with pytest.raises(ValueError, match=r"key_renames pattern '\(' is not a regular expression"):
        zoo.Architecture("x", "m:C", {"H": "m:H"}, key_renames={"(": "x"})


def test_base_checkpoint_into_new_head_still_warns(tmp_path, tiny_bert):
    zoo.save(zoo.build(tiny_bert), tmp_path / "base")
    with pytest.warns(zoo.WeightsWarning, match=r"missing from the checkpoint, newly initialised.*cls\.predictions"):
        zoo.load(tmp_path / "base", task="fill-mask")


def test_mlm_checkpoint_without_pooler_loads_as_base_with_warning(tmp_path, tiny_bert):
    zoo.save(zoo.build(tiny_bert, task="fill-mask"), tmp_path / "mlm")  # BertForMaskedLM has no pooler
    with pytest.warns(zoo.WeightsWarning, match=r"2 weights missing.*pooler\.dense"):
        model = zoo.load(tmp_path / "mlm", task="base")
    assert not model.pooler.dense.weight.is_meta


def test_transformers_conversions_merge_experts(tmp_path):
    """Mixtral stores one tensor per expert; transformers 5 merges them at load. zoo applies the same
    conversion mapping, taken from transformers itself, and gets the same model."""
    config = transformers.MixtralConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=64,
    )
    torch.manual_seed(0)
    transformers.MixtralForCausalLM(config).save_pretrained(tmp_path / "mixtral")
    from safetensors import safe_open

    with safe_open(tmp_path / "mixtral" / "model.safetensors", "pt") as f:
        assert "model.layers.0.block_sparse_moe.experts.3.w2.weight" in set(f.keys())  # the stored layout

    class Plugin:
        @staticmethod
        @zoo.hookimpl
        def zoo_register_architectures(register):
            register(zoo.Architecture("mixtral", "transformers:MixtralConfig",
                                      {"MixtralForCausalLM": "transformers:MixtralForCausalLM"}))

    registry = zoo.Registry([("mixtral-test", Plugin)], entry_points=False)
    model, report = _load_quietly(tmp_path / "mixtral", registry=registry)
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "mixtral").eval()
    _assert_same(model, reference, ids=torch.tensor([[1, 5, 9, 33, 63]]))
    kinds = {(a.kind, a.rule) for a in report.conversions}
    assert ("rename", ".block_sparse_moe. -> .mlp.") in kinds
    assert ("conversion", ".experts.*.w1.weight, .experts.*.w3.weight -> .experts.gate_up_proj") in kinds


@pytest.mark.slow
def test_info_shows_the_renames(legacy_safetensors):
    result = subprocess.run([sys.executable, "-m", "zoo", "info", str(legacy_safetensors), "--load"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "28 legacy key renames applied" in result.stdout
    assert "LayerNorm.gamma -> LayerNorm.weight" in result.stdout
    assert "dropped" in result.stdout and "cls.seq_relationship.weight" in result.stdout


def test_weight_that_fits_no_parameter_of_a_known_module_still_warns(tmp_path, tiny_bert):
    from safetensors.torch import load_file, save_file

    zoo.save(zoo.build(tiny_bert), tmp_path / "odd")
    state = load_file(tmp_path / "odd" / "model.safetensors")
    state["encoder.layer.0.attention.self.query.scale"] = torch.ones(2)  # a module BertModel has, no such param
    save_file(state, str(tmp_path / "odd" / "model.safetensors"))
    with pytest.warns(zoo.WeightsWarning, match=r"1 weights in the checkpoint not used by BertModel .*query\.scale"):
        _, report = zoo.load(tmp_path / "odd", output_loading_info=True)
    assert report.unexpected == ("encoder.layer.0.attention.self.query.scale",)
    with pytest.raises(zoo.WeightsMismatchError, match="query.scale"):
        zoo.load(tmp_path / "odd", strict=True)


def test_renames_are_remembered_so_the_next_load_skips_transformers_table(legacy_safetensors, monkeypatch):
    """Building transformers' conversion table compiles ~1,100 patterns (~50 ms): a second load of the same
    layout takes the renames from zoo's cache instead, with the same result."""
    first, report = _load_quietly(legacy_safetensors, task="base")
    import transformers.conversion_mapping as mapping

    monkeypatch.setattr(mapping, "get_model_conversion_mapping", lambda *a, **k: pytest.fail("table built again"))
    again, report_again = _load_quietly(legacy_safetensors, task="base")
    assert report_again.conversions == report.conversions
    _assert_same(again, first)
