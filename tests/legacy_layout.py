"""The layout of google-bert/bert-base-cased, rebuilt from the real all-MiniLM-L6-v2 weights.

The checkpoint behind zoo's headline example predates today's BERT code: its keys carry the ``bert.``
prefix of the pre-training model, its LayerNorms are ``LayerNorm.gamma`` / ``LayerNorm.beta``, it holds
the masked-LM and next-sentence heads (``cls.*``) but not the decoder weight tied to the embeddings, and
``architectures`` says ``BertForMaskedLM``. Used by the tests and by ``benchmarks/load.py``.
"""

from __future__ import annotations

import json
from pathlib import Path


def legacy_key(key: str) -> str:
    key = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
    return key if key.startswith("cls.") else "bert." + key


def write_legacy_bert(src: Path, out: Path, fmt: str = "safetensors", drop: tuple[str, ...] = ()) -> Path:
    """Write ``src`` (a BertModel checkpoint) in the legacy layout to ``out``, as ``model.safetensors`` or
    ``pytorch_model.bin``; head weights are seeded random values; keys in ``drop`` are left out."""
    import torch
    from safetensors.torch import load_file, save_file

    config = json.loads((src / "config.json").read_text())
    hidden, vocab = config["hidden_size"], config["vocab_size"]
    g = torch.Generator().manual_seed(0)
    state = dict(load_file(src / "model.safetensors"))
    state.update({
        "cls.predictions.transform.dense.weight": torch.randn(hidden, hidden, generator=g) * 0.02,
        "cls.predictions.transform.dense.bias": torch.randn(hidden, generator=g) * 0.02,
        "cls.predictions.transform.LayerNorm.weight": 1 + torch.randn(hidden, generator=g) * 0.02,
        "cls.predictions.transform.LayerNorm.bias": torch.randn(hidden, generator=g) * 0.02,
        "cls.predictions.bias": torch.randn(vocab, generator=g) * 0.02,
        "cls.seq_relationship.weight": torch.randn(2, hidden, generator=g) * 0.02,
        "cls.seq_relationship.bias": torch.randn(2, generator=g) * 0.02,
    })
    legacy = {legacy_key(k): v for k, v in state.items() if k not in drop}
    out.mkdir(parents=True, exist_ok=True)
    config["architectures"] = ["BertForMaskedLM"]
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).is_file():
            (out / name).write_bytes((src / name).read_bytes())
    if fmt == "bin":
        torch.save(legacy, out / "pytorch_model.bin")
    else:
        save_file(legacy, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out
