"""Every family transformers knows loads through zoo's transformers fallback plugin, on the fast path, to the
same model transformers' Auto classes load: same state dict, same buffers, same tied weights, same outputs
(max abs difference 0).

One row per architecture in ARCHITECTURES: a tiny config, the head the checkpoint is saved as (its task), a
second task loaded from the same checkpoint with ``task=``, and the inputs. Adding an architecture is one
line. A handful of families run in the quick loop; the rest are marked slow.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import torch
import transformers

import zoo
import zoo_transformers
from save_sweep import _flat

# The transformers plugin alone, as its entry point loads it: every row goes through its fallback.
REGISTRY = zoo.Registry([("transformers", zoo_transformers)], entry_points=False)

# -- inputs ----------------------------------------------------------------------------------------------

def _ids(config: Any, length: int = 7) -> torch.Tensor:
    vocab = getattr(getattr(config, "text_config", None) or config, "vocab_size", 99)
    return torch.randint(4, min(vocab, 90), (2, length), generator=torch.Generator().manual_seed(0))


def text(config: Any) -> dict:
    ids = _ids(config)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def seq2seq(config: Any) -> dict:
    ids = _ids(config)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "decoder_input_ids": ids[:, :4]}


def image(config: Any) -> dict:
    vision = getattr(config, "vision_config", None) or config
    size = getattr(vision, "image_size", 32)
    size = size if isinstance(size, int) else size[0]
    channels = getattr(vision, "num_channels", 3)
    return {"pixel_values": torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(0))}


def text_image(config: Any) -> dict:
    return {**text(config), **image(config)}


def audio(config: Any) -> dict:
    return {"input_values": torch.randn(2, 1600, generator=torch.Generator().manual_seed(0))}


def speech_seq2seq(config: Any) -> dict:
    features = torch.randn(2, config.num_mel_bins, 2 * config.max_source_positions,
                           generator=torch.Generator().manual_seed(0))
    return {"input_features": features, "decoder_input_ids": _ids(config, 4)}


# -- the architectures -----------------------------------------------------------------------------------

# Tiny shapes shared by most rows; a row's own kwargs override them.
BERTISH = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
               max_position_embeddings=64)
DECODER = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
               intermediate_size=37, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
BART = dict(vocab_size=99, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64,
            pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)
T5 = dict(vocab_size=99, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_decoder_layers=2, num_heads=4,
          pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=32,
           patch_size=8, num_labels=3)


@dataclass(frozen=True)
class Arch:
    """One architecture: ``model_type`` with a tiny ``config``, saved as the head of ``saved`` (a task), and
    loaded again with ``task=other``; ``inputs`` builds the batch from the config."""

    model_type: str
    config: dict
    saved: str
    other: str
    inputs: Callable[[Any], dict]
    family: str
    quick: bool = False
    marks: tuple = field(default=())


ARCHITECTURES = [
    # encoders
    Arch("roberta", BERTISH | dict(pad_token_id=1, type_vocab_size=1), "fill-mask", "base", text, "encoder", quick=True),
    Arch("xlm-roberta", BERTISH | dict(pad_token_id=1), "fill-mask", "token-classification", text, "encoder"),
    Arch("camembert", BERTISH | dict(pad_token_id=1), "fill-mask", "base", text, "encoder"),
    Arch("distilbert", dict(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64),
         "fill-mask", "question-answering", text, "encoder"),
    Arch("albert", BERTISH | dict(embedding_size=16), "fill-mask", "text-classification", text, "encoder"),
    Arch("electra", BERTISH | dict(embedding_size=16), "pretraining", "fill-mask", text, "encoder"),
    Arch("deberta-v2", BERTISH, "fill-mask", "base", text, "encoder"),
    Arch("mpnet", BERTISH, "fill-mask", "base", text, "encoder"),
    Arch("modernbert", BERTISH | dict(pad_token_id=0, global_attn_every_n_layers=2, local_attention=8),
         "fill-mask", "base", text, "encoder"),
    # decoders
    Arch("gpt2", dict(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64, pad_token_id=0),
         "text-generation", "text-classification", text, "decoder", quick=True),
    Arch("llama", DECODER, "text-generation", "base", text, "decoder", quick=True),
    Arch("mistral", DECODER | dict(sliding_window=4), "text-generation", "base", text, "decoder"),
    Arch("qwen2", DECODER, "text-generation", "token-classification", text, "decoder"),
    Arch("qwen3", DECODER | dict(head_dim=8), "text-generation", "base", text, "decoder"),
    Arch("gemma", DECODER | dict(head_dim=8), "text-generation", "base", text, "decoder"),
    Arch("gemma2", DECODER | dict(head_dim=8, sliding_window=4), "text-generation", "base", text, "decoder"),
    Arch("phi", DECODER, "text-generation", "base", text, "decoder"),
    Arch("phi3", DECODER, "text-generation", "text-classification", text, "decoder"),
    Arch("opt", dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=37,
                     word_embed_proj_dim=32, max_position_embeddings=64, pad_token_id=1),
         "text-generation", "base", text, "decoder"),
    Arch("gpt_neox", DECODER | dict(rotary_pct=0.5), "text-generation", "base", text, "decoder"),
    Arch("bloom", dict(vocab_size=99, hidden_size=32, n_layer=2, n_head=4, pad_token_id=0), "text-generation",
         "base", text, "decoder"),
    Arch("falcon", dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, pad_token_id=0),
         "text-generation", "base", text, "decoder"),
    Arch("mixtral", DECODER | dict(intermediate_size=32, num_local_experts=4, num_experts_per_tok=2),  # grouped_mm:
         "text-generation", "base", text, "decoder"),  # rows of a multiple of 16 bytes
    Arch("olmo2", DECODER, "text-generation", "base", text, "decoder"),
    # encoder-decoders
    Arch("t5", T5, "text2text-generation", "base", seq2seq, "encoder-decoder", quick=True),
    Arch("mt5", T5 | dict(tie_word_embeddings=False), "text2text-generation", "text-encoding", seq2seq,
         "encoder-decoder"),
    Arch("bart", BART, "text2text-generation", "base", seq2seq, "encoder-decoder"),
    Arch("mbart", BART, "text2text-generation", "base", seq2seq, "encoder-decoder"),
    Arch("pegasus", BART, "text2text-generation", "base", seq2seq, "encoder-decoder"),
    Arch("marian", BART | dict(decoder_vocab_size=99, pad_token_id=0, decoder_start_token_id=0),
         "text2text-generation", "base", seq2seq, "encoder-decoder"),
    Arch("whisper", dict(vocab_size=99, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                         decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, num_mel_bins=16,
                         max_source_positions=16, max_target_positions=32, pad_token_id=0, bos_token_id=1,
                         eos_token_id=2, decoder_start_token_id=1, suppress_tokens=[], begin_suppress_tokens=[]),
         "automatic-speech-recognition", "base", speech_seq2seq, "encoder-decoder"),
    # vision and multimodal
    Arch("vit", VIT, "image-classification", "base", image, "vision", quick=True),
    Arch("deit", VIT, "image-classification", "base", image, "vision"),
    Arch("dinov2", VIT | dict(out_features=None, out_indices=None), "image-classification", "base", image, "vision"),
    Arch("swin", dict(embed_dim=16, depths=[1, 1], num_heads=[2, 2], image_size=32, patch_size=4, window_size=4,
                      num_labels=3), "image-classification", "base", image, "vision"),
    Arch("convnext", dict(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=3, image_size=32), "image-classification",
         "base", image, "vision"),
    Arch("resnet", dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3), "image-classification",
         "base", image, "vision"),
    Arch("clip", dict(text_config=BERTISH | dict(projection_dim=16), vision_config=VIT | dict(projection_dim=16),
                      projection_dim=16), "base", "zero-shot-image-classification", text_image, "vision"),
    Arch("siglip", dict(text_config=BERTISH, vision_config=VIT), "base", "zero-shot-image-classification",
         text_image, "vision"),
    Arch("wav2vec2", dict(vocab_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=37, conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8),
                          num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, num_labels=3),
         "ctc", "audio-classification", audio, "audio"),
]

AUTO_CLASSES = {  # task -> the transformers Auto class the reference is loaded with
    "base": "AutoModel",
    "fill-mask": "AutoModelForMaskedLM",
    "text-generation": "AutoModelForCausalLM",
    "text2text-generation": "AutoModelForSeq2SeqLM",
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
    "pretraining": "AutoModelForPreTraining",
    "text-encoding": "AutoModelForTextEncoding",
    "image-classification": "AutoModelForImageClassification",
    "zero-shot-image-classification": "AutoModelForZeroShotImageClassification",
    "automatic-speech-recognition": "AutoModelForSpeechSeq2Seq",
    "ctc": "AutoModelForCTC",
    "audio-classification": "AutoModelForAudioClassification",
}


def _params(arch: Arch) -> list:
    marks = list(arch.marks) + ([] if arch.quick else [pytest.mark.slow])
    return pytest.param(arch, id=arch.model_type, marks=marks)


def _tiny(arch: Arch) -> Any:
    return transformers.AutoConfig.for_model(arch.model_type, **arch.config)


def _save(arch: Arch, directory) -> Any:
    """A tiny random model of ``arch.saved``'s head, written by save_pretrained; returns its config."""
    config = _tiny(arch)
    cls = getattr(transformers, REGISTRY.architecture(arch.model_type).item.tasks[arch.saved])
    torch.manual_seed(0)
    model = cls(config)
    with torch.no_grad():  # biases and norms are constants at init: make every tensor tell its origin
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(param.numel())) * 1e-3)
    model.save_pretrained(directory)
    return config


