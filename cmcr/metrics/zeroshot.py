"""Zero-shot classification (Table 4 protocol, as in ULIP): class text embeddings averaged over prompt
templates, top-k accuracy of each item's most similar classes, in percent."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cmcr.checks import EmbeddingError, check_matrix


def class_embeddings(prompts: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean of each class's L2-normalised prompt embeddings, re-normalised (ULIP's template averaging)."""
    check_matrix(prompts, "prompt embeddings")
    if prompts.shape[0] != labels.shape[0]:
        raise EmbeddingError(f"{prompts.shape[0]} prompt embeddings but {labels.shape[0]} labels")
    missing = sorted(set(range(num_classes)) - set(labels.tolist()))
    if missing:
        raise EmbeddingError(f"classes {missing} have no prompt")
    normed = F.normalize(prompts.float(), dim=-1)
    sums = torch.zeros(num_classes, prompts.shape[1]).index_add_(0, labels, normed)
    return F.normalize(sums, dim=-1)


def topk_accuracy(items: torch.Tensor, classes: torch.Tensor, labels: torch.Tensor,
                  ks: tuple[int, ...] = (1, 3, 5)) -> dict[str, float]:
    """Share of items whose true class is among the k classes of highest cosine similarity (percent)."""
    check_matrix(items, "items")
    check_matrix(classes, "class embeddings", dim=items.shape[1])
    if items.shape[0] != labels.shape[0]:
        raise EmbeddingError(f"{items.shape[0]} items but {labels.shape[0]} labels")
    sims = F.normalize(items.float(), dim=-1) @ F.normalize(classes.float(), dim=-1).T
    true = sims.gather(1, labels.view(-1, 1))
    rank = (sims >= true).sum(dim=1)  # ties count against the model, as in retrieval
    return {f"top{k}": float((rank <= k).double().mean() * 100) for k in ks}
