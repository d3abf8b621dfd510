"""zoo.build -> zoo.save -> zoo.load for a rotating sample of every model_type the installed transformers
builds with a tiny config: state dicts (0-dim, tied and shared tensors, buffers), ties and outputs equal,
and transformers' from_pretrained of zoo's folder equal too (tests/save_sweep.py; run it as a script for
all of them).

The sample changes every day (the seed is the date's ordinal; ZOO_SWEEP_SEED sets it, ZOO_SWEEP_SIZE its
size) and the seed is in every test id, so a failure names how to run it again:
``ZOO_SWEEP_SEED=<seed> pytest tests/model/test_save_all_architectures.py``, or ``python tests/save_sweep.py TYPE``.
"""

from __future__ import annotations

import datetime
import os
import random

import pytest

import save_sweep

SEED = int(os.environ.get("ZOO_SWEEP_SEED") or datetime.date.today().toordinal())
SIZE = int(os.environ.get("ZOO_SWEEP_SIZE") or 8)
ALWAYS = ["clip", "gpt2", "t5"]  # a 0-dim parameter; tied embeddings; shared encoder/decoder embeddings


def _sample() -> list[str]:
    types = save_sweep.model_types()
    rest = [t for t in types if t not in ALWAYS]
    return [t for t in ALWAYS if t in types] + sorted(random.Random(SEED).sample(rest, min(SIZE, len(rest))))


@pytest.mark.slow
@pytest.mark.parametrize("model_type", [pytest.param(t, id=f"{t}-seed{SEED}") for t in _sample()])
def test_save_round_trip(model_type, tmp_path):
    outcome = save_sweep.round_trip(model_type, tmp_path)
    if outcome.status == "unbuildable":
        pytest.skip(f"transformers cannot build {model_type} with a tiny config: {outcome.detail}")
    if outcome.status == "transformers":
        pytest.xfail(f"zoo's round trip held; transformers' from_pretrained of the folder differs: {outcome.detail}")
    assert outcome.status == "held", f"{model_type} ({outcome.cls}), seed {SEED}: {outcome.detail}"


def test_the_always_sampled_types_hold(tmp_path):
    """The quick loop: GPT-2 (tied embeddings) saves and loads as built, outputs equal."""
    outcome = save_sweep.round_trip("gpt2", tmp_path)
    assert outcome.status == "held" and outcome.outputs, outcome.detail
