"""What a new user meets first: the install, a missing torch, version advice, the packaging files."""

from __future__ import annotations

import ast
import json
import re
import sys
import time
import tomllib
import warnings
from importlib import metadata

import pytest

import zoo
from conftest import ROOT, run_python
from zoo.model.compat import check_transformers_version, parse_version

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
README = (ROOT / "README.md").read_text()

HIDE_TORCH = "import sys\nsys.modules['torch'] = None  # as if torch were not installed\n"


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


# --- dependencies ------------------------------------------------------------------------------------

def test_plain_install_brings_what_load_and_pull_import():
    """Every third-party module that zoo's code imports comes with ``pip install zoo-registry``,
    except torch (the user's, with a zoo error naming the command), watchdog, aiohttp, jinja2 and
    markdown-it-py (the daemon extra: drop folders, the HTTP server, its web page) and boto3 (the s3 extra:
    the object store)."""
    base = _requirement_names(PYPROJECT["project"]["dependencies"])
    extras = PYPROJECT["project"]["optional-dependencies"]
    imported: set[str] = set()
    for path in [*(ROOT / "zoo").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m not in ("zoo", "zoo_bert")}
    distributions = metadata.packages_distributions()
    needed = {d.lower().replace("_", "-") for m in third_party for d in distributions.get(m, [m])}
    assert needed - base <= {"torch", "watchdog", "aiohttp", "jinja2", "markdown-it-py", "boto3", "botocore"}, \
        needed - base
    assert {"transformers", "safetensors", "tokenizers", "huggingface-hub", "tqdm"} <= base
    assert _requirement_names(extras["torch"]) == {"torch"}
    assert _requirement_names(extras["daemon"]) == {"watchdog", "aiohttp", "jinja2", "markdown-it-py"}
    assert _requirement_names(extras["s3"]) == {"boto3"}
    assert extras["all"] == ["zoo-registry[torch,daemon,s3]"]
    assert "zoo-registry[all]" in extras["test"]


