"""The published checkpoint files as they are: ULIP-2's pickle with an argparse.Namespace under `args`, and
OpenAI's TorchScript ViT-B-32.pt — refused without trust with a one-line explanation, loaded with
`trust_checkpoint`, or converted once by `cmcr convert-weights` into tensors-only files."""

import argparse
import json

import numpy as np
import pytest
import torch

from cmcr.encoders.base import build_space


@pytest.fixture(scope="module")
def tiny_clip_name(tmp_path_factory):
    import open_clip

    folder = tmp_path_factory.mktemp("cfg")
    (folder / "cmcr-tiny-jit.json").write_text(json.dumps({
        "embed_dim": 16, "quick_gelu": True, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}))
    open_clip.add_model_config(folder)
    return "cmcr-tiny-jit"


def openai_style_archive(model, path):
    """A TorchScript archive like OpenAI's ViT-B-32.pt: the traced model, with the metadata entries OpenAI
    keeps in its state dict (input_resolution, context_length, vocab_size) and no causal-mask buffer."""
    mask = model.attn_mask
    del model._buffers["attn_mask"]
    model.attn_mask = mask  # a constant of the trace, as in OpenAI's model, not a state entry
    for key, value in (("input_resolution", 32), ("context_length", 77), ("vocab_size", 49408)):
        if key in vars(model):
            delattr(model, key)  # open_clip keeps these as plain ints; OpenAI's archive as state entries
        model.register_buffer(key, torch.tensor(value))
    traced = torch.jit.trace(model, (torch.randn(1, 3, 32, 32), torch.zeros(1, 77, dtype=torch.long)), strict=False)
    torch.jit.save(traced, path)


def test_openai_torchscript_clip(tiny_clip_name, tmp_path, official_dir):
    import open_clip
    from typer.testing import CliRunner

    from cmcr.checkpoints import is_torchscript
    from cmcr.cli import app

    torch.manual_seed(0)
    model = open_clip.create_model(tiny_clip_name).eval()
    reference = model.state_dict()
    archive = tmp_path / "ViT-B-32.pt"
    openai_style_archive(model, archive)
    assert is_torchscript(archive)
    with pytest.raises(ValueError, match=r"TorchScript archive .* paper.encoders.clip.trust_checkpoint .*to true.*"
                                         r"cmcr convert-weights"):
        build_space("clip", weights=str(archive), model_name=tiny_clip_name, device="cpu")
    trusted = build_space("clip", weights=str(archive), model_name=tiny_clip_name, device="cpu", trust_checkpoint=True)
    for key, value in reference.items():
        assert torch.equal(trusted.model.state_dict()[key], value), key
    res = CliRunner().invoke(app, ["convert-weights", str(archive), str(tmp_path / "clip.pt")])
    assert res.exit_code != 0 and "TorchScript" in res.output
    res = CliRunner().invoke(app, ["convert-weights", str(archive), str(tmp_path / "clip.pt"), "--trust"])
    assert res.exit_code == 0, res.output
    converted = build_space("clip", weights=str(tmp_path / "clip.pt"), model_name=tiny_clip_name, device="cpu")
    image = str(official_dir / "BBQ.jpeg")
    np.testing.assert_array_equal(converted.encode("image", [converted.load("image", image)]).numpy(),
                                  trusted.encode("image", [trusted.load("image", image)]).numpy())


def test_ulip2_checkpoint_with_an_argparse_namespace(tmp_path):
    from typer.testing import CliRunner

    from cmcr.cli import app
    from cmcr.encoders.pointbert import PointBertConfig

    config = PointBertConfig(npoints=256, num_group=8, depth=1)
    source = build_space("ulip", allow_random=True, device="cpu", config=config, seed=5)
    published = tmp_path / "pointbert_ULIP-2.pt"
    torch.save({"epoch": 10, "args": argparse.Namespace(model="ULIP2_PointBERT_Colored", npoints=8192),
                "state_dict": {f"module.{k}": v for k, v in source.model.state_dict().items()}}, published)
    with pytest.raises(ValueError, match=r"argparse Namespace under 'args'.*paper.encoders.ulip.trust_checkpoint"):
        build_space("ulip", weights=str(published), device="cpu", config=config)
    trusted = build_space("ulip", weights=str(published), device="cpu", config=config, trust_checkpoint=True)
    res = CliRunner().invoke(app, ["convert-weights", str(published), str(tmp_path / "ulip.pt"), "--trust"])
    assert res.exit_code == 0, res.output
    converted = build_space("ulip", weights=str(tmp_path / "ulip.pt"), device="cpu", config=config)
    for key, value in source.model.state_dict().items():
        assert torch.equal(trusted.model.state_dict()[key], value) and torch.equal(converted.model.state_dict()[key], value)
    assert torch.load(tmp_path / "ulip.pt", weights_only=True).keys() == source.model.state_dict().keys()
