"""Localization (Table 2) and counterfactual (Table 3) metrics on hand-computed cases."""

import numpy as np
import pytest
import torch

from cmcr.checks import EmbeddingError
from cmcr.metrics.counterfactual import average_precision, counterfactual_metrics, counts
from cmcr.metrics.localization import best_proposals, box_mask, consensus_iou, localization_metrics


def test_two_image_localization_by_hand():
    gt1, gt2 = box_mask([(0, 0, 4, 4)], 10, 10), box_mask([(0, 0, 5, 5)], 10, 10)
    proposals = [[(0, 0, 4, 4), (5, 5, 10, 10)], [(5, 5, 10, 10), (0, 0, 6, 10)]]
    # proposal embeddings: image 1's first and image 2's second proposal match their audio
    e = torch.eye(3)
    index, score = best_proposals([torch.stack([e[0], e[1]]), torch.stack([e[2], e[1] + 0.1 * e[2]])],
                                  torch.stack([e[0], e[1]]))
    assert index == [0, 1] and score[0] == pytest.approx(1.0)
    ious = [consensus_iou(box_mask([proposals[i][k]], 10, 10), gt) for i, (k, gt) in enumerate(zip(index, (gt1, gt2)))]
    assert ious == pytest.approx([1.0, 25 / 60])  # image 2: 25 px overlap, 35 px of prediction outside the 25 px GT
    m = localization_metrics(ious)
    assert m["cIoU"] == pytest.approx(50.0)
    # success rate 1 for thresholds 0..0.40, 0.5 from 0.45 to 1: 8·0.05 + 0.05·0.75 + 11·0.05·0.5
    assert m["AUC"] == pytest.approx(100 * (0.4 + 0.0375 + 0.275))


def test_union_of_boxes_is_the_ground_truth_map():
    gt = box_mask([(0, 0, 2, 2), (1, 1, 3, 3)], 4, 4)
    assert gt.sum() == 7
    assert consensus_iou(box_mask([(0, 0, 3, 3)], 4, 4), gt) == pytest.approx(7 / 9)


def test_localization_errors():
    with pytest.raises(EmbeddingError, match="image 1 has no proposals"):
        best_proposals([torch.ones(2, 3), torch.ones(0, 3)], torch.ones(2, 3))
    with pytest.raises(EmbeddingError, match="3 images with proposals but 2 audio"):
        best_proposals([torch.ones(1, 3)] * 3, torch.ones(2, 3))
    with pytest.raises(ValueError, match="degenerate box"):
        box_mask([(3, 3, 1, 5)], 5, 5)


CASE = dict(confidence=[0.9, 0.8, 0.7, 0.6, 0.5], iou=[0.8, 0.0, 0.3, 0.9, 0.0],
            positive=[True, False, True, True, False])


def test_counterfactual_by_hand():
    c, u, g = (np.asarray(CASE[k]) for k in ("confidence", "iou", "positive"))
    assert counts(c, u, g, 0.65) == (1, 2, 1)  # TP {1}; FP {2 (negative), 3 (IoU 0.3)}; FN {4}
    m = counterfactual_metrics(**CASE)
    # thresholds below 0.9, 0.8, 0.7, 0.6, 0.5: (P, R) = (1, 1/3), (1/2, 1/3), (1/3, 1/2), (1/2, 1), (2/5, 1)
    assert m["Max-F1"] == pytest.approx(100 * 2 / 3)
    # interpolated (default): precision envelope max_{j>=k} P_j = 1, 1/2, 1/2, 1/2, 2/5 → 1/3·1 + 1/6·1/2 + 1/2·1/2
    assert m["AP"] == pytest.approx(100 * 2 / 3)
    # raw steps: the 1/3 precision at R = 1/2 is used as it is
    steps = counterfactual_metrics(**CASE, ap="steps")
    assert steps["AP"] == pytest.approx(100 * (1 / 3 + (1 / 2 - 1 / 3) / 3 + (1 - 1 / 2) / 2))  # 63.89
    assert steps["Max-F1"] == m["Max-F1"]