def _tied(model: torch.nn.Module) -> list[tuple[str, ...]]:
    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    return sorted(tuple(sorted(g)) for g in groups.values() if len(g) > 1)


def _assert_same(ours: torch.nn.Module, reference: torch.nn.Module, inputs: dict) -> None:
    assert type(ours) is type(reference)
    a, b = ours.state_dict(), reference.state_dict()
    assert a.keys() == b.keys()
    for key in b:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    buffers_a, buffers_b = dict(ours.named_buffers()), dict(reference.named_buffers())  # non-persistent too
    assert buffers_a.keys() == buffers_b.keys()
    for key in buffers_b:
        assert buffers_a[key].dtype == buffers_b[key].dtype and torch.equal(buffers_a[key], buffers_b[key]), key
    assert _tied(ours) == _tied(reference)
    assert not ours.training and not reference.training
    generation_a, generation_b = getattr(ours, "generation_config", None), getattr(reference, "generation_config", None)
    assert (generation_a is None) == (generation_b is None)
    if generation_b is not None:
        assert generation_a.to_dict() == generation_b.to_dict()
    with torch.no_grad():
        out_a, out_b = _flat(ours(**inputs)), _flat(reference(**inputs))
    assert [k for k, _ in out_a] == [k for k, _ in out_b] and out_b
    for (key, x), (_, y) in zip(out_a, out_b):
        assert x.shape == y.shape, key
        assert (x.double() - y.double()).abs().max().item() == 0.0, key


