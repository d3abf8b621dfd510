"""Plugins: registration, isolation of failures, duplicates, disabling, tracing, documentation."""

import inspect
import json
import re
import types

import pytest

import zoo
from zoo.plugins import hookspecs
from zoo.plugins.registry import Registry

from conftest import ROOT, make_plugin_dist, run_python

HOOKS = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("zoo_")]


def _plugin(**hooks):
    """A plugin object whose hooks are the given functions."""
    module = types.ModuleType("plugin")
    for name, fn in hooks.items():
        setattr(module, name, zoo.hookimpl(fn))
    return module


def _arch(model_type, cls="torch.nn:Identity"):
    return zoo.Architecture(model_type=model_type, config_class="zoo_tinynet.modeling:TinyNetConfig",
                            heads={"Head": cls})


def test_zoo_register_architectures_and_checkpoints_reach_the_registry():
    def zoo_register_architectures(register):
        register(_arch("alpha"))

    def zoo_register_checkpoints(register):
        register(zoo.Checkpoint("alpha-small", "acme/alpha-small", aliases=("as",)))

    plugin = _plugin(zoo_register_architectures=zoo_register_architectures,
                     zoo_register_checkpoints=zoo_register_checkpoints)
    registry = Registry([("alpha", plugin)], entry_points=False)
    assert registry.architecture("alpha").plugin == "alpha"
    assert registry.checkpoint("as").item.repo == "acme/alpha-small"
    assert registry.checkpoint("alpha-small").item is registry.checkpoint("as").item
    (info,) = registry.plugins()
    assert info.status == "ok" and info.architectures == ("alpha",) and info.checkpoints == ("alpha-small",)


def test_builtin_bert_is_an_entry_point_plugin():
    from importlib import metadata

    (ep,) = [ep for ep in metadata.entry_points(group="zoo") if ep.name == "bert"]
    assert ep.value == "zoo_bert"
    registry = Registry()
    assert registry.architecture("bert").plugin == "bert"
    assert registry.checkpoint("bert-base-cased").item.repo == "google-bert/bert-base-cased"
    # zoo_bert imports only zoo's public API.
    source = (ROOT / "plugins" / "zoo_bert" / "__init__.py").read_text()
    assert re.findall(r"^(?:import|from) (\S+)", source, re.M) == ["zoo"]


def test_hook_failure_is_isolated_and_rolled_back():
    def good(register):
        register(_arch("good"))

    def bad(register):
        register(_arch("half"))
        raise RuntimeError("boom in hook")

    registry = Registry([("good", _plugin(zoo_register_architectures=good)),
                         ("bad", _plugin(zoo_register_architectures=bad))], entry_points=False)
    with pytest.warns(zoo.PluginWarning, match=r"'bad' failed in zoo_register_architectures\(\).*boom in hook"):
        assert list(registry.architectures()) == ["good"]  # "half" was rolled back
    status = {p.name: p.status for p in registry.plugins()}
    assert status == {"good": "ok", "bad": "failed"}


def test_hook_failure_raises_in_strict_mode():
    def bad(register):
        raise RuntimeError("boom")

    registry = Registry([("bad", _plugin(zoo_register_architectures=bad))], entry_points=False, strict=True)
    with pytest.raises(zoo.PluginLoadError, match="'bad' failed.*boom"):
        registry.architectures()


def test_register_rejects_wrong_types():
    def bad(register):
        register({"model_type": "dict"})

    registry = Registry([("bad", _plugin(zoo_register_architectures=bad))], entry_points=False)
    with pytest.warns(zoo.PluginWarning, match="takes a zoo.Architecture, got dict"):
        assert registry.architectures() == {}


def test_misspelt_hook_is_reported():
    plugin = types.ModuleType("typo")
    plugin.zoo_register_architecture = zoo.hookimpl(lambda register: None)  # missing "s"
    registry = Registry([("typo", plugin)], entry_points=False)
    with pytest.warns(zoo.PluginWarning, match="'typo' failed at registration.*zoo_register_architecture"):
        registry.plugins()


