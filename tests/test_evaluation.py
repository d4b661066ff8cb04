"""cmcr.evaluation: models as embedding functions per space, baselines."""

import pandas as pd
import pytest
import torch

from cmcr.evaluation import BenchmarkData, evaluate_model, no_connection, random_baseline
from conftest import unit


def test_no_connection_compares_spaces_as_they_are():
    x = unit(20, 8)
    data = BenchmarkData("retrieval", {"audio": 3 * x, "image": x}, {})
    metrics, items = evaluate_model(data, no_connection(("clip", "clap")), "no_connection")
    assert metrics["A2I"]["mAP"] == 100.0 and metrics["I2A"]["R@1"] == 100.0
    assert set(items["direction"]) == {"A2I", "I2A"} and (items["rank"] == 1).all()


def test_zeroshot_model_and_chance():
    prompts = torch.eye(4)[[0, 0, 1, 1, 2, 2]]  # two prompts per class, 3 classes
    table = pd.DataFrame({"label": [0, 0, 1, 1, 2, 2]})
    points = torch.eye(4)[[0, 1, 2, 2]]
    data = BenchmarkData("zeroshot3d", {"points": points, "prompts": prompts},
                         {"points": pd.DataFrame({"concept": [0, 1, 2, 0]}), "prompts": table})
    metrics, _ = evaluate_model(data, no_connection(("clip", "ulip")), "x")
    assert metrics["top1"] == pytest.approx(75.0)  # the last item is a class-2 cloud labelled 0
    assert random_baseline(data) == {"top1": pytest.approx(100 / 3), "top3": 100.0, "top5": 100.0}
