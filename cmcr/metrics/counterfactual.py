"""Counterfactual audio-image recognition (Table 3; appendix B.3, Eq. 11–13), as in SLAVC.

Pair i has a confidence ``c_i`` (the best proposal's score), the IoU of its prediction ``IoU_i`` and a
ground truth that is empty for negatives (silent objects / non-visible sounds). For a confidence
threshold δ and IoU threshold γ (0.5):

    TP = {i | G_i ≠ ∅, IoU_i > γ, c_i > δ}
    FP = {i | G_i ≠ ∅, IoU_i ≤ γ, c_i > δ} ∪ {i | G_i = ∅, c_i > δ}
    FN = {i | G_i ≠ ∅, c_i ≤ δ}                                              (Eq. 11)

F1 (Eq. 12) from precision and recall (Eq. 13). δ sweeps every distinct confidence (and −∞);
Max-F1 is the best F1, AP the area under the precision–recall curve with the step rule
``Σ_k (R_k − R_{k−1}) P_k`` over decreasing δ (recall never decreases as δ falls). Percent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def counts(confidence: np.ndarray, iou: np.ndarray, positive: np.ndarray, delta: float,
           gamma: float = 0.5) -> tuple[int, int, int]:
    """Eq. 11: |TP|, |FP|, |FN| at confidence threshold δ and IoU threshold γ."""
    above = confidence > delta
    tp = int(np.sum(positive & (iou > gamma) & above))
    fp = int(np.sum(positive & (iou <= gamma) & above) + np.sum(~positive & above))
    fn = int(np.sum(positive & ~above))
    return tp, fp, fn


def precision_recall_f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Eq. 13 and Eq. 12 (0 where a denominator is 0)."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def counterfactual_metrics(confidence: Sequence[float], iou: Sequence[float], positive: Sequence[bool],
                           gamma: float = 0.5) -> dict[str, float]:
    """AP and Max-F1 (percent) over all confidence thresholds."""
    c = np.asarray(confidence, dtype=np.float64)
    u = np.asarray(iou, dtype=np.float64)
    g = np.asarray(positive, dtype=bool)
    if not (c.shape == u.shape == g.shape) or c.ndim != 1:
        raise ValueError(f"confidence, iou and positive must be 1-D of one length, got {c.shape}, {u.shape}, {g.shape}")
    if c.size == 0 or not g.any():
        raise ValueError("counterfactual metrics need at least one positive pair")
    if not np.isfinite(c).all():
        raise ValueError("confidences must be finite")
    # Thresholds just below each distinct confidence, from the highest: item j is in at δ_k iff c_j ≥ c_(k).
    levels = np.unique(c)[::-1]
    deltas = np.nextafter(levels, -np.inf)
    ap, best_f1, last_recall = 0.0, 0.0, 0.0
    for delta in deltas:
        p, r, f1 = precision_recall_f1(*counts(c, u, g, delta, gamma))
        ap += (r - last_recall) * p
        last_recall = r
        best_f1 = max(best_f1, f1)
    return {"AP": ap * 100, "Max-F1": best_f1 * 100}
