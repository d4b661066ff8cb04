"""Projectors: Table 6 shape and size, released variants, the official checkpoint's keys."""

import pytest
import torch
from torch import nn

from cmcr.checks import EmbeddingError
from cmcr.config import ProjectorConfig
from cmcr.projector import Projector, build_projectors, count_parameters


def test_table6_projector_layers_and_table1_parameter_count():
    projectors = build_projectors(ProjectorConfig(in_dims={"clip": 512, "clap": 512}), ("clip", "clap"))
    layers = [type(m) for m in projectors["clip"].net]
    assert layers == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d, nn.ReLU]
    # per side: (512·1024 + 1024) + 2·1024 + (1024·512 + 512) + 2·512 = 1,053,184 → "2.1M" in Table 1
    assert count_parameters(projectors) == 2 * 1_053_184


def test_released_variants():
    clap_clip = Projector("official_clap_clip", 512, 1024, 512)
    assert [type(m) for m in clap_clip.net] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d]
    ulip_clip = Projector("official_ulip_clip", 512, 1024, 512)
    assert [type(m) for m in ulip_clip.net] == [nn.Linear, nn.BatchNorm1d, nn.ReLU]
    x = torch.randn(8, 512)
    clap_clip.eval()
    assert (clap_clip(x) < 0).any()  # no final ReLU
    paper = Projector("paper", 512, 1024, 512).eval()
    assert (paper(x) >= 0).all()


def test_official_ulip_clip_checkpoint_loads_into_named_projectors(official_dir):
    state = torch.load(official_dir / "ulip_clip.pt", map_location="cpu", weights_only=True)
    projectors = build_projectors(ProjectorConfig(kind="official_ulip_clip", in_dims={"clip": 512, "ulip": 512}),
                                  ("clip", "ulip"))
    for space, head in (("clip", "Head_A"), ("ulip", "Head_B")):  # in ulip_clip.pt Head_A is the CLIP side
        sub = {k[len(head) + 1:]: v for k, v in state.items() if k.startswith(head + ".")}
        projectors[space].load_state_dict(sub, strict=True)
        assert int(projectors[space].net[1].num_batches_tracked) == 3080
    projectors.eval()
    out = projectors["clip"].embed(torch.nn.functional.normalize(torch.randn(3, 512), dim=1))
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))


def test_dimension_mismatch_is_refused():
    proj = Projector("paper", 512, 1024, 512)
    with pytest.raises(EmbeddingError, match=r"expects N×512 embeddings, got shape \(4, 256\)"):
        proj(torch.randn(4, 256))
