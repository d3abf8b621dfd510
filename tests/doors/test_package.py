"""Points from the code review of issue 6: no leaked patches of torch, no mutable state in ModelConfig, no
import cycle through the package, plugin advice as data in the registry, one error hierarchy."""

import ast
import dataclasses
import json
import threading
import types
from importlib import metadata

import pytest
import torch
import transformers

import zoo
from zoo import errors
from zoo.model import build as building
from zoo.model import compat, modeling
from zoo.plugins.registry import KnownPlugin, Registry

from conftest import ROOT, write_config


def _torch_own():
    """torch's own functions, as zoo must leave them."""
    return torch.nn.Module.register_parameter, torch.nn.init.normal_, torch.nn.init.kaiming_uniform_


def _assert_unpatched(before):
    assert _torch_own() == before
    register, normal, kaiming = before
    assert register.__qualname__ == "Module.register_parameter" and not hasattr(register, "__wrapped__")
    assert normal.__module__ == kaiming.__module__ == "torch.nn.init"
    assert not hasattr(normal, "__wrapped__") and not hasattr(kaiming, "__wrapped__")


def _seeded_linear():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 4)


@pytest.fixture
def saved(tmp_path, tiny_bert):
    return zoo.save(zoo.build(tiny_bert), tmp_path / "saved")


# --- the meta patch is scoped to the build -------------------------------------------------------------

def test_load_and_build_leave_torch_as_they_found_it(saved, tiny_bert):
    before = _torch_own()
    reference = _seeded_linear().weight.detach().clone()
    model = zoo.load(saved)
    assert not any(p.is_meta for p in model.parameters())
    _assert_unpatched(before)
    built = zoo.build(tiny_bert)
    assert not any(p.is_meta for p in built.parameters())
    _assert_unpatched(before)
    # A plain module built afterwards in this thread is initialised as usual: real, same values for a seed.
    linear = _seeded_linear()
    assert not linear.weight.is_meta and linear.weight.device.type == "cpu"
    assert torch.equal(linear.weight, reference) and linear.weight.abs().sum() > 0


def test_meta_parameters_is_per_thread_and_builds_take_turns():
    before = _torch_own()
    entered, leave = [threading.Event() for _ in range(2)], [threading.Event() for _ in range(2)]
    made = {}

    def build(i):
        with building.meta_parameters():
            made[i] = torch.nn.Linear(4, 4)
            entered[i].set()
            leave[i].wait(10)

    first = threading.Thread(target=build, args=(0,))
    first.start()
    assert entered[0].wait(10)
    # A build is open: the patch is installed, but this thread is outside it and builds for real.
    assert torch.nn.Module.register_parameter is not before[0]
    plain = torch.nn.Linear(4, 4)
    assert not plain.weight.is_meta and plain.weight.abs().sum() > 0
    # A second build waits for the first (transformers' own init guard is not thread-safe).
    second = threading.Thread(target=build, args=(1,))
    second.start()
    assert not entered[1].wait(0.3)
    leave[0].set()
    first.join(10)
    assert entered[1].wait(10)
    assert torch.nn.Module.register_parameter is not before[0]
    leave[1].set()
    second.join(10)
    assert all(m.weight.is_meta for m in made.values())
    _assert_unpatched(before)


def test_nested_blocks_and_concurrent_loads_restore_torch(saved):
    before = _torch_own()
    with building.meta_parameters():
        with building.meta_parameters():
            assert torch.nn.Linear(2, 2).weight.is_meta
        assert torch.nn.Linear(2, 2).weight.is_meta
    assert not torch.nn.Linear(2, 2).weight.is_meta
    _assert_unpatched(before)

    expected = zoo.load(saved).state_dict()
    failures = []

    def load():
        try:
            for _ in range(3):
                state = zoo.load(saved).state_dict()
                assert all(torch.equal(state[k], v) for k, v in expected.items())
        except Exception as exc:  # reported below, from the main thread
            failures.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures
    _assert_unpatched(before)


def test_a_patch_installed_over_ours_is_left_in_place():
    before = _torch_own()
    theirs = lambda tensor, *a, **k: tensor  # noqa: E731  (someone else's patch, made during a build)
    try:
        with building.meta_parameters():
            torch.nn.init.normal_ = theirs
        assert torch.nn.init.normal_ is theirs  # not clobbered by zoo's restore
        assert torch.nn.Module.register_parameter is before[0]
    finally:
        torch.nn.init.normal_ = before[1]
    _assert_unpatched(before)


# --- ModelConfig holds no mutable cache ----------------------------------------------------------------

def test_model_config_has_no_mutable_field_and_keeps_the_callers_object(saved, tiny_bert):
    cfg = zoo.load_config(saved)
    assert not any(isinstance(getattr(cfg, f.name), (list, dict, set)) for f in dataclasses.fields(cfg)
                   if f.name != "raw")
    first = cfg.config
    assert type(first).__name__ == "BertConfig" and cfg.config is first  # built once
    assert cfg == zoo.load_config(saved)  # the cached object takes no part in equality
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model_type = "x"

    config = transformers.BertConfig(**{k: v for k, v in tiny_bert.items() if k != "model_type"})
    assert zoo.build(config).config is config


