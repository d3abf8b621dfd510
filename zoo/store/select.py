"""Which files of a hub repository a pull fetches: what loading needs, one weight format.

Real repositories such as bert-base-cased also carry TensorFlow, Flax, ONNX, Core ML and Rust copies
of the weights; a pull skips them unless asked for everything.
"""

from __future__ import annotations

import fnmatch

NEEDED = (
    "config.json", "generation_config.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model",
    "preprocessor_config.json",
)
WEIGHT_CHOICES = (
    ("model.safetensors", ("model.safetensors",)),
    ("model.safetensors.index.json", ("model.safetensors.index.json", "model-*-of-*.safetensors")),
    ("pytorch_model.bin", ("pytorch_model.bin",)),
    ("pytorch_model.bin.index.json", ("pytorch_model.bin.index.json", "pytorch_model-*-of-*.bin")),
)


def select_files(paths: list[str], *, all_files: bool = False) -> set[str]:
    """The subset of ``paths`` (repository file names) to download."""
    if all_files:
        return set(paths)
    top = [p for p in paths if "/" not in p]
    chosen = {p for p in top if p in NEEDED}
    for marker, patterns in WEIGHT_CHOICES:
        if marker in top:
            chosen |= {p for p in top if any(fnmatch.fnmatchcase(p, pat) for pat in patterns)}
            break
    return chosen
