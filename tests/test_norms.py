"""Per-modality BatchNorm statistics (issue 30, point 3; cmcr/norms.py): exact statistics, the modality's own at
inference, training untouched, checkpoints carry them; the mechanism they repair."""

import numpy as np
import torch
import torch.nn.functional as F

from cmcr.config import ConnectionConfig, ProjectorConfig, TrainConfig
from cmcr.exmcr import ExtendProjector
from cmcr.norms import calibrate, calibrate_all
from cmcr.projector import Projector
from cmcr.graph import connection_unit, load_unit
from conftest import CLIP_CLAP


def test_calibrated_statistics_are_exact_and_chunk_independent():
    """Independent computation: the first BatchNorm's input is Linear(x); the second's, the network up to it with the
    first normalised by the fitted statistics. Unbiased variances, as BatchNorm's running ones."""
    torch.manual_seed(0)
    p = Projector("paper", 8, 16, 6).eval()
    x = torch.randn(300, 8) + 2.0
    calibrate(p, "audio", x, chunk=7)
    with torch.no_grad():
        h = p.net[0](x)
        torch.testing.assert_close(p.norm_1_audio_mean, h.mean(0), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(p.norm_1_audio_var, h.var(0, unbiased=True), rtol=1e-4, atol=1e-5)
        h = F.batch_norm(h, h.mean(0), h.var(0, unbiased=True), p.net[1].weight, p.net[1].bias, False, 0.0, p.net[1].eps)
        h = p.net[3](p.net[2](h))
        torch.testing.assert_close(p.norm_4_audio_var, h.var(0, unbiased=True), rtol=1e-4, atol=1e-5)
    again = Projector("paper", 8, 16, 6)
    again.load_state_dict({k: v for k, v in p.state_dict().items() if not k.startswith("norm_")})
    calibrate(again.eval(), "audio", x, chunk=65536)
    for name in ("norm_1_audio_mean", "norm_1_audio_var", "norm_4_audio_mean", "norm_4_audio_var"):
        torch.testing.assert_close(getattr(again, name), getattr(p, name), rtol=1e-5, atol=1e-6)
    assert p.norm_modalities() == ("audio",)


def test_inference_uses_the_modalitys_statistics_and_training_is_untouched():
    torch.manual_seed(1)
    p = Projector("paper", 8, 16, 6)
    x = torch.randn(64, 8)
    with torch.no_grad():
        p.train()
        torch.testing.assert_close(p(x, "audio"), p.net(x))  # before calibration: the plain network
        calibrate(p, "audio", x + 1.0)
        p.train()
        torch.testing.assert_close(p(x, "audio"), p.net(x))  # training: batch statistics, whatever the modality
        p.eval()
        torch.testing.assert_close(p.embed(x), F.normalize(p.net(x), dim=-1))  # no modality: the shared statistics
        torch.testing.assert_close(p.embed(x, "text"), p.embed(x))  # a modality not calibrated: the shared ones
        manual = x
        for i, layer in enumerate(p.net):
            manual = (F.batch_norm(manual, getattr(p, f"norm_{i}_audio_mean"), getattr(p, f"norm_{i}_audio_var"),
                                   layer.weight, layer.bias, False, 0.0, layer.eps)
                      if isinstance(layer, torch.nn.BatchNorm1d) else layer(manual))
        torch.testing.assert_close(p.embed(x, "audio"), F.normalize(manual, dim=-1))


def test_modality_statistics_take_out_a_gap_the_shared_ones_bring_back():
    """The mechanism (cmcr.norms): two modalities of one latent, offset by ±g. Training-mode batches of one modality
    each leave a running average in the middle; at inference the shared statistics keep the offset (the two views
    of an item disagree), each modality's own take it out exactly (the first BatchNorm removes constant shifts)."""
    torch.manual_seed(2)
    p = Projector("official_clap_clip", 16, 32, 8)
    z = torch.randn(400, 16)
    g = 3.0 * torch.randn(16)
    with torch.no_grad():
        p.train()
        for _ in range(50):  # alternating one-modality batches, as C-MCR's training feeds them
            p(z + g), p(z - g)
        p.eval()
        shared = F.cosine_similarity(p.embed(z + g), p.embed(z - g)).mean()
        calibrate(p, "a", z + g)
        calibrate(p, "b", z - g)
        own = F.cosine_similarity(p.embed(z + g, "a"), p.embed(z - g, "b")).mean()
    assert own > 0.9999 and shared < 0.9, (float(shared), float(own))


def test_checkpoints_carry_the_statistics_and_extend_leaves_have_them_too(tmp_path):
    from cmcr.artifacts import save_torch

    torch.manual_seed(3)
    config = ConnectionConfig(connection=CLIP_CLAP, projector=ProjectorConfig(in_dims={"clip": 8, "clap": 6}, hidden_dim=16, out_dim=4,
                                                        norm_stats="modality"),
                              train=TrainConfig(epochs=1, batch_size=16))
    projectors = torch.nn.ModuleDict({"clip": Projector("paper", 8, 16, 4), "clap": Projector("paper", 6, 16, 4)}).eval()
    sets = {"clip": {"text": np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32),
                     "image": np.random.default_rng(1).standard_normal((40, 8)).astype(np.float32) + 1},
            "clap": {"audio": np.random.default_rng(2).standard_normal((30, 6)).astype(np.float32)}}
    assert calibrate_all(projectors, sets) == ["clip/text (50)", "clip/image (40)", "clap/audio (30)"]
    save_torch(tmp_path / "c.pt", connection_unit(projectors, config, "K").checkpoint())
    loaded = load_unit(tmp_path / "c.pt")
    assert loaded.configs["clip_clap"].projector.norm_stats == "modality"
    x = torch.from_numpy(sets["clip"]["image"])
    with torch.no_grad():
        torch.testing.assert_close(loaded.projectors["clip"].embed(x, "image"), projectors["clip"].embed(x, "image"))
        assert not torch.allclose(loaded.projectors["clip"].embed(x, "image"), loaded.projectors["clip"].embed(x))
    leaf = ExtendProjector(6, 16, 8).eval()
    calibrate(leaf, "audio", torch.randn(40, 6) + 1)
    restored = ExtendProjector(6, 16, 8)
    restored.load_state_dict(leaf.state_dict())
    y = torch.randn(5, 6)
    with torch.no_grad():
        torch.testing.assert_close(restored.eval().embed(y, "audio"), leaf.embed(y, "audio"))
    assert restored.norm_modalities() == ("audio",)
