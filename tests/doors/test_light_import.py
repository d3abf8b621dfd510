"""`import zoo`, `zoo --help` and `zoo plugins` must not import the heavy libraries."""

import json

import pytest

from conftest import run_python

HEAVY = ["torch", "transformers", "huggingface_hub", "watchdog", "safetensors"]

PROBE = """
import json, sys
{body}
print(json.dumps(sorted(m for m in {heavy} if m in sys.modules)))
"""


@pytest.mark.parametrize("body", [
    "import zoo",
    "import zoo; zoo.architectures(); zoo.default_registry().checkpoints()",
    "from zoo.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
    "from zoo.cli import main\nmain(['plugins'])",
    "from zoo.cli import main\nmain(['ls'])\nmain(['du'])",
    # The transformers plugin's table of names and its listing: its fallback is never asked for these.
    "import zoo; r = zoo.default_registry(); r.checkpoint('gpt2'); r.checkpoint('t5-small'); r.plugins()\n"
    "assert any(p.name == 'transformers' and p.fallback for p in r.plugins())",
    "import zoo_transformers",
    "from zoo.cli import main\nmain(['plugins', '--json'])",
], ids=["import", "registry", "help", "plugins", "ls", "transformers-plugin-table", "transformers-plugin-import",
        "plugins-json"])
def test_stays_light(body):
    result = run_python(PROBE.format(body=body, heavy=HEAVY))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_load_config_stays_light(minilm_dir):
    result = run_python(PROBE.format(body=f"import zoo; zoo.load_config({str(minilm_dir)!r}).model_type", heavy=HEAVY))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_cache_listing_stays_light(tmp_path, tiny_bert):
    import zoo

    zoo.save(zoo.build(tiny_bert), "light")
    body = "from zoo.cli import main\nmain(['ls'])\nmain(['versions', 'light'])\nmain(['du'])"
    result = run_python(PROBE.format(body=body, heavy=HEAVY))
    assert result.returncode == 0, result.stderr
    assert "light" in result.stdout
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