# --- the version, and no import of the package from the modules it imports --------------------------

def test_no_module_the_package_imports_imports_the_package_back():
    """``zoo/__init__`` imports api, config, registry...; none of them (nor what they import) may take a name
    from the package ``zoo`` itself, at import or inside a function. The CLI is not imported by the
    package (it is the entry point), so it may."""
    package = ROOT / "zoo"
    offenders = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        if relative.as_posix() in ("__init__.py", "cli.py", "__main__.py"):
            continue
        depth = len(relative.parts) - 1  # 0 for zoo/x.py, 1 for zoo/store/x.py
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import) and any(a.name == "zoo" for a in node.names):
                offenders.append(f"{relative}: import zoo")
            if not isinstance(node, ast.ImportFrom):
                continue
            from_package = (node.level == 0 and node.module == "zoo") or (node.level == depth + 1 and not node.module)
            if from_package:
                for alias in node.names:
                    if not (package / alias.name).is_dir() and not (package / f"{alias.name}.py").exists():
                        offenders.append(f"{relative}: imports {alias.name!r} from the package zoo")
    assert not offenders


def test_one_version():
    from zoo._version import __version__

    assert zoo.__version__ == __version__ == metadata.version("zoo-registry")
    from zoo import api

    assert api._zoo_version() == __version__
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"] and "version" not in project["project"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "zoo._version.__version__"}


def test_dead_code_is_gone():
    assert not hasattr(zoo.plugins.spec, "class_name")


# --- errors -------------------------------------------------------------------------------------------

def test_missing_dependency_error_is_in_the_hierarchy():
    from zoo import _deps

    assert _deps.MissingDependencyError is errors.MissingDependencyError is zoo.MissingDependencyError
    assert issubclass(zoo.MissingDependencyError, zoo.ZooError)
    assert issubclass(zoo.MissingDependencyError, ModuleNotFoundError)
    assert "MissingDependencyError" in zoo.__all__


def test_every_error_and_warning_is_drawn_and_exported():
    classes = [obj for name, obj in vars(errors).items()
               if isinstance(obj, type) and issubclass(obj, (zoo.ZooError, zoo.ZooWarning))]
    for cls in classes:
        assert f"{cls.__name__}" in errors.__doc__, cls
        assert getattr(zoo, cls.__name__) is cls and cls.__name__ in zoo.__all__, cls
    assert "older major" not in errors.__doc__


# --- version advice in compat, plugin suggestions in the registry --------------------------------------

@pytest.mark.parametrize("recorded, shown", [("not a version", "'not a version'"), (4.5, "a JSON float")])
def test_an_unreadable_version_is_explained_in_version_advice(saved, recorded, shown):
    config = json.loads((saved / "config.json").read_text())
    config["transformers_version"] = recorded
    (saved / "config.json").write_text(json.dumps(config))
    advice = zoo.load_config(saved).version_advice
    assert advice.status == "unknown"
    assert f"records transformers_version {shown}, which is not a version number" in advice.message


def test_compat_knows_versions_not_plugins():
    assert "tinynet" not in (ROOT / "zoo" / "model" / "compat.py").read_text()
    assert not hasattr(compat, "KNOWN_PLUGINS")
    assert compat.unknown_model_type_advice("tinynet", None) == ""
    assert "pip install -U 'transformers>=99.0.0'" in compat.unknown_model_type_advice("tinynet", "99.0.0")
    assert "transformers_version" not in (ROOT / "zoo" / "plugins" / "registry.py").read_text()


def test_the_registry_suggests_plugins_from_its_table(tmp_path):
    table = {"alpha": KnownPlugin("alpha", "the alpha plugin", "pip install zoo-alpha")}
    registry = Registry(entry_points=False, known_plugins=table)
    with pytest.raises(zoo.UnknownArchitectureError, match="provided by the alpha plugin: pip install zoo-alpha"):
        registry.architecture("alpha")
    # Through load_config, transformers' advice follows the registry's.
    d = write_config(tmp_path / "a", {"model_type": "alpha", "transformers_version": "99.0.0"})
    with pytest.raises(zoo.UnknownArchitectureError, match=r"pip install zoo-alpha\. .*transformers>=99\.0\.0"):
        zoo.load_config(d, registry=registry)


def test_a_known_plugin_that_is_disabled_or_failed_is_named_as_such():
    plugin = types.ModuleType("alpha")
    table = {"alpha": KnownPlugin("alpha", "the alpha plugin", "pip install zoo-alpha")}
    registry = Registry([("alpha", plugin)], entry_points=False, disabled={"alpha"}, known_plugins=table)
    with pytest.raises(zoo.UnknownArchitectureError, match="'alpha'.*installed but disabled.*ZOO_DISABLE_PLUGINS"):
        registry.architecture("alpha")

    def zoo_register_architectures(register):
        raise RuntimeError("boom")

    plugin.zoo_register_architectures = zoo.hookimpl(zoo_register_architectures)
    registry = Registry([("alpha", plugin)], entry_points=False, known_plugins=table)
    with pytest.warns(zoo.PluginWarning), pytest.raises(zoo.UnknownArchitectureError, match="which failed.*boom"):
        registry.architecture("alpha")