def _reference(task: str, directory, report: Any, ours: torch.nn.Module) -> torch.nn.Module:
    """transformers' Auto class for ``task`` on the same directory; weights that both sides initialise anew
    (a head the checkpoint lacks) are random on both sides, so the reference gets zoo's."""
    auto = getattr(transformers, AUTO_CLASSES[task])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference, info = auto.from_pretrained(directory, output_loading_info=True)
    assert set(info["missing_keys"]) == set(report.initialised)
    if report.initialised:
        mine = ours.state_dict()
        reference.load_state_dict({k: mine[k] for k in report.initialised}, strict=False)
    return reference.eval()


@pytest.mark.parametrize("arch", [_params(a) for a in ARCHITECTURES])
def test_zoo_load_equals_transformers(arch, tmp_path):
    config = _save(arch, tmp_path)
    inputs = arch.inputs(config)
    # The head the checkpoint was saved as (config.json "architectures"), on the fast path.
    with warnings.catch_warnings():
        warnings.simplefilter("error", zoo.WeightsWarning)  # nothing missing, nothing unexpected
        ours, report = zoo.load(tmp_path, output_loading_info=True, registry=REGISTRY)
    assert report.loader == "zoo" and report.initialised == () and report.unexpected == ()
    _assert_same(ours, _reference(arch.saved, tmp_path, report, ours), inputs)
    # Another head of the same checkpoint, chosen with task=.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", zoo.WeightsWarning)  # a new head is initialised: expected
        other, report = zoo.load(tmp_path, task=arch.other, output_loading_info=True, registry=REGISTRY)
    assert report.loader == "zoo" and report.unexpected == ()
    assert type(other).__name__ == zoo.load_config(tmp_path, registry=REGISTRY).architecture.tasks[arch.other]
    _assert_same(other, _reference(arch.other, tmp_path, report, other), inputs)


