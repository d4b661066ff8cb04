"""Cross-modal retrieval metrics with one relevant item per query (AVE / Flickr-SoundNet protocol).

Item i of the query side matches item i of the gallery side. For a query, the rank of its match is
``1 + #{j ≠ i : s_ij ≥ s_ii}`` — ties are counted *against* the model (pessimistic), so constant or
degenerate embeddings can never score well. With one relevant item, average precision is ``1/rank``;
mAP is its mean and R@k the share of queries whose match ranks ≤ k. All in percent.

Similarities are computed in query chunks, so N×N is never materialised at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cmcr.checks import check_matrix, check_same_rows


def match_ranks(queries: torch.Tensor, gallery: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """1-based rank of gallery item i among all gallery items for query i (cosine similarity)."""
    check_matrix(queries, "queries")
    check_matrix(gallery, "gallery", dim=queries.shape[1])
    check_same_rows(queries, "queries", gallery, "gallery")
    q = F.normalize(queries.float(), dim=-1)
    g = F.normalize(gallery.float(), dim=-1)
    ranks = torch.empty(q.shape[0], dtype=torch.long)
    for start in range(0, q.shape[0], chunk):
        sims = q[start:start + chunk] @ g.T
        rows = torch.arange(sims.shape[0])
        positive = sims[rows, rows + start].unsqueeze(1)
        at_least = (sims >= positive).sum(dim=1)  # includes the match itself
        ranks[start:start + chunk] = at_least.cpu()
    return ranks


def retrieval_metrics(queries: torch.Tensor, gallery: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """mAP and R@k (percent) for retrieving gallery item i with query i."""
    ranks = match_ranks(queries, gallery).double()
    out = {"mAP": float((1.0 / ranks).mean() * 100)}
    for k in ks:
        out[f"R@{k}"] = float((ranks <= k).double().mean() * 100)
    return out


def bidirectional_retrieval(first: torch.Tensor, second: torch.Tensor, names: tuple[str, str] = ("A", "I")) -> dict[str, dict[str, float]]:
    """Both directions, keyed like the paper: ``{"A2I": {...}, "I2A": {...}}`` for names ("A", "I")."""
    a, b = names
    return {f"{a}2{b}": retrieval_metrics(first, second), f"{b}2{a}": retrieval_metrics(second, first)}


def random_expectation(n: int, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Expected metrics of a random ranking of n items: mAP = H_n / n, R@k = k / n (percent)."""
    harmonic = sum(1.0 / r for r in range(1, n + 1))
    out = {"mAP": 100 * harmonic / n}
    for k in ks:
        out[f"R@{k}"] = 100 * min(k, n) / n
    return out
