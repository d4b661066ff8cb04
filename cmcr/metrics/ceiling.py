"""What a benchmark can show at best: exact ceilings from its own structure, printed beside every score.

- Retrieval: items fall into classes (in the demo world, concept × size: a pair's audio and image share
  nothing else). No model can tell same-class items apart, so the best it can do is rank every
  same-class item first; the correct one is then equally likely at each of the ``c`` places of its class,
  which gives expected AP ``H_c / c`` (``H_c`` the c-th harmonic number), R@1 ``1 / c``, R@k
  ``min(k, c) / c``. Averaged over queries, this is exact (no sampling). Without class columns every pair
  is its own class and the ceiling is 100.
- Localization: the proposal with the highest IoU in each scene (an oracle choice among the detector's
  boxes) → cIoU and AUC.
- Counterfactual: that oracle proposal, and a confidence that puts every positive whose oracle box
  passes Eq. 11's IoU rule above everything else.
- Zero-shot 3D: 100 (every class is named by its prompts).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence

import numpy as np

from cmcr.metrics.counterfactual import counterfactual_metrics
from cmcr.metrics.localization import box_mask, consensus_iou, localization_metrics


def harmonic(n: int) -> float:
    return float(sum(1.0 / r for r in range(1, n + 1)))


def retrieval_ceiling(classes: Sequence[Hashable], ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Expected mAP / R@k (percent) of a perfect class-level ranker, where pair i's class is ``classes[i]``
    (the same for its query and its gallery item). Exact: an average of closed forms over the queries."""
    sizes = Counter(classes)
    n = len(classes)
    if n == 0:
        raise ValueError("no pairs")
    out = {"mAP": 100 * sum(harmonic(sizes[c]) / sizes[c] for c in classes) / n}
    for k in ks:
        out[f"R@{k}"] = 100 * sum(min(k, sizes[c]) / sizes[c] for c in classes) / n
    return out


def oracle_ious(proposal_table, scene_table) -> np.ndarray:
    """Per scene (rows of ``scene_table``), the highest IoU with the ground truth among its proposals."""
    groups = proposal_table.groupby("scene_id", sort=False).indices
    boxes = proposal_table[["x1", "y1", "x2", "y2"]].to_numpy(dtype=float)
    out = []
    for _, scene in scene_table.iterrows():
        h, w = int(scene["height"]), int(scene["width"])
        gt = box_mask([tuple(b) for b in scene["gt_boxes"]], h, w) if len(scene["gt_boxes"]) else np.zeros((h, w), bool)
        out.append(max(consensus_iou(box_mask([tuple(boxes[r])], h, w), gt) for r in groups[scene["scene_id"]]))
    return np.asarray(out)


def localization_ceiling(proposal_table, scene_table) -> dict[str, float]:
    return localization_metrics(oracle_ious(proposal_table, scene_table))


def counterfactual_ceiling(proposal_table, scene_table, gamma: float = 0.5, ap: str = "interpolated",
                           iou_rule: str = "gt") -> dict[str, float]:
    ious = oracle_ious(proposal_table, scene_table)
    positive = scene_table["positive"].to_numpy(dtype=bool)
    hit = positive & ((ious > gamma) if iou_rule == "gt" else (ious >= gamma))
    return counterfactual_metrics(hit.astype(float), ious, positive, gamma=gamma, ap=ap, iou_rule=iou_rule)