def test_duplicate_registration_names_both_plugins():
    def one(register):
        register(_arch("shared"))

    def two(register):
        register(_arch("shared"))

    plugins = [("first", _plugin(zoo_register_architectures=one)),
               ("second", _plugin(zoo_register_architectures=two))]
    registry = Registry(plugins, entry_points=False)
    with pytest.raises(zoo.DuplicateRegistrationError, match="'shared'.*'first' and 'second'.*ZOO_DISABLE_PLUGINS"):
        registry.architecture("shared")
    with pytest.raises(zoo.DuplicateRegistrationError, match="'first' and 'second'"):
        Registry(plugins, entry_points=False, strict=True).architectures()


def test_duplicate_checkpoint_alias_names_both_plugins():
    def one(register):
        register(zoo.Checkpoint("small", "acme/one"))

    def two(register):
        register(zoo.Checkpoint("other", "acme/two", aliases=("small",)))

    registry = Registry([("one", _plugin(zoo_register_checkpoints=one)),
                         ("two", _plugin(zoo_register_checkpoints=two))], entry_points=False)
    with pytest.raises(zoo.DuplicateRegistrationError, match="checkpoint name 'small'.*'one' and 'two'"):
        registry.checkpoint("small")
    assert registry.checkpoint("other").item.repo == "acme/two"


def test_disable_and_only(monkeypatch):
    def arch(register):
        register(_arch("x"))

    plugins = [("x", _plugin(zoo_register_architectures=arch))]
    monkeypatch.setenv("ZOO_DISABLE_PLUGINS", "x, y")
    registry = Registry(plugins, entry_points=False)
    assert registry.architectures() == {}
    assert registry.plugins()[0].status == "disabled"
    monkeypatch.delenv("ZOO_DISABLE_PLUGINS")
    monkeypatch.setenv("ZOO_PLUGINS", "bert")
    assert Registry(plugins, entry_points=False).architectures() == {}


def test_trace_prints_hook_calls(capsys):
    def arch(register):
        register(_arch("traced"))

    Registry([("t", _plugin(zoo_register_architectures=arch))], entry_points=False, trace=True).architectures()
    err = capsys.readouterr().err
    assert re.search(r"zoo trace: t\.zoo_register_architectures\(\) registered traced \(\d+\.\d ms\)", err)


