"""Retrieval metrics on hand-built cases, invariances and the random expectation."""

import math

import pytest
import torch

from cmcr.checks import EmbeddingError
from cmcr.metrics.retrieval import bidirectional_retrieval, match_ranks, random_expectation, retrieval_metrics
from conftest import unit


def test_perfect_ranking_is_100():
    x = unit(50, 16)
    m = bidirectional_retrieval(x, x)
    assert m["A2I"] == {"mAP": 100.0, "R@1": 100.0, "R@5": 100.0} == m["I2A"]


def test_known_ranks_by_hand():
    gallery = torch.eye(3)
    queries = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.6, 0.5, 0.4]])
    # query 0 → gallery 0 first (rank 1); query 1: sims ∝ (1, .5, 0) → its match ranks 2;
    # query 2: sims ∝ (.6, .5, .4) → its match ranks 3. AP = 1, 1/2, 1/3.
    assert match_ranks(queries, gallery).tolist() == [1, 2, 3]
    m = retrieval_metrics(queries, gallery)
    assert m["mAP"] == pytest.approx(100 * (1 + 1 / 2 + 1 / 3) / 3)
    assert m["R@1"] == pytest.approx(100 / 3)
    assert m["R@5"] == pytest.approx(100.0)


def test_permutation_gives_hand_computed_value():
    e = torch.eye(4)
    gallery = e[[1, 2, 3, 0]]
    queries = e + 0.1 * e[[1, 2, 3, 0]]  # query i: mostly e_i, a bit of e_{i+1} (= gallery i)
    # sims of query i with gallery j: gallery i = e_{i+1} → 0.1; gallery (i-1) = e_i → 1.0 (after norm);
    # so the match ranks 2 for every query: mAP 50, R@1 0, R@5 100.
    m = retrieval_metrics(queries, gallery)
    assert m == {"mAP": pytest.approx(50.0), "R@1": 0.0, "R@5": 100.0}


def test_ties_count_against_the_model():
    constant = torch.ones(10, 4)
    assert match_ranks(constant, constant).tolist() == [10] * 10
    assert retrieval_metrics(constant, constant)["mAP"] == pytest.approx(10.0)


def test_random_embeddings_match_the_analytic_expectation():
    n, trials = 2000, 5
    maps, r5 = [], []
    for t in range(trials):
        m = retrieval_metrics(unit(n, 64, seed=10 + t), unit(n, 64, seed=100 + t))
        maps.append(m["mAP"])
        r5.append(m["R@5"])
    expected = random_expectation(n)
    assert expected["mAP"] == pytest.approx(100 * sum(1 / r for r in range(1, n + 1)) / n)
    # sd of one 1/rank is sqrt(E[1/r²] - E[1/r]²) with E[1/r²] ≈ (π²/6)/n; the mean of n·trials draws
    sd = 100 * math.sqrt((math.pi ** 2 / 6) / n - (expected["mAP"] / 100) ** 2) / math.sqrt(n * trials)
    assert sum(maps) / trials == pytest.approx(expected["mAP"], abs=4 * sd)
    assert sum(r5) / trials == pytest.approx(expected["R@5"], abs=0.25)


def test_invariant_to_joint_shuffling_and_chunking():
    a, b = unit(300, 16, seed=1), unit(300, 16, seed=2) + 0.5 * unit(300, 16, seed=1)
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(0))
    assert retrieval_metrics(a, b) == pytest.approx(retrieval_metrics(a[perm], b[perm]))
    assert torch.equal(match_ranks(a, b, chunk=7), match_ranks(a, b, chunk=1024))


def test_mismatched_sides_are_refused():
    with pytest.raises(EmbeddingError, match="rows"):
        retrieval_metrics(unit(5, 4), unit(6, 4))
    with pytest.raises(EmbeddingError, match="dimension"):
        retrieval_metrics(unit(5, 4), unit(5, 3))
