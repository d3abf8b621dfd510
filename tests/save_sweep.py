"""The save round trip for every architecture the installed transformers can build with a tiny config:
``zoo.build`` -> ``zoo.save`` -> ``zoo.load`` gives the same state dict (0-dim tensors, tied and shared
tensors, persistent buffers), the same non-persistent buffers, the same ties and the same outputs; and
transformers' ``from_pretrained`` of zoo's folder gives the same too.

Used by tests/model/test_save_all_architectures.py (a rotating sample) and run as a script for all of them::

    .venv/bin/python tests/save_sweep.py                 # every model_type; prints a summary
    .venv/bin/python tests/save_sweep.py llama clip t5   # these only

A tiny config: the config class's defaults with every size, count and vocabulary key it has shrunk (to 2
layers, width 32, 4 heads, ...), in each nested config too; where that does not build, the defaults
themselves if the model is small (under 30M parameters, counted on the meta device). A type neither
builds is "not buildable with a tiny config" and is reported apart from failures.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers

import zoo
import zoo_transformers

REGISTRY = zoo.Registry([("transformers", zoo_transformers)], entry_points=False)
MAX_DEFAULT_PARAMETERS = 30_000_000
TIMEOUT = 120  # seconds per type

# key -> tiny value, applied to every (nested) config that has the key
SHRINK: dict[str, Any] = {
    **dict.fromkeys(("num_hidden_layers", "num_layers", "n_layer", "n_layers", "encoder_layers", "decoder_layers",
                     "num_decoder_layers", "num_encoder_layers", "depth", "encoder_depth", "decoder_depth",
                     "decoder_num_hidden_layers", "num_text_layers", "num_vision_layers", "text_layers",
                     "vision_layers", "num_local_experts", "num_experts", "n_routed_experts"), 2),
    **dict.fromkeys(("hidden_size", "d_model", "n_embd", "dim", "embed_dim", "decoder_hidden_size",
                     "projection_dim", "embedding_size", "word_embed_proj_dim", "encoder_hidden_size",
                     "text_hidden_size", "vision_hidden_size", "hidden_dim_size"), 32),
    **dict.fromkeys(("num_attention_heads", "n_head", "n_heads", "encoder_attention_heads",
                     "decoder_attention_heads", "num_heads", "decoder_num_attention_heads"), 4),
    **dict.fromkeys(("num_key_value_heads", "num_kv_heads", "multi_query_group_num"), 2),
    "head_dim": 8, "d_kv": 8, "kv_channels": 8,
    **dict.fromkeys(("intermediate_size", "ffn_dim", "encoder_ffn_dim", "decoder_ffn_dim", "d_ff", "hidden_dim",
                     "n_inner", "decoder_intermediate_size", "moe_intermediate_size", "shared_expert_intermediate_size",
                     "ffn_hidden_size"), 37),
    "vocab_size": 99,
    **dict.fromkeys(("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"), 64),
    "image_size": 32, "patch_size": 8,
    "num_experts_per_tok": 2, "num_labels": 3,
}


@dataclass
class Outcome:
    model_type: str
    status: str  # "held", "failed" (zoo), "transformers" (only from_pretrained differs), "unbuildable"
    detail: str = ""
    cls: str = ""
    outputs: bool = False  # outputs compared (a generic input ran the model)


def model_types() -> list[str]:
    """Every model_type with a config class and a model class in the installed transformers."""
    from transformers.models.auto import modeling_auto
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    with_models = set()
    for name in dir(modeling_auto):
        if name.startswith("MODEL_") and name.endswith("_MAPPING_NAMES"):  # not CONFIG_MAPPING_NAMES
            with_models |= set(getattr(modeling_auto, name))
    return sorted(t for t in CONFIG_MAPPING_NAMES if t in with_models)


def _shrink(config: Any, seen: set[int] | None = None) -> None:
    seen = seen if seen is not None else set()
    if id(config) in seen:
        return
    seen.add(id(config))
    for key, value in SHRINK.items():
        current = getattr(config, key, None)
        if isinstance(current, int) and not isinstance(current, bool) and current > value:
            try:
                setattr(config, key, value)
            except Exception:  # noqa: BLE001 - a computed attribute: leave it
                pass
    _small_ids(config, SHRINK["vocab_size"])
    layers = getattr(config, "num_hidden_layers", None)
    for key in ("layer_types", "layers_block_type", "block_types", "hybrid_override_pattern"):
        kinds = getattr(config, key, None)
        if isinstance(layers, int) and isinstance(kinds, (list, str)) and len(kinds) > layers:
            try:
                setattr(config, key, kinds[:layers])
            except Exception:  # noqa: BLE001 - a computed attribute: leave it
                pass
    for key in getattr(config, "sub_configs", {}) or {}:
        sub = getattr(config, key, None)
        if sub is not None and hasattr(sub, "to_dict"):
            _shrink(sub, seen)


TOKEN_IDS = ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id", "sep_token_id",
             "cls_token_id", "mask_token_id", "unk_token_id", "image_token_id", "image_token_index",
             "video_token_id", "audio_token_id", "boi_token_id", "eoi_token_id", "forced_eos_token_id")


def _small_ids(config: Any, vocab: int) -> None:
    """Token ids inside the shrunk vocabulary."""
    for i, key in enumerate(TOKEN_IDS):
        value = getattr(config, key, None)
        try:
            if isinstance(value, int) and value >= vocab:
                setattr(config, key, 1 + i % 8)
            elif isinstance(value, list) and any(isinstance(v, int) and v >= vocab for v in value):
                setattr(config, key, [1 + i % 8])
        except Exception:  # noqa: BLE001 - a computed attribute: leave it
            pass


def _meta_parameters(cls: type, config: Any) -> int:
    with torch.device("meta"):
        model = cls(config)
    return sum(p.numel() for p in model.parameters())


def build_tiny(model_type: str) -> tuple[torch.nn.Module, str] | tuple[None, str]:
    """A randomly initialised tiny model of the type's default class, built by zoo.build; or (None, why)."""
    arch = REGISTRY.architecture(model_type).item
    head = arch.default_head
    cls = getattr(transformers, head, None)
    if cls is None:
        return None, f"transformers has no class {head}"
    errors = []
    for shrink in (True, False):
        try:
            config = transformers.AutoConfig.for_model(model_type)
            if shrink:
                _shrink(config)
                config = type(config).from_dict(config.to_dict())  # what config.json will be read as: valid?
            count = _meta_parameters(cls, config)
            if count > MAX_DEFAULT_PARAMETERS and not shrink:
                errors.append(f"defaults: {count:,} parameters")
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.manual_seed(0)
                model = zoo.build(config, task=head, registry=REGISTRY)
            with torch.no_grad():  # biases and norms are constants at init: make every tensor tell its origin
                for i, param in enumerate(model.parameters()):
                    if param.is_floating_point():
                        param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(i)) * 1e-3)
            return model.eval(), ""
        except Exception as exc:  # noqa: BLE001 - any failure means: not buildable this way
            errors.append(f"{'tiny' if shrink else 'defaults'}: {type(exc).__name__}: {_line(exc)}")
    return None, "; ".join(errors)


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else "")[:200]


