"""GPU check: zoo.load(..., device="cuda", dtype=...) against transformers on the same directory.

Run on a machine with CUDA where zoo is importable (e.g. PYTHONPATH=.:plugins). Builds a
bert-base-sized checkpoint (BertConfig() defaults) with zoo.save, then for float32, float16 and
bfloat16 loads it with zoo straight to the GPU and with AutoModel.from_pretrained(dtype=...,
device_map="cuda"), and prints the max abs difference of the outputs and the load times.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from transformers import AutoModel

import zoo
import zoo_bert


def timed(fn, runs=5):
    out, times = None, []
    for _ in range(runs):
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        del out
    return statistics.median(times), fn()


def main() -> None:
    assert torch.cuda.is_available(), "no CUDA device"
    warnings.simplefilter("ignore")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, transformers "
          f"{__import__('transformers').__version__}")
    registry = zoo.Registry([("bert", zoo_bert)], entry_points=False)
    with tempfile.TemporaryDirectory() as tmp:
        d = zoo.save(zoo.build({"model_type": "bert"}, registry=registry), Path(tmp) / "bert-base-sized")
        ids = torch.randint(1000, 20000, (8, 128), device="cuda")
        mask = torch.ones_like(ids)
        mask[1, 100:] = 0
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            t_zoo, ours = timed(lambda: zoo.load(d, device="cuda", dtype=dtype, registry=registry))
            t_hf, theirs = timed(lambda: AutoModel.from_pretrained(d, dtype=dtype, device_map="cuda").eval())
            assert ours.embeddings.word_embeddings.weight.device.type == "cuda"
            assert ours.embeddings.word_embeddings.weight.dtype == dtype
            with torch.no_grad():
                a = ours(input_ids=ids, attention_mask=mask).last_hidden_state
                b = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
            diff = (a.float() - b.float()).abs().max().item()
            print(f"{str(dtype):16} max abs diff {diff:.3g}   load to GPU: zoo {t_zoo * 1e3:7.1f} ms, "
                  f"transformers {t_hf * 1e3:7.1f} ms, ratio {t_hf / t_zoo:.2f}x")
            if diff != 0:
                sys.exit(f"outputs differ for {dtype}")
    print("gpu check: ok")


if __name__ == "__main__":
    main()
