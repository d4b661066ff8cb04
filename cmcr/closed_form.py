"""Closed-form baselines of the MCR graph: each leaf space mapped *linearly* into a base space through the modality
its link shares — what a reviewer tries first, and the rows every learned connection is compared with.

Not in the paper. For a link leaf–parent with shared modality s (CLAP–CLIP through text, ULIP–CLIP through
images), fit W on the shared set only (row k of both spaces is the same item, paired by id):

- ``ridge`` — least squares with a ridge (:func:`ridge_map`): W = argmin ‖XW − Y‖² + a‖W‖²;
- ``procrustes`` — orthogonal Procrustes (:func:`procrustes_map`): W = UVᵀ from the SVD of XᵀY, a rotation
  (a partial isometry between widths) that keeps the leaf's geometry;

then apply W to the leaf's *other* modality (its sounds, its point clouds): audio↔3D through CLIP's frame,
which no pair ever showed. A leaf further from the base composes its maps. With ``centre`` every modality
of every space is first centred by its own mean over the pipeline's training set of that modality (the shared
set, the memory sets — never an evaluation set): the modality-gap correction of Liang et al., "Mind the Gap"
(NeurIPS 2022); W is then fitted on the centred shared sets.

Deterministic and cheap (two d×d products and one solve or SVD per link, in float64): no seeds.
:class:`LinearMap` is one space's map as a module (kind ``linear``), so a fitted graph saves, loads and searches
like any other (:func:`cmcr.graph.fit_linear`, graph mode ``linear``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cmcr.artifacts import ArtifactError, load_npy, read_parquet
from cmcr.checks import EmbeddingError
from cmcr.config import ConfigError, Connection
from cmcr.pairing import align_by_id

#: how a link's map is fitted
MAPS = ("ridge", "procrustes")
#: the closed-form rows every table of a connection or graph carries: (row key, map, centred)
CONTEXT_ROWS = (("linear_ridge", "ridge", False), ("linear_ridge_centred", "ridge", True),
                ("linear_procrustes", "procrustes", False), ("linear_procrustes_centred", "procrustes", True))


@dataclass(frozen=True)
class LinearConfig:
    """A closed-form graph's fit: ``map`` ridge | procrustes, ``centre`` (per-modality means), ``alpha`` (the
    ridge, relative to the mean eigenvalue of XᵀX: a = alpha · tr(XᵀX) / d)."""

    map: str = "ridge"
    centre: bool = False
    alpha: float = 0.01

    def __post_init__(self) -> None:
        if self.map not in MAPS:
            raise ConfigError(f"map must be one of {', '.join(MAPS)}; got {self.map!r}")
        if not isinstance(self.centre, bool):
            raise ConfigError(f"centre must be true or false, got {self.centre!r}")
        if not isinstance(self.alpha, (int, float)) or isinstance(self.alpha, bool) or not math.isfinite(self.alpha) \
                or self.alpha < 0:
            raise ConfigError(f"alpha must be a finite number >= 0, got {self.alpha!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"map": self.map, "centre": self.centre, "alpha": float(self.alpha)}

    def label(self) -> str:
        """Words for tables: ``ridge``, ``Procrustes, centred``…"""
        return ("ridge" if self.map == "ridge" else "Procrustes") + (", centred" if self.centre else "")


def ridge_map(x: np.ndarray, y: np.ndarray, alpha: float = 0.01) -> np.ndarray:
    """W (dx × dy) minimising ‖XW − Y‖² + a‖W‖² with a = alpha · tr(XᵀX) / dx: W = (XᵀX + aI)⁻¹ XᵀY, in
    float64 (alpha 0: plain least squares, XᵀX must then be invertible)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    _check_pairs(x, y)
    gram = x.T @ x
    a = alpha * float(np.trace(gram)) / gram.shape[0]
    return np.linalg.solve(gram + a * np.eye(gram.shape[0]), x.T @ y)


def procrustes_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The orthogonal Procrustes solution W = UVᵀ (UΣVᵀ = XᵀY, thin SVD), argmax tr(WᵀXᵀY) over W with
    orthonormal columns (dx ≤ dy) or rows (dx ≥ dy): the rotation that best aligns X to Y, in float64."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    _check_pairs(x, y)
    u, _, vt = np.linalg.svd(x.T @ y, full_matrices=False)
    return u @ vt