def _tied(model: torch.nn.Module) -> list[tuple[str, ...]]:
    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    return sorted(tuple(sorted(g)) for g in groups.values() if len(g) > 1)


def _flat(out: Any) -> list[tuple[str, torch.Tensor]]:
    items = out.items() if hasattr(out, "items") else enumerate(out if isinstance(out, (list, tuple)) else [out])
    found = []
    for key, value in items:
        if isinstance(value, torch.Tensor):
            found.append((str(key), value))
        elif isinstance(value, (list, tuple)) or hasattr(value, "items"):
            found += [(f"{key}.{k}", v) for k, v in _flat(value)]
    return found


def compare(ours: torch.nn.Module, reference: torch.nn.Module, what: str) -> None:
    """Raise AssertionError naming the first difference."""
    assert type(ours) is type(reference), f"{what}: class {type(ours).__name__} vs {type(reference).__name__}"
    a, b = ours.state_dict(), reference.state_dict()
    assert a.keys() == b.keys(), f"{what}: state dict keys differ: {sorted(a.keys() ^ b.keys())[:5]}"
    for key in b:
        assert a[key].shape == b[key].shape, f"{what}: {key} shape {tuple(a[key].shape)} vs {tuple(b[key].shape)}"
        assert a[key].dtype == b[key].dtype, f"{what}: {key} dtype {a[key].dtype} vs {b[key].dtype}"
        assert torch.equal(a[key], b[key]), f"{what}: {key} values differ"
    buffers_a, buffers_b = dict(ours.named_buffers()), dict(reference.named_buffers())
    assert buffers_a.keys() == buffers_b.keys(), f"{what}: buffers differ: {sorted(buffers_a.keys() ^ buffers_b.keys())[:5]}"
    for key in buffers_b:
        x, y = buffers_a[key], buffers_b[key]
        assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y), f"{what}: buffer {key} differs"
    assert _tied(ours) == _tied(reference), f"{what}: tied groups {_tied(ours)} vs {_tied(reference)}"