def test_missing_torch_is_a_zoo_error_that_names_the_install_command(tmp_path, tiny_bert):
    saved = zoo.save(zoo.build(tiny_bert), tmp_path / "saved")
    code = HIDE_TORCH + f"""
import zoo
path = {str(saved)!r}
print(zoo.load_config(path).model_type)  # reading a config needs no torch
for call in (lambda: zoo.load(path), lambda: zoo.build({{"model_type": "bert"}}),
             lambda: zoo.save(object(), path + "-2"), lambda: zoo.load("bert-base-cased")):
    try:
        call()
    except zoo.ZooError as exc:
        assert isinstance(exc, ModuleNotFoundError) and exc.name == "torch", exc
        print(type(exc).__name__, "|", exc)
"""
    result = run_python(code, env={"ZOO_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "bert"
    assert len(lines) == 5
    for line, who in zip(lines[1:], ["zoo.load", "zoo.build", "zoo.save", "zoo.load"]):
        # the last one: torch is checked before a name is resolved, so no download comes first
        assert line.startswith(f"MissingDependencyError | {who} needs the Python package 'torch'"), line
        assert "pip install torch " in line
        assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in line
        assert "https://pytorch.org/get-started/locally/" in line


def test_the_cli_works_without_torch(tmp_path, tiny_bert):
    saved = zoo.save(zoo.build(tiny_bert), tmp_path / "saved")
    code = HIDE_TORCH + f"""
from zoo.cli import main
main(["info", {str(saved)!r}])  # describes the checkpoint; a trial load, if it makes one, names the fix
assert main(["plugins"]) == 0
assert main(["-q", "ls"]) == 0
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert "model_type:           bert" in result.stdout and "parameters:" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert "torch" not in result.stdout or "pip install torch" in result.stdout


def test_a_broken_dependency_is_not_reported_as_missing(tmp_path, monkeypatch):
    """A module that is there but fails inside its own import: that error, not "install it"."""
    from zoo._deps import MissingDependencyError, require

    with pytest.raises(MissingDependencyError, match="a test needs .*zoo_test_absent.* pip install nothing"):
        require("zoo_test_absent", "pip install nothing", needed_by="a test")
    (tmp_path / "zoo_test_half_installed.py").write_text("import zoo_test_absent_inside\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:
        require("zoo_test_half_installed", "pip install nothing")
    assert not isinstance(info.value, MissingDependencyError)
    assert info.value.name == "zoo_test_absent_inside"


# --- transformers_version ------------------------------------------------------------------------------

def _with_version(saved, version):
    config = json.loads((saved / "config.json").read_text())
    config["transformers_version"] = version
    (saved / "config.json").write_text(json.dumps(config))
    return saved


@pytest.fixture
def saved(tmp_path, tiny_bert):
    return zoo.save(zoo.build(tiny_bert), tmp_path / "saved")


def test_an_older_major_is_recorded_not_warned(saved):
    _with_version(saved, "4.8.2")  # most of the hub, bert-base-cased included
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zoo.load(saved)
        zoo.load(saved, strict=True)  # strict raises for a newer transformers only
    advice = zoo.load_config(saved).version_advice
    assert advice.status == "older-major"
    assert "saved with transformers 4.8.2, an older major version than the installed 5." in advice.message


def test_a_newer_transformers_still_warns(saved):
    _with_version(saved, "99.0.0")
    with pytest.warns(zoo.VersionWarning, match="newer than the installed"):
        zoo.load(saved)


@pytest.mark.parametrize("version", ["9" * 5000, "4." + "1" * 5000, "1." * 3000 + "1", "not a version", "5" * 65])
def test_an_absurd_transformers_version_is_unknown_and_quick(saved, version):
    _with_version(saved, version)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = zoo.load_config(saved)
        zoo.load(saved)
    assert time.perf_counter() - start < 5
    assert cfg.transformers_version is None
    assert cfg.version_advice.status == "unknown"
    assert parse_version(version) is None
    advice = check_transformers_version(version)
    assert advice.status == "unknown" and "which is not a version number; zoo ignores it" in advice.message
    assert len(advice.message) < 300  # the text is cut, not repeated


def test_an_absurd_version_on_an_unknown_model_type_is_still_a_clear_error(saved):
    config = json.loads((saved / "config.json").read_text())
    config.update(model_type="bret", transformers_version="9" * 5000)
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(zoo.UnknownArchitectureError, match="Did you mean: bert"):
        zoo.load_config(saved)


def test_ordinary_versions_still_parse():
    assert str(parse_version("4.57.1")) == "4.57.1"
    assert str(parse_version("5.0.0.dev0")) == "5.0.0.dev0"
    assert parse_version(4.5) is None and parse_version(None) is None


# --- packaging and docs ------------------------------------------------------------------------------

def test_license_matches_the_declared_one():
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text.splitlines()) > 150  # the full text


def test_py_typed_is_shipped():
    assert (ROOT / "zoo" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["zoo"]


def test_the_web_pages_templates_and_stylesheet_are_shipped():
    """zoo/web's templates and static files are not modules: package-data must name each of them."""
    import fnmatch

    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["zoo"]
    files = [p.relative_to(ROOT / "zoo").as_posix() for folder in ("templates", "static")
             for p in (ROOT / "zoo" / "web" / folder).iterdir()]
    assert files and all(any(fnmatch.fnmatch(f, pattern) for pattern in patterns) for f in files), (files, patterns)


def test_readme_install_section_and_ci_commands():
    install = README.split("## Install", 1)[1].split("\n## ", 1)[0]
    assert "pip install zoo-registry" in install
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in install
    assert "https://pytorch.org/get-started/locally/" in install
    assert "zoo-registry[daemon]" in install
    ci = (ROOT / ".ci" / "run").read_text()
    for line in ci.splitlines():  # CI runs the README's commands, word for word
        if line.startswith(("python3 -m venv", ".venv/bin/python")):
            assert line in README, line


def test_slow_marker_is_registered():
    markers = PYPROJECT["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("slow:") for m in markers)
    assert "-m 'not slow'" in README or '-m "not slow"' in README