def test_counterfactual_ap_envelope_differs_from_steps_by_hand():
    # ranked by confidence: +hit, -, -, +hit, +hit, -, -; 3 positives, all hits
    c = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]
    u = [0.9, 0.0, 0.0, 0.7, 0.6, 0.0, 0.0]
    g = [True, False, False, True, True, False, False]
    # (P, R) per threshold: (1, 1/3) (1/2, 1/3) (1/3, 1/3) (1/2, 2/3) (3/5, 1) (1/2, 1) (3/7, 1)
    # steps:        1/3·1 + 1/3·1/2 + 1/3·3/5                               = 0.7
    # interpolated: 1/3·1 + 1/3·3/5 + 1/3·3/5 (envelope at R = 2/3 is 3/5) = 0.7333…
    assert counterfactual_metrics(c, u, g, ap="steps")["AP"] == pytest.approx(70.0)
    assert counterfactual_metrics(c, u, g)["AP"] == pytest.approx(220 / 3)
    # the same rule on the written-out curve
    assert average_precision([1, .5, 1 / 3, .5, .6, .5, 3 / 7], [1 / 3] * 3 + [2 / 3] + [1] * 3) == pytest.approx(2.2 / 3)
    with pytest.raises(ValueError, match="recall must not decrease"):
        average_precision([1, 1], [0.5, 0.25])
    with pytest.raises(ValueError, match="ap must be one of"):
        counterfactual_metrics(c, u, g, ap="voc")


def test_counterfactual_iou_exactly_at_threshold():
    c, u, g = [0.9, 0.8], [0.5, 1.0], [True, True]
    # printed Eq. 11 (IoU > 0.5): the first pair is a false positive; SLAVC (IoU >= 0.5): a true positive
    assert counts(np.asarray(c), np.asarray(u), np.asarray(g), 0.0) == (1, 1, 0)
    assert counts(np.asarray(c), np.asarray(u), np.asarray(g), 0.0, iou_rule="ge") == (2, 0, 0)
    # gt: (P, R) = (0, 0) at δ<0.9 (a miss, the other pair a FN), (1/2, 1) at δ<0.8 → AP = 1·1/2;
    # ge: (1, 1/2) then (1, 1) → AP = 1
    assert counterfactual_metrics(c, u, g)["AP"] == pytest.approx(50.0)
    assert counterfactual_metrics(c, u, g, iou_rule="ge")["AP"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="iou_rule must be one of"):
        counterfactual_metrics(c, u, g, iou_rule="gte")


def test_metric_options_are_checked():
    from cmcr.evaluation import metric_options

    assert metric_options("counterfactual", {"ap": "steps", "iou_rule": "ge"}) == {"ap": "steps", "iou_rule": "ge"}
    assert metric_options("retrieval", None) == {}
    with pytest.raises(ValueError, match="evaluation.counterfactual.ap: 'voc' is not one of"):
        metric_options("counterfactual", {"ap": "voc"})
    with pytest.raises(ValueError, match="evaluation.retrieval.ap: unknown option"):
        metric_options("retrieval", {"ap": "steps"})


def test_counterfactual_invariances():
    base = counterfactual_metrics(**CASE)
    scaled = counterfactual_metrics([3 * c for c in CASE["confidence"]], CASE["iou"], CASE["positive"])
    assert scaled == pytest.approx(base)
    order = [3, 0, 4, 2, 1]
    shuffled = counterfactual_metrics(*[[CASE[k][i] for i in order] for k in ("confidence", "iou", "positive")])
    assert shuffled == pytest.approx(base)


def test_counterfactual_errors():
    with pytest.raises(ValueError, match="at least one positive"):
        counterfactual_metrics([0.1], [0.0], [False])
    with pytest.raises(ValueError, match="one length"):
        counterfactual_metrics([0.1, 0.2], [0.0], [True])


def test_score_scenes_by_hand_and_its_errors():
    import pandas as pd

    from cmcr.metrics.localization import score_scenes

    proposals = pd.DataFrame({"scene_id": ["s1", "s1", "s2"], "x1": [0, 5, 0], "y1": [0, 5, 0], "x2": [4, 10, 6],
                              "y2": [4, 10, 10]})
    scenes = pd.DataFrame({"scene_id": ["s1", "s2"], "positive": [True, False], "width": [10, 10], "height": [10, 10],
                           "gt_boxes": [[[0, 0, 4, 4]], []]})
    e = torch.eye(2)
    scored = score_scenes(torch.stack([e[0], e[1], e[1]]), proposals, torch.stack([e[0], e[1]]), scenes)
    assert scored["proposal"].tolist() == [0, 2] and scored["iou"].tolist() == [1.0, 0.0]
    assert scored["confidence"].tolist() == pytest.approx([1.0, 1.0])
    with pytest.raises(EmbeddingError, match=r"1 scene\(s\) have no proposals, e.g. \['s3'\]"):
        score_scenes(torch.stack([e[0], e[1], e[1]]), proposals, torch.stack([e[0], e[1]]),
                     scenes.assign(scene_id=["s1", "s3"]))
    with pytest.raises(EmbeddingError, match="one row per embedding"):
        score_scenes(torch.stack([e[0], e[1]]), proposals, torch.stack([e[0], e[1]]), scenes)


