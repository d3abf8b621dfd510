"""The zoo command line, run as a real process."""

import subprocess
import sys

import pytest

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


@pytest.mark.slow
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


def test_version():
    result = zoo_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("zoo 0.1.0 (Python ")
    assert "transformers 5." in result.stdout and "torch " in result.stdout


@pytest.mark.parametrize("argv", [["-q", "ls"], ["ls", "-q"], ["--quiet", "gc", "-n"], ["gc", "-n", "--quiet"],
                                  ["-q", "pull", "x", "--all"], ["info", "-q", "d"]])
def test_common_options_before_or_after_the_subcommand(argv):
    from zoo.cli import build_parser

    assert build_parser().parse_args(argv).quiet is True
    without = [a for a in argv if a not in ("-q", "--quiet")]
    assert build_parser().parse_args(without).quiet is False


def test_info_says_a_recorded_version_is_unreadable(tmp_path, tiny_bert, capsys):
    import json

    import zoo
    from zoo.cli import main

    d = zoo.save(zoo.build(tiny_bert), tmp_path / "odd")
    config = json.loads((d / "config.json").read_text())
    config["transformers_version"] = "9" * 5000  # not a version: no crash, no 5000-digit output
    (d / "config.json").write_text(json.dumps(config))
    assert main(["info", str(d)]) == 0
    out = capsys.readouterr().out
    assert "transformers_version: unreadable" in out
    assert "(5000 characters), which is not a version number" in out
    assert len(out) < 2000


def test_info_errors_are_one_clear_line(tmp_path):
    result = zoo_cli("info", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert result.stderr.startswith("zoo: error: no such directory")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_cache_commands(tmp_path, tiny_bert, hub_env, hub):
    import os

    import zoo

    env = {**os.environ, **hub_env}
    result = zoo_cli("pull", "bert-base-cased", "-q", env=env)
    assert result.returncode == 0, result.stderr
    assert "google-bert/bert-base-cased v1" in result.stdout and "6 files" in result.stdout
    source = zoo.save(zoo.build(tiny_bert), tmp_path / "saved")
    result = zoo_cli("import", str(source), "--name", "mine", env=env)
    assert result.returncode == 0 and "mine v1 (new version" in result.stdout
    result = zoo_cli("import", str(source), "--name", "mine", env=env)
    assert "mine v1 (unchanged, already" in result.stdout
    result = zoo_cli("ls", env=env)
    assert "google-bert/bert-base-cased" in result.stdout and "mine" in result.stdout
    result = zoo_cli("versions", "mine", env=env)
    header, row = result.stdout.splitlines()
    assert header.split() == ["VERSION", "ID", "CREATED", "BY", "SIZE", "MODEL_TYPE", "TRANSFORMERS", "ALIASES",
                              "SOURCE"]
    assert row.startswith("     v1") and "bert" in row and "import:" in row
    assert row.split()[3] == __import__("pwd").getpwuid(os.getuid()).pw_name  # who made it
    assert row.index("bert") == header.index("MODEL_TYPE")  # the columns line up under the header
    result = zoo_cli("du", env=env)
    assert "logical" in result.stdout and "physical" in result.stdout
    result = zoo_cli("verify", env=env)
    assert result.returncode == 0 and "verified 2 versions: all files intact" in result.stdout
    result = zoo_cli("-q", "ls", env=env)  # a global option before the subcommand
    assert result.returncode == 0 and "mine" in result.stdout
    result = zoo_cli("rm", "mine", "--dry-run", env=env)
    assert "would free" in result.stdout
    assert "mine" in zoo_cli("ls", env=env).stdout  # a dry run deletes nothing
    result = zoo_cli("rm", "bert-base-cased", env=env)
    assert "freed 91.6 MB" in result.stdout  # all six files: nothing else uses them
    assert "bert-base-cased" not in zoo_cli("ls", env=env).stdout
    result = zoo_cli("gc", env=env)
    assert result.returncode == 0 and result.stdout.startswith("garbage collection: freed")
    result = zoo_cli("versions", "nothing-like-this", env=env)
    assert result.returncode == 2 and "zoo: error:" in result.stderr
