"""zoo.load of the real all-MiniLM-L6-v2 checkpoint equals transformers' AutoModel."""

import warnings

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

import zoo

SENTENCES = [
    "This framework generates embeddings for each input sentence.",
    "Sentences are passed as a list of strings.",
    "The quick brown fox jumps over the lazy dog.",
    "zoo loads checkpoints without copying their weights.",
]


def test_load_equals_automodel_on_real_sentences(minilm_dir):
    with warnings.catch_warnings():
        # saved by transformers 4.8.2, an older major: recorded (zoo info), not warned about on every load
        warnings.simplefilter("error", zoo.VersionWarning)
        model = zoo.load(minilm_dir)
    reference = AutoModel.from_pretrained(minilm_dir).eval()
    assert type(model) is type(reference)
    assert not model.training
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    batch = tokenizer(SENTENCES, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        ours = model(**batch)
        theirs = reference(**batch)
    assert (ours.last_hidden_state - theirs.last_hidden_state).abs().max().item() == 0.0
    assert (ours.pooler_output - theirs.pooler_output).abs().max().item() == 0.0
    # The embeddings are real: different sentences differ, the same sentence matches itself.
    emb = ours.last_hidden_state.mean(dim=1)
    assert not torch.allclose(emb[0], emb[1])


def test_weights_are_mapped_not_copied(minilm_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", zoo.VersionWarning)
        a = zoo.load(minilm_dir)
        b = zoo.load(minilm_dir)
        c = zoo.load(minilm_dir)
    wa = a.embeddings.word_embeddings.weight
    wb = b.embeddings.word_embeddings.weight
    # Each load maps the file privately (copy-on-write): same values, independent tensors.
    assert torch.equal(wa, wb)
    assert wa.data_ptr() != wb.data_ptr()
    with torch.no_grad():
        wa.zero_()
    assert wb.abs().sum() > 0
    # c was mapped before the write: the file itself was not changed by writing into a loaded model
    assert torch.equal(c.embeddings.word_embeddings.weight, wb)
    # The weights live in mappings of the file itself, not in copies on the heap.
    maps = open("/proc/self/maps").read()
    assert str((minilm_dir / "model.safetensors").resolve()) in maps
    address = wb.data_ptr()
    spans = [line.split()[0].split("-") for line in maps.splitlines() if "model.safetensors" in line]
    assert any(int(lo, 16) <= address < int(hi, 16) for lo, hi in spans)


def test_tokenizer_through_zoo(minilm_dir):
    tokenizer = zoo.load_tokenizer(minilm_dir)
    reference = AutoTokenizer.from_pretrained(minilm_dir)
    encoded = tokenizer(SENTENCES, padding=True)
    assert encoded["input_ids"] == reference(SENTENCES, padding=True)["input_ids"]
    assert tokenizer.decode(encoded["input_ids"][2], skip_special_tokens=True) == SENTENCES[2].lower()


def test_load_config_keeps_parsed_version(minilm_dir):
    cfg = zoo.load_config(minilm_dir)
    assert cfg.model_type == "bert"
    assert cfg.plugin == "bert"
    assert cfg.architectures == ("BertModel",)
    assert str(cfg.transformers_version) == "4.8.2"
    assert cfg.transformers_version.major == 4
    assert cfg.version_advice.status == "older-major"
    assert cfg.config.hidden_size == 384


def test_dtype_and_device(minilm_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", zoo.VersionWarning)
        model = zoo.load(minilm_dir, dtype="bfloat16", device="cpu")
    assert model.embeddings.word_embeddings.weight.dtype == torch.bfloat16
    with pytest.raises(zoo.InvalidArgumentError, match="not a torch dtype"):
        zoo.load(minilm_dir, dtype="float99")
