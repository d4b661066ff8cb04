"""Audio-visual source localization with object proposals (Table 2; protocol of appendix B.2).

For each image–audio pair, every object proposal (a box from a detector, embedded in the connected
space by the image side's projector) is scored against the audio by cosine similarity; the best
proposal is the prediction and its score the confidence. The prediction is compared with the ground
truth map — the union of the annotated boxes — by the consensus IoU of LVS / EZ-VSL:
``|pred ∩ gt| / (|gt| + |pred \\ gt|)`` on the pixel grid. Reported: cIoU = share of pairs with
IoU ≥ 0.5, and AUC = area (trapezoid rule) under the success-rate curve over the 21 thresholds
0, 0.05, …, 1 — both in percent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cmcr.checks import EmbeddingError

Box = Sequence[float]  # x1, y1, x2, y2 in pixels (x2, y2 exclusive)


def box_mask(boxes: Sequence[Box], height: int, width: int) -> np.ndarray:
    """Binary H×W map, 1 inside any of ``boxes`` (clipped to the image)."""
    mask = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in boxes:
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"degenerate box {(x1, y1, x2, y2)}: need x2 > x1 and y2 > y1")
        c1, r1 = max(int(round(x1)), 0), max(int(round(y1)), 0)
        c2, r2 = min(int(round(x2)), width), min(int(round(y2)), height)
        mask[r1:r2, c1:c2] = True
    return mask


def consensus_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """``|pred ∩ gt| / (|gt| + |pred \\ gt|)`` (= IoU for binary maps); 0 when both are empty."""
    inter = np.logical_and(pred, gt).sum()
    denom = gt.sum() + np.logical_and(pred, ~gt).sum()
    return float(inter / denom) if denom else 0.0


def best_proposals(proposals: Sequence[torch.Tensor], audio: torch.Tensor) -> tuple[list[int], list[float]]:
    """For pair i: index and cosine score of the proposal of image i most similar to audio i."""
    if len(proposals) != audio.shape[0]:
        raise EmbeddingError(f"{len(proposals)} images with proposals but {audio.shape[0]} audio clips")
    a = F.normalize(audio.float(), dim=-1)
    index, score = [], []
    for i, p in enumerate(proposals):
        if p.ndim != 2 or p.shape[0] == 0:
            raise EmbeddingError(f"image {i} has no proposals")
        if p.shape[1] != a.shape[1]:
            raise EmbeddingError(f"image {i}: proposals have dimension {p.shape[1]}, audio {a.shape[1]}")
        s = F.normalize(p.float(), dim=-1) @ a[i]
        k = int(s.argmax())
        index.append(k)
        score.append(float(s[k]))
    return index, score


def localization_metrics(ious: Sequence[float], threshold: float = 0.5, steps: int = 21) -> dict[str, float]:
    """cIoU (share with IoU ≥ ``threshold``) and AUC of the success rate over ``steps`` thresholds in [0, 1]."""
    ious = np.asarray(ious, dtype=np.float64)
    if ious.size == 0:
        raise ValueError("no localization results")
    xs = np.linspace(0, 1, steps)
    success = np.array([(ious >= x).mean() for x in xs])
    auc = float(np.sum((success[1:] + success[:-1]) / 2 * np.diff(xs)))
    return {"cIoU": float((ious >= threshold).mean() * 100), "AUC": auc * 100}


def score_scenes(proposals: torch.Tensor, proposal_table, audio: torch.Tensor, scene_table):
    """Best proposal, its confidence and its IoU with the ground-truth map, per scene.

    ``proposal_table`` has one row per proposal (``scene_id, x1, y1, x2, y2``) aligned with
    ``proposals`` (embeddings in the connected space); ``scene_table`` one row per scene
    (``scene_id, positive, width, height, gt_boxes``) aligned with ``audio``. Returns a DataFrame with
    ``scene_id, positive, proposal (row in proposal_table), confidence, iou``.
    """
    import pandas as pd

    if len(proposal_table) != proposals.shape[0] or len(scene_table) != audio.shape[0]:
        raise EmbeddingError("proposal / scene tables must have one row per embedding")
    groups = proposal_table.groupby("scene_id", sort=False).indices
    missing = [s for s in scene_table["scene_id"] if s not in groups]
    if missing:
        raise EmbeddingError(f"{len(missing)} scene(s) have no proposals, e.g. {missing[:3]}")
    rows = [np.asarray(groups[s]) for s in scene_table["scene_id"]]
    index, score = best_proposals([proposals[r] for r in rows], audio)
    ious = []
    boxes = proposal_table[["x1", "y1", "x2", "y2"]].to_numpy(dtype=float)  # columns read once, not per scene
    for r, k, h, w, gt_boxes in zip(rows, index, scene_table["height"].tolist(), scene_table["width"].tolist(),
                                    scene_table["gt_boxes"].tolist()):
        h, w = int(h), int(w)
        gt = box_mask([tuple(b) for b in gt_boxes], h, w) if len(gt_boxes) else np.zeros((h, w), bool)
        ious.append(consensus_iou(box_mask([tuple(boxes[r[k]])], h, w), gt))
    return pd.DataFrame({"scene_id": scene_table["scene_id"].to_numpy(), "positive": scene_table["positive"].to_numpy(),
                         "proposal": [int(r[k]) for r, k in zip(rows, index)], "confidence": score, "iou": ious})
