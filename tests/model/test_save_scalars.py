"""zoo.save writes 0-dimensional tensors (CLIP's logit_scale, scalar buffers) and zoo.load, in a fresh
process, gives them back with their shape () and value."""

import pytest
import torch

from conftest import run_python

CLIP = dict(
    model_type="clip",
    text_config=dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=37, max_position_embeddings=64, projection_dim=16),
    vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                       image_size=32, patch_size=8, projection_dim=16),
    projection_dim=16,
)

SAVE = """
import torch, zoo
model = zoo.build({config!r}, task="base")
with torch.no_grad():
    model.logit_scale.fill_(3.25)  # not its init value: the load must read it from the file
assert model.logit_scale.dim() == 0
zoo.save(model, {out!r})
torch.save(model.state_dict(), {ref!r})
"""

LOAD = """
import torch, zoo
model = zoo.load({out!r})
state = {{k: v.contiguous() for k, v in model.state_dict().items()}}
torch.save(state, {got!r})
"""


@pytest.mark.slow
def test_clip_with_a_scalar_parameter_saves_and_loads_in_a_fresh_process(tmp_path):
    out, ref, got = tmp_path / "clip", tmp_path / "ref.pt", tmp_path / "got.pt"
    saved = run_python(SAVE.format(config=CLIP, out=str(out), ref=str(ref)))
    assert saved.returncode == 0, saved.stderr[-3000:]
    loaded = run_python(LOAD.format(out=str(out), got=str(got)))
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    expected = torch.load(ref, weights_only=True)
    actual = torch.load(got, weights_only=True)
    assert actual.keys() == expected.keys()
    assert actual["logit_scale"].shape == ()
    assert actual["logit_scale"].item() == 3.25
    for key, tensor in expected.items():
        assert actual[key].shape == tensor.shape and actual[key].dtype == tensor.dtype, key
        assert torch.equal(actual[key], tensor), key


def test_a_scalar_buffer_round_trips_through_the_file(tmp_path):
    """The writer and the reader on their own: a 0-dim tensor of every width next to ordinary ones."""
    from zoo.model import weights

    state = {
        "scale": torch.tensor(2.5),
        "count": torch.tensor(7, dtype=torch.int64),
        "flag": torch.tensor(True),
        "half": torch.tensor(0.125, dtype=torch.float16),
        "matrix": torch.arange(12, dtype=torch.float32).reshape(3, 4),
    }
    weights.write_safetensors(state, tmp_path, max_shard_size=1 << 30)
    loaded = weights.load_state_dict(weights.open_weights(tmp_path))
    for key, tensor in state.items():
        assert loaded[key].shape == tensor.shape and loaded[key].dtype == tensor.dtype, key
        assert torch.equal(loaded[key], tensor), key
    from safetensors.torch import load_file  # the reference reader agrees

    for key, tensor in load_file(tmp_path / "model.safetensors").items():
        assert torch.equal(tensor, state[key]), key
