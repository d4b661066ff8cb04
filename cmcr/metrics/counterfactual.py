"""Counterfactual audio-image recognition (Table 3; appendix B.3, Eq. 11–13), as in SLAVC.

Pair i has a confidence ``c_i`` (the best proposal's score), the IoU of its prediction ``IoU_i`` and a
ground truth that is empty for negatives (silent objects / non-visible sounds). For a confidence
threshold δ and IoU threshold γ (0.5):

    TP = {i | G_i ≠ ∅, IoU_i > γ, c_i > δ}
    FP = {i | G_i ≠ ∅, IoU_i ≤ γ, c_i > δ} ∪ {i | G_i = ∅, c_i > δ}
    FN = {i | G_i ≠ ∅, c_i ≤ δ}                                              (Eq. 11)

F1 (Eq. 12) from precision and recall (Eq. 13). δ sweeps every distinct confidence (and −∞);
Max-F1 is the best F1. Percent.

Two choices the paper leaves to its references ([57] COCO, [68] SLAVC), both parameters:

- ``ap``: ``interpolated`` (default) is the area under the *interpolated* precision–recall curve, as
  COCO and SLAVC's ``calc_ap`` compute it: the precision at recall level k is the highest precision
  at that recall or above, ``P̃_k = max_{j ≥ k} P_j``, and AP = ``Σ_k (R_k − R_{k−1}) P̃_k`` over
  decreasing δ (R_0 = 0). ``steps`` sums the raw precisions ``Σ_k (R_k − R_{k−1}) P_k`` instead, which
  is never higher (kept for comparison with earlier numbers of this project).
- ``iou_rule``: ``gt`` (default) counts a hit when ``IoU > γ``, as Eq. 11 is printed; ``ge`` when
  ``IoU ≥ γ``, as SLAVC's evaluator does. They differ only for an IoU exactly at γ.

Not replicated from SLAVC's code: it thins the thresholds to about 200 (every ``len // 200``-th
confidence) and skips the highest confidence; here every distinct confidence is a threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


#: AP rules (``evaluation.counterfactual.ap``) and IoU rules (``evaluation.counterfactual.iou_rule``)
AP_RULES = ("interpolated", "steps")
IOU_RULES = ("gt", "ge")


def counts(confidence: np.ndarray, iou: np.ndarray, positive: np.ndarray, delta: float,
           gamma: float = 0.5, iou_rule: str = "gt") -> tuple[int, int, int]:
    """Eq. 11: |TP|, |FP|, |FN| at confidence threshold δ and IoU threshold γ (``iou_rule`` gt: IoU > γ as
    printed; ge: IoU ≥ γ as SLAVC's code)."""
    if iou_rule not in IOU_RULES:
        raise ValueError(f"iou_rule must be one of {IOU_RULES}, got {iou_rule!r}")
    above = confidence > delta
    hit = iou > gamma if iou_rule == "gt" else iou >= gamma
    tp = int(np.sum(positive & hit & above))
    fp = int(np.sum(positive & ~hit & above) + np.sum(~positive & above))
    fn = int(np.sum(positive & ~above))
    return tp, fp, fn


def precision_recall_f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Eq. 13 and Eq. 12 (0 where a denominator is 0)."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def average_precision(precision: Sequence[float], recall: Sequence[float], rule: str = "interpolated") -> float:
    """Area under a precision–recall curve given at thresholds of decreasing δ (recall non-decreasing),
    from recall 0: ``interpolated`` uses the precision envelope ``max_{j ≥ k} P_j`` (COCO, SLAVC),
    ``steps`` the raw ``P_k``. A fraction (not percent)."""
    if rule not in AP_RULES:
        raise ValueError(f"ap must be one of {AP_RULES}, got {rule!r}")
    p = np.asarray(precision, dtype=np.float64)
    r = np.asarray(recall, dtype=np.float64)
    if p.shape != r.shape or p.ndim != 1:
        raise ValueError(f"precision and recall must be 1-D of one length, got {p.shape} and {r.shape}")
    if np.any(np.diff(r) < 0):
        raise ValueError("recall must not decrease along the thresholds (give them from the highest δ down)")
    if rule == "interpolated":
        p = np.maximum.accumulate(p[::-1])[::-1]
    return float(np.sum(np.diff(r, prepend=0.0) * p))


def counterfactual_metrics(confidence: Sequence[float], iou: Sequence[float], positive: Sequence[bool],
                           gamma: float = 0.5, ap: str = "interpolated", iou_rule: str = "gt") -> dict[str, float]:
    """AP (rule ``ap``) and Max-F1 (percent) over all confidence thresholds; Eq. 11 with ``iou_rule``."""
    if ap not in AP_RULES:
        raise ValueError(f"ap must be one of {AP_RULES}, got {ap!r}")
    if iou_rule not in IOU_RULES:
        raise ValueError(f"iou_rule must be one of {IOU_RULES}, got {iou_rule!r}")
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
    curve = [precision_recall_f1(*counts(c, u, g, delta, gamma, iou_rule)) for delta in deltas]
    precision, recall, f1 = (np.array(x) for x in zip(*curve))
    return {"AP": average_precision(precision, recall, ap) * 100, "Max-F1": float(f1.max()) * 100}