def _check_pairs(x: np.ndarray, y: np.ndarray) -> None:
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise EmbeddingError(f"a closed-form map needs two row-paired matrices of 2+ rows, got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise EmbeddingError("a closed-form map's inputs contain NaN or infinity")


class LinearMap(nn.Module):
    """One space's closed-form map into the base: x ↦ (x − μ[modality]) W, L2-normalised by :meth:`embed`.

    ``means`` (``{modality: vector}``, centred maps only) are the space's per-modality means; a centred map must be
    told which modality it embeds (``embed(x, modality)``). The base's own map is the identity."""

    kind = "linear"

    def __init__(self, weight: torch.Tensor | np.ndarray, means: Mapping[str, torch.Tensor | np.ndarray] | None = None) -> None:
        super().__init__()
        weight = torch.as_tensor(np.asarray(weight), dtype=torch.float32)
        self.in_dim, self.out_dim = int(weight.shape[0]), int(weight.shape[1])
        self.register_buffer("weight", weight)
        self.modalities = tuple(means or {})
        for modality, mean in (means or {}).items():
            mean = torch.as_tensor(np.asarray(mean), dtype=torch.float32)
            if mean.shape != (self.in_dim,):
                raise EmbeddingError(f"the {modality} mean has shape {tuple(mean.shape)}, the map takes {self.in_dim}-d rows")
            self.register_buffer(f"mean_{modality}", mean)

    @classmethod
    def from_state(cls, state: Mapping[str, torch.Tensor]) -> "LinearMap":
        """Rebuild from :meth:`state_dict` (a checkpoint's)."""
        means = {k[len("mean_"):]: v for k, v in state.items() if k.startswith("mean_")}
        return cls(state["weight"], means)

    def forward(self, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise EmbeddingError(f"projector (linear) expects N×{self.in_dim} embeddings, got shape {tuple(x.shape)}")
        x = x.float()
        if self.modalities:
            if modality not in self.modalities:
                raise EmbeddingError(f"this closed-form map is centred per modality: name the embeddings' modality "
                                     f"(one of {', '.join(self.modalities)}), got {modality!r}")
            x = x - getattr(self, f"mean_{modality}")
        return x @ self.weight

    def embed(self, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        return F.normalize(self(x, modality), dim=-1)


@dataclass
class LinearLinkData:
    """What a link's closed-form map is fitted on: its shared set in both spaces (row k the same item) and the
    mean of every modality the link names in each space, over the pipeline's training sets."""

    shared: Mapping[str, np.ndarray]
    means: Mapping[str, Mapping[str, np.ndarray]]
    modality: str  # the shared one

    @classmethod
    def from_pipeline(cls, embeddings: str | Path, link: Connection) -> "LinearLinkData":
        """``<embeddings>/<space>/<modality>.npy`` (+ ``.parquet``): the shared sets paired by id
        (:func:`cmcr.pairing.align_by_id`), each modality's mean over its own set — the shared set, or the space's
        memory set of its other modality (e.g. CLAP's AudioSet sounds). ArtifactError naming a missing file."""
        embeddings = Path(embeddings)
        paths = {s: embeddings / link.set_path(s, link.shared_modality) for s in link.spaces}
        listed = {s: np.asarray(load_npy(f"{p}.npy"), dtype=np.float64) for s, p in paths.items()}
        tables = {s: read_parquet(f"{p}.parquet", rows=listed[s].shape[0]) for s, p in paths.items()}
        try:
            rows, _ = align_by_id(tables, link.shared_modality, f"{paths[link.spaces[0]]} and {paths[link.spaces[1]]}")
        except ValueError as exc:
            raise ArtifactError(str(exc)) from None
        shared = listed if rows is None else {s: listed[s][rows[s]] for s in link.spaces}
        means = {s: {link.shared_modality: listed[s].mean(0),
                     link.memory_modality[s]: np.asarray(load_npy(embeddings / f"{link.set_path(s, link.memory_modality[s])}.npy"),
                                                         dtype=np.float64).mean(0)}
                 for s in link.spaces}
        return cls(shared, means, link.shared_modality)


def fit_link(data: LinearLinkData, leaf: str, parent: str, config: LinearConfig) -> np.ndarray:
    """The map leaf → parent of one link (float64): fitted on the shared set, centred first when ``config.centre``
    (the shared modality's mean of each side)."""
    modality = data.modality
    x, y = np.asarray(data.shared[leaf], np.float64), np.asarray(data.shared[parent], np.float64)
    if config.centre:
        x, y = x - data.means[leaf][modality], y - data.means[parent][modality]
    return ridge_map(x, y, config.alpha) if config.map == "ridge" else procrustes_map(x, y)
