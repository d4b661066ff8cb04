"""Eq. 3 — intra-modality semantic completion: Gaussian noise, then re-normalisation onto the sphere."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cmcr.config import ConfigError, NoiseConfig


def semantic_completion(x: torch.Tensor, config: NoiseConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. 3: ``x̃ = Normalize(x + θ)``, ``θ ~ N(0, σ² I)``, fresh noise per call, not learnable.

    ``config.var`` is the **variance** σ² (the paper's 0.004 / 0.002), so the noise standard deviation
    is ``√σ²``. ``config.enabled=False`` skips the noise (Table 5 row H), ``config.renorm=False`` skips
    the re-normalisation (rows G and H). ``generator`` (on ``x``'s device) makes the noise reproducible.
    """
    if config.var < 0 or not math.isfinite(config.var):
        raise ConfigError(f"noise.var (sigma^2, a variance) must be a finite number >= 0, got {config.var!r}")
    if config.enabled and config.var > 0:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = x + noise * math.sqrt(config.var)
    if config.renorm:
        x = F.normalize(x, dim=-1)
    return x