def test_the_list_covers_the_families():
    families = {a.family for a in ARCHITECTURES}
    assert {"encoder", "decoder", "encoder-decoder", "vision"} <= families
    assert len(ARCHITECTURES) >= 25
    assert len({a.model_type for a in ARCHITECTURES}) == len(ARCHITECTURES)
    assert {a.family for a in ARCHITECTURES if a.quick} >= {"encoder", "decoder", "encoder-decoder", "vision"}


def _row(model_type: str) -> Arch:
    return next(a for a in ARCHITECTURES if a.model_type == model_type)


def _auto(task: str, directory, **kwargs) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(transformers, AUTO_CLASSES[task]).from_pretrained(directory, **kwargs).eval()


@pytest.mark.parametrize("model_type, dtype", [("llama", torch.bfloat16), ("t5", torch.float16),
                                               pytest.param("gpt2", torch.bfloat16, marks=pytest.mark.slow)])
def test_dtype_builds_as_transformers_does(model_type, dtype, tmp_path):
    """Rotary frequencies stay float32, T5's _keep_in_fp32_modules stay float32 in float16: the model is built in
    the dtype, not converted after."""
    arch = _row(model_type)
    config = _save(arch, tmp_path)
    ours = zoo.load(tmp_path, dtype=dtype, registry=REGISTRY)
    reference = _auto(arch.saved, tmp_path, dtype=dtype)
    _assert_same(ours, reference, arch.inputs(config))
    if model_type == "llama":
        assert ours.model.rotary_emb.inv_freq.dtype == torch.float32
    if model_type == "t5":
        assert ours.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == torch.float32
    # A checkpoint saved in that dtype loads in it (the config's dtype), as transformers loads it.
    reference.save_pretrained(tmp_path / "half")
    ours = zoo.load(tmp_path / "half", registry=REGISTRY)
    assert ours.dtype == dtype
    _assert_same(ours, _auto(arch.saved, tmp_path / "half"), arch.inputs(config))


def test_generation_config_json_beside_the_weights(tmp_path, capsys):
    from zoo.cli import main

    arch = _row("gpt2")
    config = _save(arch, tmp_path)
    model = _auto(arch.saved, tmp_path)
    model.generation_config.max_new_tokens = 7
    model.generation_config.do_sample, model.generation_config.top_k = True, 5
    model.save_pretrained(tmp_path / "gen")
    ours, report = zoo.load(tmp_path / "gen", output_loading_info=True, registry=REGISTRY)
    assert report.generation_config == "generation_config.json"
    assert ours.generation_config.max_new_tokens == 7 and ours.generation_config.top_k == 5
    _assert_same(ours, _auto(arch.saved, tmp_path / "gen"), arch.inputs(config))
    # zoo.save writes it back, as save_pretrained does; the copy loads to the same model.
    zoo.save(ours, tmp_path / "resaved")
    again = zoo.load(tmp_path / "resaved", registry=REGISTRY)
    assert again.generation_config.to_dict() == ours.generation_config.to_dict()
    _assert_same(again, _auto(arch.saved, tmp_path / "resaved"), arch.inputs(config))
    # Without the file, it is made from config.json, as transformers makes it.
    (tmp_path / "gen" / "generation_config.json").unlink()
    ours, report = zoo.load(tmp_path / "gen", output_loading_info=True, registry=REGISTRY)
    assert report.generation_config == "config.json" and ours.generation_config.max_new_tokens is None
    _assert_same(ours, _auto(arch.saved, tmp_path / "gen"), arch.inputs(config))
    # zoo info says where it came from.
    assert main(["info", str(tmp_path / "resaved"), "--load"]) == 0
    out = capsys.readouterr().out
    assert "plugin:               transformers" in out and "generation config from generation_config.json" in out