def test_retrieval_ceiling_on_hand_built_classes():
    """Issue 11: classes a, a, b, b, b, c → expected AP 3/4 (a), 11/18 (b), 1 (c); R@1 1/2, 1/3, 1."""
    from cmcr.metrics.ceiling import retrieval_ceiling

    got = retrieval_ceiling(["a", "a", "b", "b", "b", "c"], ks=(1, 2, 5))
    assert got["mAP"] == pytest.approx(100 * (2 * 3 / 4 + 3 * 11 / 18 + 1) / 6)  # = 72.22
    assert got["R@1"] == pytest.approx(100 * (2 * 1 / 2 + 3 * 1 / 3 + 1) / 6)   # = 50
    assert got["R@2"] == pytest.approx(100 * (2 * 1 + 3 * 2 / 3 + 1) / 6)
    assert got["R@5"] == pytest.approx(100.0)
    assert retrieval_ceiling(list(range(7)))["mAP"] == pytest.approx(100.0)  # every pair its own class


def test_retrieval_ceiling_equals_enumerating_every_order_within_classes():
    """Independent check: a class-perfect ranker puts the correct item somewhere among its class; average
    1/rank and [rank = 1] over every tie-break order of the gallery (all 6! equally likely)."""
    import itertools

    from cmcr.metrics.ceiling import retrieval_ceiling

    classes = [0, 0, 0, 1, 1, 2]
    n = len(classes)
    ap = r1 = 0.0
    orders = list(itertools.permutations(range(n)))
    for order in orders:
        place = {item: k for k, item in enumerate(order)}
        for i in range(n):
            rank = 1 + sum(1 for j in range(n) if classes[j] == classes[i] and place[j] < place[i])
            ap += 1 / rank
            r1 += rank == 1
    expected = retrieval_ceiling(classes, ks=(1,))
    assert 100 * ap / (n * len(orders)) == pytest.approx(expected["mAP"], abs=1e-9)
    assert 100 * r1 / (n * len(orders)) == pytest.approx(expected["R@1"], abs=1e-9)


def test_scene_ceilings_take_the_best_proposal():
    import pandas as pd

    from cmcr.metrics.ceiling import counterfactual_ceiling, localization_ceiling, oracle_ious

    proposals = pd.DataFrame({"scene_id": ["s0", "s0", "s1", "s1", "s2"], "x1": [0, 0, 0, 5, 0],
                              "y1": [0, 0, 0, 5, 0], "x2": [10, 5, 10, 10, 4], "y2": [10, 10, 10, 10, 4]})
    scenes = pd.DataFrame({"scene_id": ["s0", "s1", "s2"], "positive": [True, True, False], "width": [10] * 3,
                           "height": [10] * 3, "gt_boxes": [[[0, 0, 5, 10]], [[0, 0, 4, 4]], []]})
    ious = oracle_ious(proposals, scenes)
    # s0: the box equal to the ground truth (1.0); s1: 16/100 (the full image) beats 0 (the other corner); s2: none
    assert ious.tolist() == pytest.approx([1.0, 0.16, 0.0])
    loc = localization_ceiling(proposals, scenes)
    assert loc["cIoU"] == pytest.approx(100 / 3)
    cf = counterfactual_ceiling(proposals, scenes)
    # by hand (Eq. 11-13): only s0 is confident: P 1, R 1/2; then all: TP 1, FP 2 (s1's box misses; s2), FN 0
    assert cf["Max-F1"] == pytest.approx(100 * 2 * 1 * 0.5 / 1.5)
    assert cf["AP"] == pytest.approx(100 * (0.5 * 1 + 0.5 * 1 / 3))


def test_space_statistics_by_hand_and_against_the_pairwise_formula():
    from cmcr.metrics.spaces import cone, modality_gap, paired_cosine, space_statistics

    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    b = np.array([[-1.0, 0.0], [0.0, -1.0]])
    assert modality_gap(a, b) == pytest.approx(np.sqrt(2))  # centroids (.5, .5) and (-.5, -.5)
    assert paired_cosine(a, b) == pytest.approx(-1.0) and paired_cosine(a, a * 3) == pytest.approx(1.0)
    assert cone(a) == pytest.approx(0.0) and cone(np.array([[1.0, 0], [2.0, 0], [5.0, 0]])) == pytest.approx(1.0)
    x = np.random.default_rng(0).standard_normal((50, 8)) + 2.0
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = unit @ unit.T
    assert cone(x) == pytest.approx((sims.sum() - np.trace(sims)) / (50 * 49))  # every pair, written out
    stats = space_statistics("image", "text", a, b, a, b)
    assert set(stats) == {"modality_gap", "paired_cosine", "cone_image", "cone_text"}