def candidate_inputs(model: torch.nn.Module) -> list[dict]:
    """Generic batches to try, the model's main input first."""
    config = model.config
    name = getattr(model, "main_input_name", "input_ids")
    name = name if isinstance(name, str) else None  # some models name several
    g = torch.Generator().manual_seed(0)
    text = getattr(config, "text_config", None) or config
    vocab = getattr(text, "vocab_size", 99) or 99
    ids = torch.randint(4, max(5, min(vocab, 90)), (2, 7), generator=g)
    vision = getattr(config, "vision_config", None) or config
    size = getattr(vision, "image_size", 32)
    size = size if isinstance(size, int) else size[0]
    pixels = torch.randn(2, getattr(vision, "num_channels", 3), size, size, generator=g)
    audio = {"input_values": torch.randn(2, 1600, generator=g)}
    text_in = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    main = {"input_ids": text_in, "pixel_values": {"pixel_values": pixels}, "input_values": audio}.get(name)
    out = [main] if main else []
    mels, positions = getattr(config, "num_mel_bins", None), getattr(config, "max_source_positions", None)
    if isinstance(mels, int) and isinstance(positions, int):  # speech encoders (Whisper)
        features = torch.randn(2, mels, 2 * positions, generator=g)
        out.append({"input_features": features, "decoder_input_ids": ids[:, :4]})
        out.append({"input_features": features})
    out += [{**text_in, "decoder_input_ids": ids[:, :4]}, {**text_in, "pixel_values": pixels}, text_in,
            {"pixel_values": pixels}, audio]
    return out


def _run(model: torch.nn.Module, inputs: dict) -> list[tuple[str, torch.Tensor]]:
    torch.manual_seed(0)  # models that draw in forward (random masking) draw the same
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _flat(model(**inputs))


def _same_outputs(a: list, b: list, what: str) -> None:
    assert [k for k, _ in a] == [k for k, _ in b], f"{what}: output names differ"
    for (key, x), (_, y) in zip(a, b):
        assert x.shape == y.shape, f"{what}: output {key} shape differs"
        if x.is_floating_point():
            assert torch.equal(x.nan_to_num(), y.nan_to_num()), \
                f"{what}: output {key} differs by {(x.double() - y.double()).abs().max().item():.3g}"
        else:
            assert torch.equal(x, y), f"{what}: output {key} differs"


