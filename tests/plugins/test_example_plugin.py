"""The separately installable example plugin (examples/zoo-tinynet) round-trips through zoo.

.ci/run installs it with `pip install -e examples/zoo-tinynet`, as the README's plugin section shows.
"""

from importlib import metadata

import torch

import zoo


def test_example_plugin_is_installed_through_entry_points():
    names = {ep.name: ep.value for ep in metadata.entry_points(group="zoo")}
    assert names.get("tinynet") == "zoo_tinynet", "run: pip install -e examples/zoo-tinynet"
    assert zoo.architectures()["tinynet"].plugin == "tinynet"


def test_tinynet_build_save_load_round_trip(tmp_path):
    model = zoo.build({"model_type": "tinynet", "hidden_size": 48, "num_blocks": 3}, task="text-classification")
    assert type(model).__module__ == "zoo_tinynet.modeling"
    model.eval()
    zoo.save(model, tmp_path / "tiny")
    loaded = zoo.load(tmp_path / "tiny")
    assert type(loaded).__name__ == "TinyNetForClassification"
    assert loaded.config.num_blocks == 3
    ids = torch.randint(0, 1000, (4, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(ids), loaded(ids))
    cfg = zoo.load_config(tmp_path / "tiny")
    assert cfg.plugin == "tinynet" and cfg.architectures == ("TinyNetForClassification",)
