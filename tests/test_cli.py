"""The zoo command line, run as a real process."""

import subprocess
import sys

from conftest import ROOT


def zoo_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, env=env, timeout=300)


def test_help():
    result = zoo_cli("--help")
    assert result.returncode == 0
    assert "plugins" in result.stdout and "info" in result.stdout


def test_plugins_lists_bert_and_what_it_registers():
    result = zoo_cli("plugins")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bert (zoo-registry 0.1.0): ok" in result.stdout
    assert "architectures: bert" in result.stdout
    assert "bert-base-cased" in result.stdout


def test_info_on_real_checkpoint(minilm_dir):
    result = zoo_cli("info", str(minilm_dir))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "model_type:           bert" in out
    assert "plugin:               bert" in out
    assert "head:                 BertModel" in out
    assert "transformers_version: 4.8.2" in out
    assert "older major version" in out
    assert "parameters:           22,713,216" in out
    assert "90,868,376  model.safetensors" in out


def test_info_errors_are_one_clear_line(tmp_path):
    result = zoo_cli("info", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert result.stderr.startswith("zoo: error: no such directory")
    assert "Traceback" not in result.stderr
