"""Losses of C-MCR: Eq. 1 (InfoNCE), Eq. 5/6 (inter-MCR pairs), Eq. 7, Eq. 9 (intra-MCR), Eq. 10 (total).

All functions take *projected* embeddings. ``sim`` in the paper is cosine similarity, so every
function L2-normalises its inputs; passing already-normalised embeddings changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from cmcr.config import LossConfig


def symmetric_info_nce(x: torch.Tensor, z: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 1 (and its instances Eq. 5, L_ttc at τ2, and Eq. 6, L_avc at τ3): symmetric InfoNCE.

    ``-1/2 · 1/N Σ_i [log softmax_j(sim(x_i, z_j)/τ)_i + log softmax_j(sim(z_i, x_j)/τ)_i]``,
    where row i of ``x`` and row i of ``z`` are the positive pair.
    """
    x = F.normalize(x, dim=-1)
    z = F.normalize(z, dim=-1)
    logits = x @ z.T / temperature
    target = torch.arange(x.shape[0], device=x.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def inter_mcr_alignment(shared_pair: torch.Tensor | None, pseudo_pair: torch.Tensor | None) -> torch.Tensor:
    """Eq. 7: ``L_inter = L_ttc + L_avc`` (a term switched off is passed as ``None``)."""
    terms = [t for t in (shared_pair, pseudo_pair) if t is not None]
    if not terms:
        raise ValueError("Eq. 7 needs at least one of L_ttc / L_avc")
    return torch.stack(terms).sum()


def intra_mcr_alignment(pairs: Mapping[str, tuple[torch.Tensor, torch.Tensor]], distance: str = "l2") -> torch.Tensor:
    """Eq. 9: ``L_intra = 1/2 · 1/B Σ_i Σ_space ‖t̂_i − m̂_i‖``, per space the shared-modality embedding
    ``t̂`` against its memory-derived embedding ``m̂`` (for CLIP–CLAP: ‖t̂ᴵ − v̂ᴵ‖ and ‖t̂ᴬ − âᴬ‖).

    ``pairs`` maps a space to its (t̂, m̂) pair; only the spaces whose term is on are passed (Table 5
    rows A–C); the 1/2 factor stays, so switching a term off just removes it.

    ``distance="l2"`` is Eq. 9 exactly as printed (the non-squared Euclidean norm) and the default.
    ``distance="squared_l2"`` uses ``‖t̂ − m̂‖²`` = 2(1 − t̂ᵀm̂), the form the derivation above Eq. 9
    starts from. Their gradients differ (the non-squared norm weighs far pairs relatively less).
    """
    if distance not in ("l2", "squared_l2"):
        raise ValueError(f"intra distance must be 'l2' or 'squared_l2', got {distance!r}")
    total = None
    for shared, memory in pairs.values():
        diff = F.normalize(shared, dim=-1) - F.normalize(memory, dim=-1)
        per_item = diff.pow(2).sum(dim=-1)
        if distance == "l2":
            per_item = per_item.clamp_min(1e-12).sqrt()  # finite gradient at identical pairs
        term = per_item.mean()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("Eq. 9 needs at least one space's term")
    return 0.5 * total


def total_loss(
    shared: Mapping[str, torch.Tensor],
    memory: Mapping[str, torch.Tensor],
    spaces: tuple[str, str],
    config: LossConfig,
) -> dict[str, torch.Tensor]:
    """Eq. 10: ``L = L_inter + λ L_intra`` with the switches of Table 5 (rows A–F).

    ``shared[space]`` are the projected shared-modality embeddings (t̂ᴵ, t̂ᴬ), ``memory[space]`` the
    projected memory-derived ones (v̂ᴵ, âᴬ). Returns the total under ``"loss"`` and each active part
    (``shared_pair`` = L_ttc, ``pseudo_pair`` = L_avc, ``intra``) for logging.
    """
    first, second = spaces
    parts: dict[str, torch.Tensor] = {}
    if config.shared_pair:
        parts["shared_pair"] = symmetric_info_nce(shared[first], shared[second], config.shared_temperature)
    if config.pseudo_pair:
        parts["pseudo_pair"] = symmetric_info_nce(memory[first], memory[second], config.pseudo_temperature)
    device = next(iter(shared.values())).device
    loss = (inter_mcr_alignment(parts.get("shared_pair"), parts.get("pseudo_pair"))
            if parts else torch.zeros((), device=device))
    if config.intra_spaces and config.lambda_intra > 0:
        parts["intra"] = intra_mcr_alignment({s: (shared[s], memory[s]) for s in config.intra_spaces},
                                             config.intra_distance)
        loss = loss + config.lambda_intra * parts["intra"]
    parts["loss"] = loss
    return parts
