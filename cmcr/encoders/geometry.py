"""Shaping a two-modality contrastive space to a real model's geometry: cones, modality gap, temperature.

Real contrastive spaces are not spread over the sphere: each modality lives in a narrow cone around its own
mean direction (Liang et al., "Mind the Gap", NeurIPS 2022), and the two cones' centres are apart (the
modality gap); Levi & Gilboa ("The Double-Ellipsoid Geometry of CLIP", ICML 2025) describe the same as two
shells not centred at the origin. The demo stand-ins reproduce that geometry with one fixed offset per
modality. With ``u`` the stand-in's unit embedding, made orthogonal to a fixed plane ``B`` (two orthonormal
rows) and centred on its modality's mean (so that the stand-in's own cone, whatever its training left, is
replaced by the target one: :func:`centre`), and ``c_m`` a unit direction inside that plane, the shaped
embedding of modality ``m`` is

    e = (u + r_m c_m) / sqrt(1 + r_m²)              (exactly unit, since u ⟂ c_m)

which gives, exactly and without an n×n matrix (``cone`` = mean cosine of two different items):

    cone_e(m) = (cone_u(m) + r_m²) / (1 + r_m²)
    gap²      = |ū_a/N_a − ū_b/N_b|² + ρ_a² + ρ_b² − 2 ρ_a ρ_b cos θ,   N_m = sqrt(1 + r_m²), ρ_m = r_m / N_m
    e_a · e_b = (u_a · u_b + r_a r_b cos θ) / (N_a N_b)

where θ is the angle between ``c_a`` and ``c_b``. The last line is an increasing affine map of ``u_a · u_b``:
cross-modal rankings are unchanged, and a softmax at temperature ``τ_e`` over ``e`` equals one at
``τ_u = τ_e · N_a N_b`` over ``u`` — so a stand-in trained at ``τ_u`` *is* a space with temperature ``τ_e``.
:func:`fit_geometry` picks ``r_a``, ``r_b`` and ``θ`` from the target cones and gap and the unit embeddings'
own statistics; the paired cosine follows from the training (it is reported, not fitted).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from cmcr.metrics.spaces import cone


@dataclass(frozen=True)
class Geometry:
    """Offsets of the two modalities (``first``, ``second`` of the space) and what they were fitted to."""

    r_first: float
    r_second: float
    cos_theta: float
    reached: dict  # target name -> whether the target was reachable (False: clipped to the closest value)

    def scale(self) -> float:
        """``N_a N_b``: a softmax at τ over shaped embeddings equals one at τ · scale over the unit ones."""
        return math.sqrt((1 + self.r_first ** 2) * (1 + self.r_second ** 2))

    def as_dict(self) -> dict:
        return asdict(self)


def geometry_basis(dim: int, seed: int) -> torch.Tensor:
    """Two fixed orthonormal ``dim``-vectors (rows) spanning the plane the modality offsets live in."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, 2, generator=generator, dtype=torch.float64))
    return q.T.contiguous().float()


def project_out(u: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Unit rows of ``u`` with the plane of ``basis`` removed (u ⟂ every offset direction)."""
    u = torch.nn.functional.normalize(u, dim=-1)
    u = u - (u @ basis.T) @ basis
    return torch.nn.functional.normalize(u, dim=-1)


def offset_vectors(basis: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """``(2, dim)``: ``r_first c_first`` and ``r_second c_second`` with ``c_first·c_second = cos θ``."""
    cos = float(np.clip(geometry.cos_theta, -1.0, 1.0))
    sin = math.sqrt(max(0.0, 1.0 - cos * cos))
    c_first, c_second = basis[0], cos * basis[0] + sin * basis[1]
    return torch.stack([geometry.r_first * c_first, geometry.r_second * c_second])


def centre(u: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Unit rows of ``u − mean``: the modality's own cone removed (``mean`` ⟂ the offset plane, as ``u`` is)."""
    return torch.nn.functional.normalize(u - mean, dim=-1)


def shape(u: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """The shaped embedding ``(u + r c) / sqrt(1 + r²)`` of unit rows ``u`` orthogonal to ``offset``."""
    return (u + offset) / math.sqrt(1.0 + float(offset @ offset))


def fit_geometry(u_first, u_second, *, cone_first: float, cone_second: float, gap: float) -> Geometry:
    """Offsets that give the shaped space the target cones and modality gap (module docstring).

    ``u_first`` / ``u_second``: unit embeddings (rows, already orthogonal to the offset plane) of unpaired
    samples of the two modalities — the same samples the statistics are then measured on. A target below
    what the unit embeddings already have (a cone narrower than theirs, a gap no θ reaches) is clipped to the
    closest reachable value and marked in ``reached``.
    """
    a = np.asarray(u_first, dtype=np.float64)
    b = np.asarray(u_second, dtype=np.float64)
    reached = {}
    radii = []
    for name, x, target in (("cone_first", a, cone_first), ("cone_second", b, cone_second)):
        if not 0.0 <= target < 1.0:
            raise ValueError(f"target {name} must be in [0, 1), got {target}")
        own = cone(x)
        reached[name] = target >= own
        radii.append(math.sqrt(max(0.0, (target - own) / (1.0 - target))))
    r_a, r_b = radii
    n_a, n_b = math.sqrt(1 + r_a ** 2), math.sqrt(1 + r_b ** 2)
    rho_a, rho_b = r_a / n_a, r_b / n_b
    rest = float(np.sum((a.mean(0) / n_a - b.mean(0) / n_b) ** 2))
    cos = (rho_a ** 2 + rho_b ** 2 + rest - gap ** 2) / (2 * rho_a * rho_b) if rho_a * rho_b > 0 else 1.0
    cos = float(np.clip(cos, -1.0, 1.0))
    achieved = math.sqrt(max(0.0, rest + rho_a ** 2 + rho_b ** 2 - 2 * rho_a * rho_b * cos))
    reached["modality_gap"] = abs(achieved - gap) < 1e-6
    return Geometry(r_a, r_b, cos, reached)


def training_temperature(target_temperature: float, cone_first: float, cone_second: float) -> float:
    """τ_u to train the unit embeddings at so that the shaped space has ``target_temperature``.

    Uses ``N_m = 1 / sqrt(1 − cone_m)``, the offsets' scale when the unit embeddings' own cone is ~0 (they
    are measured after training; the reached temperature ``τ_u / (N_a N_b)`` is reported).
    """
    return target_temperature / math.sqrt((1.0 - cone_first) * (1.0 - cone_second))
