"""Plugins: registration, isolation of failures, duplicates, disabling, tracing, documentation."""

import inspect
import json
import re
import types

import pytest

import zoo
from zoo import hookspecs
from zoo.registry import Registry

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
    result = run_python(f"import zoo; zoo.load({str(saved)!r})", env={"ZOO_DISABLE_PLUGINS": "bert"})
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
    tested = [p.name for p in (ROOT / "tests").glob("test_*.py") if re.search(pattern, p.read_text())]
    assert tested, f"no test exercises {hook}"