@pytest.mark.parametrize("model_type", ["t5", pytest.param("bart", marks=pytest.mark.slow)])
def test_zoo_save_and_the_cache_treat_them_like_bert(model_type, tmp_path):
    """Shared encoder/decoder embeddings are stored once and tied again; a name in the cache loads the same."""
    arch = _row(model_type)
    config = _save(arch, tmp_path / "ckpt")
    ours = zoo.load(tmp_path / "ckpt", registry=REGISTRY)
    zoo.save(ours, "tiny-" + model_type)
    again = zoo.load("tiny-" + model_type, registry=REGISTRY)
    assert _tied(again) == _tied(ours) and _tied(ours)
    _assert_same(again, _auto(arch.saved, tmp_path / "ckpt"), arch.inputs(config))


def _gpt2_registry(loading: dict) -> zoo.Registry:
    class Plugin:
        @staticmethod
        @zoo.hookimpl
        def zoo_register_architectures(register):
            register(zoo.Architecture("gpt2", "transformers:GPT2Config",
                                      {"GPT2LMHeadModel": "transformers:GPT2LMHeadModel"}, transformers_loading=loading))

    return zoo.Registry([("gpt2-by-transformers", Plugin)], entry_points=False)


def test_classes_not_proven_on_the_fast_path_are_loaded_by_transformers(tmp_path, monkeypatch, capsys):
    from zoo.plugins import registry as plugin_registry
    from zoo.cli import main

    arch = _row("gpt2")
    config = _save(arch, tmp_path)
    registry = _gpt2_registry({"*": "not proven for this class (a test)"})
    ours, report = zoo.load(tmp_path, output_loading_info=True, registry=registry)
    assert report.loader == "transformers" and report.note == "not proven for this class (a test)"
    _assert_same(ours, _auto(arch.saved, tmp_path), arch.inputs(config))
    monkeypatch.setattr(plugin_registry, "_default", registry)  # the process-wide default
    assert main(["info", str(tmp_path), "--load"]) == 0
    out = capsys.readouterr().out
    assert "by transformers' from_pretrained, not zoo's fast path: not proven for this class (a test)" in out
    # The plugin's table is data: model_type (or model_type:Class) -> why.
    monkeypatch.setattr(zoo_transformers, "TRANSFORMERS_LOADING", {"gpt2": "why", "t5:T5Model": "why not"})
    fresh = zoo.Registry([("transformers", zoo_transformers)], entry_points=False)
    assert fresh.architecture("gpt2").item.transformers_loading == {"*": "why"}
    assert fresh.architecture("t5").item.transformers_loading_reason("T5Model") == "why not"
    assert fresh.architecture("t5").item.transformers_loading_reason("T5ForConditionalGeneration") is None


def test_a_quantised_checkpoint_is_handed_to_transformers(tmp_path):
    import json

    arch = _row("gpt2")
    config = _save(arch, tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["quantization_config"] = {"quant_method": "no-such-method"}  # transformers warns and loads it as is
    (tmp_path / "config.json").write_text(json.dumps(raw))
    ours, report = zoo.load(tmp_path, output_loading_info=True, registry=REGISTRY)
    assert report.loader == "transformers" and "quantised checkpoint" in report.note
    _assert_same(ours, _auto(arch.saved, tmp_path), arch.inputs(config))


def test_frozen_parameters_stay_frozen(tmp_path):
    """Pegasus freezes its sinusoidal position tables (requires_grad=False); zoo keeps them frozen, as the class
    builds them (transformers' from_pretrained makes them trainable: the one difference zoo keeps)."""
    arch = _row("pegasus")
    _save(arch, tmp_path)
    ours = zoo.load(tmp_path, registry=REGISTRY)
    fresh = getattr(transformers, type(ours).__name__)(_tiny(arch))
    assert {n: p.requires_grad for n, p in ours.named_parameters()} == \
        {n: p.requires_grad for n, p in fresh.named_parameters()}
    assert not ours.model.encoder.embed_positions.weight.requires_grad
