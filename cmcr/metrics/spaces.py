"""Geometry of a two-modality contrastive space, as the modality-gap literature measures it.

- ``modality_gap``: distance between the centroids of the two modalities' L2-normalised embeddings
  (Liang et al., "Mind the Gap", NeurIPS 2022, who report ≈ 0.82 for CLIP ViT-B/32 on MSCOCO);
- ``paired_cosine``: mean cosine similarity of true pairs (an image and its caption);
- ``cone``: mean cosine similarity between two different embeddings of one modality (the "cone effect":
  real encoders put all their outputs in a narrow cone, so this is far above 0). Computed exactly without
  an n×n matrix: for unit rows, Σ_{i≠j} x_i·x_j = ||Σ x_i||² − n.
"""

from __future__ import annotations

import numpy as np


def _unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def modality_gap(a, b) -> float:
    return float(np.linalg.norm(_unit(a).mean(0) - _unit(b).mean(0)))


def paired_cosine(a, b) -> float:
    a, b = _unit(a), _unit(b)
    if a.shape != b.shape:
        raise ValueError(f"paired embeddings must have the same shape, got {a.shape} and {b.shape}")
    return float(np.mean(np.sum(a * b, axis=1)))


def cone(x) -> float:
    x = _unit(x)
    n = x.shape[0]
    if n < 2:
        raise ValueError("the cone needs at least two embeddings")
    total = x.sum(0)
    return float((total @ total - n) / (n * (n - 1)))


def space_statistics(first: str, second: str, a, b, pairs_a, pairs_b) -> dict[str, float]:
    """Gap and cones from unpaired samples ``a`` (modality ``first``) and ``b`` (``second``); paired cosine
    from aligned rows ``pairs_a`` / ``pairs_b``."""
    return {"modality_gap": modality_gap(a, b), "paired_cosine": paired_cosine(pairs_a, pairs_b),
            f"cone_{first}": cone(a), f"cone_{second}": cone(b)}
