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


#: The real models' published statistics the demo stand-ins are shaped to (issue 11), with their sources.
#: Chosen and committed before the shaped demo's tables were looked at. ``None``: no published figure was
#: found; ``assumed`` lists the values taken from a stated stand-in instead of a measurement of that model.
PUBLISHED: dict[str, dict] = {
    "clip": {
        "model": "CLIP ViT-B/32 (OpenAI)",
        "modality_gap": 0.82,
        "paired_cosine": 0.30,
        "cone_image": 0.468,
        "cone_text": 0.468,
        "temperature": 0.01,
        "assumed": ["cone_text"],
        "sources": {
            "modality_gap": "Liang et al., 'Mind the Gap', NeurIPS 2022, sec. 4: centroid distance 0.82 on MSCOCO",
            "paired_cosine": "matched image-caption cosine ~0.3 (issue 11, after Liang et al. 2022; Grassucci et al., "
                             "ICLR 2026, quote 0.34 for a positive CLIP pair)",
            "cone_image": "Weixin-Liang/Modality-Gap, Figure_2_Cone_Effect/Figure_2a_real_features/real_features.ipynb, "
                          "printed output: mean pairwise cosine 0.468 (sd 0.090), 5,000 MSCOCO val images",
            "cone_text": "no published value found: assumed equal to the image cone",
            "temperature": "Radford et al. 2021: learned logit scale clipped at 100, i.e. tau = 0.01 (the value the "
                           "released ViT-B/32 carries)",
        },
    },
    "clap": {
        "model": "LAION-CLAP 630k-audioset-best (HTSAT-tiny, no fusion)",
        "modality_gap": 0.448,
        "paired_cosine": 0.496,
        "cone_audio": 0.136,
        "cone_text": 0.123,
        "temperature": 0.01,
        "assumed": ["temperature"],
        "sources": {
            "modality_gap": "lucafaraldi/MG-CLAP, docs/SCIENTIFIC_REPORT_GUIDE.md, sec. 5 table: AudioCaps val, "
                            "1,290 pairs, 512-d, L2-normalised, centroid distance 0.4480",
            "paired_cosine": "same table: pair cosine mean 0.4962",
            "cone_audio": "same table: audio cone mean 0.1358",
            "cone_text": "same table: text cone mean 0.1229",
            "temperature": "not published: assumed CLIP's, since laion_clap clamps its learned logit scale at 100 "
                           "as CLIP does",
        },
    },
    "ulip": {
        "model": "ULIP-2 PointBERT",
        "modality_gap": None,
        "paired_cosine": None,
        "cone_points": None,
        "cone_image": None,
        "temperature": None,
        "assumed": [],
        "sources": {"all": "no published modality gap, paired cosine, cone or final temperature found for ULIP / "
                           "ULIP-2 (searched: ULIP-2 paper, arXiv 2305.08275; modality-gap literature): the ULIP "
                           "stand-in is left unshaped and its measured values are reported alone"},
    },
}


def shape_targets(space: str, first: str, second: str) -> dict[str, float] | None:
    """The published targets a stand-in of ``space`` (modalities ``first``, ``second``) is shaped to, or ``None``
    when the cones, the gap or the temperature are not all known (the stand-in then keeps its learned geometry)."""
    published = PUBLISHED.get(space)
    if published is None:
        return None
    values = {"cone_first": published.get(f"cone_{first}"), "cone_second": published.get(f"cone_{second}"),
              "modality_gap": published.get("modality_gap"), "temperature": published.get("temperature")}
    return None if any(v is None for v in values.values()) else values