@pytest.mark.slow
def test_broken_plugin_at_import_does_not_break_cli_or_load(tmp_path, tiny_bert):
    path = make_plugin_dist(tmp_path / "site", "broken", "raise ImportError('needs libfoo 9')\n")
    saved = zoo.save(zoo.build(tiny_bert), tmp_path / "ckpt")
    env = {"PYTHONPATH": str(path)}
    result = run_python("import sys; from zoo.cli import main; sys.exit(main(['plugins']))", env=env)
    assert result.returncode == 1, result.stderr
    assert "broken (zoo-broken-plugin 0.1): failed" in result.stdout
    assert "needs libfoo 9" in result.stdout
    assert "bert (zoo-registry" in result.stdout and ": ok" in result.stdout
    result = run_python(f"import zoo; print(type(zoo.load({str(saved)!r})).__name__)", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "BertModel"
    assert "PluginWarning: zoo plugin 'broken' failed at import: ImportError: needs libfoo 9" in result.stderr
    # Disabling it by name silences it; strict mode raises.
    result = run_python("import zoo; zoo.architectures()", env={**env, "ZOO_DISABLE_PLUGINS": "broken"})
    assert result.returncode == 0 and "broken" not in result.stderr
    result = run_python("import zoo; zoo.architectures()", env={**env, "ZOO_STRICT_PLUGINS": "1"})
    assert result.returncode != 0 and "PluginLoadError" in result.stderr


@pytest.mark.slow
def test_disable_builtin_bert_by_name(tmp_path, tiny_bert):
    saved = zoo.save(zoo.build(tiny_bert), tmp_path / "ckpt")
    code = f"import zoo; print(zoo.load_config({str(saved)!r}).plugin); zoo.load({str(saved)!r})"
    # Without the hand-written plugin, the transformers fallback serves bert like any type no plugin registers.
    result = run_python(code, env={"ZOO_DISABLE_PLUGINS": "bert"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "transformers"
    result = run_python(code, env={"ZOO_DISABLE_PLUGINS": "bert,transformers"})
    assert result.returncode != 0
    assert "UnknownArchitectureError" in result.stderr and "'bert'" in result.stderr


def test_plugin_from_a_real_dist_registers(tmp_path):
    code = """
        import zoo

        @zoo.hookimpl
        def zoo_register_checkpoints(register):
            register(zoo.Checkpoint("acme-tiny", "acme/tiny"))
    """
    path = make_plugin_dist(tmp_path / "site", "acme", code)
    result = run_python("import sys; from zoo.cli import main; sys.exit(main(['plugins', '--json']))",
                        env={"PYTHONPATH": str(path)})
    assert result.returncode == 0, result.stderr
    infos = {p["name"]: p for p in json.loads(result.stdout)}
    assert infos["acme"]["checkpoints"] == ["acme-tiny"]
    assert infos["acme"]["distribution"] == "zoo-acme-plugin"


@pytest.mark.parametrize("hook", HOOKS)
def test_hooks_are_documented(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert "Called by" in doc and "What to pass" in doc, f"{hook} must say who calls it and what to pass"
    assert hook in (ROOT / "README.md").read_text(), f"{hook} is not documented in README.md"


@pytest.mark.parametrize("hook", HOOKS)
def test_hooks_have_tests(hook):
    """A test implements the hook for real (a plugin function named after it) or names it in its title."""
    pattern = rf"def test_\w*{hook}\w*|def {hook}\("
    tested = [p.name for p in (ROOT / "tests").rglob("test_*.py") if re.search(pattern, p.read_text())]
    assert tested, f"no test exercises {hook}"


# -- the fallback hook: zoo_fallback_architecture -----------------------------------------------------------

def _fallback(answers, calls=None, **marks):
    """A plugin whose fallback answers for the model_types in ``answers`` and records every call."""
    def zoo_fallback_architecture(model_type):
        """the types of a test table"""
        if calls is not None:
            calls.append(model_type)
        return _arch(model_type) if model_type in answers else None

    module = types.ModuleType("fallback")
    module.zoo_fallback_architecture = zoo.hookimpl(**marks)(zoo_fallback_architecture)
    return module


def test_zoo_fallback_architecture_answers_types_no_plugin_registered_once_each():
    calls = []
    registry = Registry([("fb", _fallback({"gamma"}, calls))], entry_points=False)
    found = registry.architecture("gamma")
    assert found.plugin == "fb" and found.fallback and found.item.model_type == "gamma"
    assert registry.architecture("gamma") is found  # answered once, kept
    with pytest.raises(zoo.UnknownArchitectureError, match="'delta'"):
        registry.architecture("delta")
    with pytest.raises(zoo.UnknownArchitectureError):
        registry.architecture("delta")  # no answer is kept too
    assert calls == ["gamma", "delta"]
    assert registry.served() == {"gamma": found}
    assert registry.architectures() == {}  # listing shows what plugins registered, never asks fallbacks
    (info,) = registry.plugins()
    assert info.fallback == "the types of a test table" and info.served == ("gamma",)


def test_listing_never_asks_a_fallback():
    calls = []
    registry = Registry([("fb", _fallback({"gamma"}, calls))], entry_points=False)
    registry.plugins(), registry.architectures(), registry.checkpoints(), registry.checkpoint("x"), registry.conflicts()
    assert calls == []


def test_registered_architectures_win_over_fallbacks():
    def zoo_register_architectures(register):
        register(_arch("gamma", "torch.nn:Linear"))

    calls = []
    registry = Registry([("fb", _fallback({"gamma"}, calls)),
                         ("hand", _plugin(zoo_register_architectures=zoo_register_architectures))], entry_points=False)
    found = registry.architecture("gamma")
    assert found.plugin == "hand" and not found.fallback and calls == []


@pytest.mark.parametrize("order", [["b", "a"], ["a", "b"]])
def test_fallback_order_is_plugin_name_order_whatever_the_registration_order(order):
    plugins = {"a": _fallback({"gamma"}), "b": _fallback({"gamma"})}
    registry = Registry([(name, plugins[name]) for name in order], entry_points=False)
    assert registry.architecture("gamma").plugin == "a"


def test_fallback_order_tryfirst_then_plain_then_trylast():
    registry = Registry([("a-last", _fallback({"gamma", "delta", "eps"}, trylast=True)),
                         ("m-plain", _fallback({"gamma", "delta"})),
                         ("z-first", _fallback({"gamma"}, tryfirst=True))], entry_points=False)
    assert registry.architecture("gamma").plugin == "z-first"
    assert registry.architecture("delta").plugin == "m-plain"
    assert registry.architecture("eps").plugin == "a-last"


def test_failing_fallback_is_named_and_the_next_one_answers():
    def zoo_fallback_architecture(model_type):
        raise RuntimeError("no table here")

    bad = _plugin(zoo_fallback_architecture=zoo_fallback_architecture)
    registry = Registry([("a-bad", bad), ("b-good", _fallback({"gamma"}))], entry_points=False)
    with pytest.warns(zoo.PluginWarning, match="'a-bad' failed for model_type 'gamma'.*no table here"):
        assert registry.architecture("gamma").plugin == "b-good"
    with pytest.warns(zoo.PluginWarning), pytest.raises(zoo.UnknownArchitectureError, match="Fallback 'a-bad' failed"):
        registry.architecture("delta")
    strict = Registry([("a-bad", bad)], entry_points=False, strict=True)
    with pytest.raises(zoo.PluginLoadError, match="'a-bad' failed for model_type 'gamma'"):
        strict.architecture("gamma")


def test_fallback_must_answer_with_the_asked_architecture():
    registry = Registry([("wrong", _plugin(zoo_fallback_architecture=lambda model_type: _arch("other"))),
                         ("dict", _plugin(zoo_fallback_architecture=lambda model_type: {"model_type": model_type}))],
                        entry_points=False)
    with pytest.warns(zoo.PluginWarning) as caught, pytest.raises(zoo.UnknownArchitectureError):
        registry.architecture("gamma")
    messages = " ".join(str(w.message) for w in caught)
    assert "answered with an Architecture for 'other'" in messages and "returned a dict" in messages


def test_trace_prints_fallback_calls(capsys):
    Registry([("fb", _fallback({"gamma"}))], entry_points=False, trace=True).architecture("gamma")
    err = capsys.readouterr().err
    assert re.search(r"zoo trace: fb\.zoo_fallback_architecture\('gamma'\) answered \(\d+\.\d ms\)", err)


# -- the built-in transformers plugin ---------------------------------------------------------------------

def test_builtin_transformers_is_an_entry_point_plugin_that_imports_no_transformers_at_top_level():
    from importlib import metadata

    (ep,) = [ep for ep in metadata.entry_points(group="zoo") if ep.name == "transformers"]
    assert ep.value == "zoo_transformers"
    registry = Registry()
    assert registry.checkpoint("roberta-base").item.repo == "FacebookAI/roberta-base"
    assert registry.checkpoint("gpt2").item.model_type == "gpt2"
    assert registry.architecture("bert").plugin == "bert"  # hand-written BERT stays BERT's
    gpt2 = registry.architecture("gpt2")
    assert gpt2.plugin == "transformers" and gpt2.fallback
    source = (ROOT / "plugins" / "zoo_transformers" / "__init__.py").read_text()
    assert set(re.findall(r"^(?:import|from) (\S+)", source, re.M)) == {"dataclasses", "zoo"}  # no transformers


def test_transformers_plugin_answers_from_transformers_tables():
    import zoo_transformers

    registry = Registry([("transformers", zoo_transformers)], entry_points=False)
    t5 = registry.architecture("t5").item
    assert str(t5.config_class) == "transformers:T5Config" and t5.default_head == "T5Model"
    assert t5.tasks["text2text-generation"] == "T5ForConditionalGeneration"
    assert t5.heads["T5EncoderModel"] == "transformers:T5EncoderModel"
    gpt2 = registry.architecture("gpt2").item
    assert gpt2.tasks["text-generation"] == "GPT2LMHeadModel" and "GPT2DoubleHeadsModel" in gpt2.heads
    vit = registry.architecture("vit").item
    assert vit.tasks["image-classification"] == "ViTForImageClassification"
    with pytest.raises(zoo.UnknownArchitectureError, match="'no-such-type'"):
        registry.architecture("no-such-type")


def test_third_party_plugin_wins_over_the_transformers_fallback():
    import zoo_transformers

    def zoo_register_architectures(register):
        register(_arch("gpt2"))

    registry = Registry([("transformers", zoo_transformers),
                         ("acme", _plugin(zoo_register_architectures=zoo_register_architectures))], entry_points=False)
    assert registry.architecture("gpt2").plugin == "acme"
    assert registry.architecture("gpt2").item.config_class == "zoo_tinynet.modeling:TinyNetConfig"
    assert registry.architecture("t5").plugin == "transformers"


def test_disabled_transformers_plugin_brings_back_the_unknown_architecture_advice(tmp_path, monkeypatch):
    from conftest import write_config

    d = write_config(tmp_path / "gpt2", {"model_type": "gpt2", "transformers_version": "5.0.0"})
    monkeypatch.setenv("ZOO_DISABLE_PLUGINS", "transformers")
    with pytest.raises(zoo.UnknownArchitectureError) as info:
        zoo.load_config(d, registry=Registry())
    message = str(info.value)
    assert "no installed zoo plugin handles model_type 'gpt2'" in message
    assert "Plugin 'transformers'" in message and "installed but disabled" in message
    assert re.search(r"transformers \S+ knows 'gpt2'", message)
    monkeypatch.delenv("ZOO_DISABLE_PLUGINS")
    assert zoo.load_config(d, registry=Registry()).plugin == "transformers"


def test_zoo_plugins_shows_fallbacks_and_what_they_served(monkeypatch, capsys):
    from zoo.cli import main
    from zoo.plugins import registry as plugin_registry

    registry = Registry([("fb", _fallback({"gamma"}))], entry_points=False)
    monkeypatch.setattr(plugin_registry, "_default", registry)  # the process-wide default
    registry.architecture("gamma")
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "fallback for:  the types of a test table" in out and "served so far: gamma" in out
    assert main(["plugins", "--json"]) == 0
    (info,) = json.loads(capsys.readouterr().out)
    assert info["fallback"] == "the types of a test table" and info["served"] == ["gamma"]


def test_transformers_plugin_reads_configs_as_from_pretrained_does():
    """Floats JSON cannot hold are written by transformers as {"__float__": "Infinity"} and decoded on reading."""
    import zoo_transformers

    config = zoo_transformers.TransformersConfig("FalconH1Config").from_dict(
        {"model_type": "falcon_h1", "time_step_limit": [0.0, {"__float__": "Infinity"}]})
    assert list(config.time_step_limit) == [0.0, float("inf")]