def round_trip(model_type: str, workdir: Path) -> Outcome:
    model, why = build_tiny(model_type)
    if model is None:
        return Outcome(model_type, "unbuildable", why)
    cls = type(model).__name__
    outcome = Outcome(model_type, "failed", cls=cls)
    stage = "zoo.save"
    try:
        folder = workdir / model_type
        zoo.save(model, folder)
        stage = "zoo.load"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = zoo.load(folder, registry=REGISTRY)
        stage = "zoo.load vs the saved model"
        compare(loaded, model, stage)
        stage = "from_pretrained of zoo's folder"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = type(model).from_pretrained(folder).eval()
        stage = "from_pretrained vs the saved model"
        compare(reference, model, stage)
        stage = "a generic input for the saved model"
        expected = None
        for inputs in candidate_inputs(model):
            try:
                expected = _run(model, inputs)
                break
            except Exception:  # noqa: BLE001 - this generic input does not fit the model: try the next
                continue
        if expected:  # else no generic input runs the model: state dicts, buffers and ties only
            stage = "outputs of zoo.load"
            _same_outputs(_run(loaded, inputs), expected, stage)
            stage = "outputs of from_pretrained"
            _same_outputs(_run(reference, inputs), expected, stage)
            outcome.outputs = True
    except Exception as exc:  # noqa: BLE001 - recorded with its stage
        where = "".join(traceback.format_exception(exc)[-2:-1]).strip().splitlines()[0][:160]
        outcome.detail = f"{stage}: {type(exc).__name__}: {_line(exc)} [{where}]"
        if "from_pretrained" in stage:  # zoo's part held; transformers' own load of the folder differs
            outcome.status = "transformers"
        return outcome
    outcome.status = "held"
    return outcome


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout(f"no answer within {TIMEOUT} s")


def sweep(types: list[str], *, verbose: bool = True) -> list[Outcome]:
    outcomes = []
    signal.signal(signal.SIGALRM, _alarm)
    with tempfile.TemporaryDirectory(prefix="zoo-sweep-") as tmp:
        for model_type in types:
            start = time.monotonic()
            signal.alarm(TIMEOUT)
            try:
                outcome = round_trip(model_type, Path(tmp))
            except BaseException as exc:  # noqa: BLE001 - a timeout or a crash of the machinery
                if isinstance(exc, KeyboardInterrupt):
                    raise
                outcome = Outcome(model_type, "failed", f"{type(exc).__name__}: {_line(exc)}")
            finally:
                signal.alarm(0)
            outcomes.append(outcome)
            if verbose:
                print(f"{model_type:<32} {outcome.status:<12} {time.monotonic() - start:5.1f}s "
                      f"{outcome.cls} {'(outputs)' if outcome.outputs else ''} {outcome.detail}", flush=True)
    return outcomes


def summary(outcomes: list[Outcome]) -> str:
    held = [o for o in outcomes if o.status == "held"]
    failed = [o for o in outcomes if o.status == "failed"]
    unbuildable = [o for o in outcomes if o.status == "unbuildable"]
    theirs = [o for o in outcomes if o.status == "transformers"]
    lines = [
        f"transformers {transformers.__version__}, torch {torch.__version__}: {len(outcomes)} model types",
        f"held: {len(held)} of {len(held) + len(failed) + len(theirs)} buildable with a tiny config "
        f"(outputs compared for {sum(o.outputs for o in held)})",
        f"failed: {len(failed)}",
        *(f"  {o.model_type} ({o.cls}): {o.detail}" for o in failed),
        f"zoo.load held, transformers' from_pretrained of zoo's folder differs from the saved model: "
        f"{len(theirs)}",
        *(f"  {o.model_type} ({o.cls}): {o.detail}" for o in theirs),
        f"not buildable with a tiny config (not counted): {len(unbuildable)}",
        *(f"  {o.model_type}: {o.detail[:200]}" for o in unbuildable),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("types", nargs="*", help="model types (default: every one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    outcomes = sweep(args.types or model_types())
    print()
    print(summary(outcomes))
    return 1 if any(o.status == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
