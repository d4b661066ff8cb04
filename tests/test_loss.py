"""Eq. 1/5/6, 7, 9, 10 against hand-computed values and independent loops."""

import math

import pytest
import torch

from cmcr.config import LossConfig
from cmcr.loss import intra_mcr_alignment, inter_mcr_alignment, symmetric_info_nce, total_loss
from conftest import unit


def info_nce_loop(x, z, tau):
    """Eq. 1 written as the paper prints it, in float64."""
    x = torch.nn.functional.normalize(x.double(), dim=1)
    z = torch.nn.functional.normalize(z.double(), dim=1)
    n = x.shape[0]
    total = 0.0
    for i in range(n):
        a = math.exp(float(x[i] @ z[i]) / tau) / sum(math.exp(float(x[i] @ z[j]) / tau) for j in range(n))
        b = math.exp(float(z[i] @ x[i]) / tau) / sum(math.exp(float(z[i] @ x[j]) / tau) for j in range(n))
        total += math.log(a) + math.log(b)
    return -0.5 * total / n


def test_info_nce_hand_case():
    x = torch.eye(2)
    # logits = I/τ with τ=1: each row's loss is -log(e / (e + 1)) = log(1 + 1/e)
    assert symmetric_info_nce(x, x, 1.0).item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)


@pytest.mark.parametrize("tau", [0.01, 0.07, 1.0])
def test_info_nce_matches_loop(tau):
    x, z = unit(12, 6, seed=1), unit(12, 6, seed=2) * 3  # scale must not matter: sim is cosine
    assert symmetric_info_nce(x, z, tau).item() == pytest.approx(info_nce_loop(x, z, tau), rel=1e-5)


def test_intra_l2_and_squared_hand_case():
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    m = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # distances √2 and 0
    # Eq. 9 with one space: 1/2 · mean(√2, 0) = √2 / 4
    assert intra_mcr_alignment({"clip": (t, m)}, "l2").item() == pytest.approx(math.sqrt(2) / 4, abs=1e-6)
    assert intra_mcr_alignment({"clip": (t, m)}, "squared_l2").item() == pytest.approx(2 / 4, abs=1e-6)
    both = intra_mcr_alignment({"clip": (t, m), "clap": (t, t)}, "l2").item()
    assert both == pytest.approx(math.sqrt(2) / 4, abs=1e-6)


def test_intra_l2_gradient_is_finite_for_identical_pairs():
    t = unit(4, 3).requires_grad_()
    intra_mcr_alignment({"clip": (t, t.detach())}, "l2").backward()
    assert torch.isfinite(t.grad).all()


def test_total_loss_composition_and_switches():
    shared = {"clip": unit(8, 5, seed=3), "clap": unit(8, 5, seed=4)}
    memory = {"clip": unit(8, 5, seed=5), "clap": unit(8, 5, seed=6)}
    ttc = info_nce_loop(shared["clip"], shared["clap"], 0.01)
    avc = info_nce_loop(memory["clip"], memory["clap"], 0.02)

    def d(a, b):
        return (a - b).norm(dim=1).mean().item()

    intra_clip, intra_clap = d(shared["clip"], memory["clip"]), d(shared["clap"], memory["clap"])
    base = dict(shared_temperature=0.01, pseudo_temperature=0.02, lambda_intra=0.1)
    k = total_loss(shared, memory, ("clip", "clap"), LossConfig(**base))  # row K
    assert k["loss"].item() == pytest.approx(ttc + avc + 0.1 * 0.5 * (intra_clip + intra_clap), rel=1e-5)
    assert k["shared_pair"].item() == pytest.approx(ttc, rel=1e-5)
    a = total_loss(shared, memory, ("clip", "clap"), LossConfig(**base, intra_spaces=("clip",)))  # row A
    assert a["loss"].item() == pytest.approx(ttc + avc + 0.1 * 0.5 * intra_clip, rel=1e-5)
    c = total_loss(shared, memory, ("clip", "clap"), LossConfig(**base, intra_spaces=()))  # row C
    assert c["loss"].item() == pytest.approx(ttc + avc, rel=1e-5) and "intra" not in c
    d_row = total_loss(shared, memory, ("clip", "clap"), LossConfig(**base, shared_pair=False))  # row D
    assert d_row["loss"].item() == pytest.approx(avc + 0.1 * 0.5 * (intra_clip + intra_clap), rel=1e-5)
    f = total_loss(shared, memory, ("clip", "clap"), LossConfig(**base, shared_pair=False, pseudo_pair=False))
    assert f["loss"].item() == pytest.approx(0.1 * 0.5 * (intra_clip + intra_clap), rel=1e-5)  # row F


def test_inter_needs_a_term():
    assert inter_mcr_alignment(torch.tensor(1.0), torch.tensor(2.0)).item() == 3.0
    with pytest.raises(ValueError):
        inter_mcr_alignment(None, None)
