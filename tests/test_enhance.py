"""Eq. 3: noise of variance σ² (not std), re-normalisation, switches, seeding."""

import math

import pytest
import torch

from cmcr.config import ConfigError, NoiseConfig
from cmcr.enhance import semantic_completion
from conftest import unit


def test_noise_has_the_requested_variance_not_std():
    x = unit(4000, 512)
    noisy = semantic_completion(x, NoiseConfig(var=0.004, renorm=False), torch.Generator().manual_seed(0))
    noise = (noisy - x).double()
    assert abs(noise.mean().item()) < 1e-3
    assert noise.var().item() == pytest.approx(0.004, rel=0.01)  # 2M samples: sd of the estimate ≈ 0.1%


def test_renormalisation_puts_points_back_on_the_sphere():
    x = unit(100, 64)
    out = semantic_completion(x, NoiseConfig(var=0.004), torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.norm(dim=1), torch.ones(100), atol=1e-6, rtol=0)
    # E|θ|² = d σ² = 0.256 → cosine to the original ≈ 1/sqrt(1 + 0.256) ≈ 0.892
    cos = (out * x).sum(1).mean().item()
    assert cos == pytest.approx(1 / math.sqrt(1 + 64 * 0.004), abs=0.02)


def test_switches_rows_g_and_h():
    x = unit(10, 8) * 0.5  # not unit norm, like an Eq. 2 aggregate
    assert torch.equal(semantic_completion(x, NoiseConfig(enabled=False, renorm=False)), x)  # row H
    renormed = semantic_completion(x, NoiseConfig(enabled=False, renorm=True))
    torch.testing.assert_close(renormed, x * 2, atol=1e-6, rtol=0)
    g_row = semantic_completion(x, NoiseConfig(var=0.01, renorm=False), torch.Generator().manual_seed(1))  # row G
    assert not torch.allclose(g_row.norm(dim=1), torch.ones(10))


def test_seeded_generator_is_reproducible():
    x = unit(10, 8)
    a = semantic_completion(x, NoiseConfig(), torch.Generator().manual_seed(5))
    b = semantic_completion(x, NoiseConfig(), torch.Generator().manual_seed(5))
    c = semantic_completion(x, NoiseConfig(), torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("var", [-0.001, float("nan"), float("inf")])
def test_bad_variance_is_refused(var):
    with pytest.raises(ConfigError, match="variance"):
        NoiseConfig(var=var)
