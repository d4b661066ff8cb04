"""Projectors f1, f2 (Eq. 4) mapping each frozen MCR space into the new shared space.

Three architectures, all with the layers in ``self.net`` so state-dict keys are ``net.<i>.*`` like the
official release's ``Head_A.net.*`` / ``Head_B.net.*``:

- ``paper`` — appendix C, Table 6: Linear(in→1024), BN, ReLU, Linear(1024→out), BN, ReLU. **Default**:
  it is what the paper specifies.
- ``official_clap_clip`` — the released CLAP–CLIP heads: the same without the final ReLU.
- ``official_ulip_clip`` — the released ULIP–CLIP heads: Linear(in→out), BN, ReLU.

The final ReLU of Table 6 restricts outputs to the positive orthant before L2 normalisation; the
released CLAP–CLIP checkpoint drops it. Both are supported; ``paper`` stays the default so that our
runs are the paper's method, and the released variants are there to load and compare the official
checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from cmcr.checks import EmbeddingError
from cmcr.config import ConfigError, ProjectorConfig
from cmcr.norms import ModalityNorms


class Projector(ModalityNorms, nn.Module):
    """One side's projector; ``forward`` returns raw outputs, :meth:`embed` L2-normalised ones. Its BatchNorm layers
    may hold per-modality inference statistics (:mod:`cmcr.norms`, ``projector.norm_stats: modality``)."""

    def __init__(self, kind: str, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.kind, self.in_dim, self.hidden_dim, self.out_dim = kind, in_dim, hidden_dim, out_dim
        if kind == "paper":
            layers = [nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(),
                      nn.Linear(hidden_dim, out_dim), nn.BatchNorm1d(out_dim), nn.ReLU()]
        elif kind == "official_clap_clip":
            layers = [nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(),
                      nn.Linear(hidden_dim, out_dim), nn.BatchNorm1d(out_dim)]
        elif kind == "official_ulip_clip":
            layers = [nn.Linear(in_dim, out_dim), nn.BatchNorm1d(out_dim), nn.ReLU()]
        else:
            raise ConfigError(f"unknown projector kind {kind!r}")
        self.net = nn.Sequential(*layers)

    def norm_sequence(self) -> nn.Sequential:
        return self.net

    def forward(self, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise EmbeddingError(
                f"projector ({self.kind}) expects N×{self.in_dim} embeddings, got shape {tuple(x.shape)}"
            )
        return self.run_sequence(x, modality)

    def embed(self, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        """Project and L2-normalise (inference path of the release: normalise, project, normalise). ``modality``:
        what the rows are — with per-modality BatchNorm statistics (:mod:`cmcr.norms`) that modality's are used,
        else (or without one) the shared running statistics."""
        return F.normalize(self(x, modality), dim=-1)


def build_projectors(config: ProjectorConfig, spaces: tuple[str, ...]) -> nn.ModuleDict:
    """One projector per space, keyed by the space's name (``{"clip": f1, "clap": f2}``)."""
    missing = [s for s in spaces if s not in config.in_dims]
    if missing:
        raise ConfigError(f"projector.in_dims lacks a dimension for space(s) {missing}")
    return nn.ModuleDict({s: Projector(config.kind, config.in_dims[s], config.hidden_dim, config.out_dim) for s in spaces})


def count_parameters(projectors: Mapping[str, nn.Module]) -> int:
    """Trainable parameters of all projectors (Table 1's "Tr. Param")."""
    return sum(p.numel() for m in projectors.values() for p in m.parameters() if p.requires_grad)
