"""Shaping a stand-in space to published statistics (cmcr/encoders/geometry.py), checked against direct
pairwise computations on small samples."""

import math

import numpy as np
import pytest
import torch

from cmcr.encoders.geometry import (Geometry, fit_geometry, geometry_basis, offset_vectors, project_out, shape,
                                    training_temperature)


def _pairwise_cone(x: np.ndarray) -> float:  # independent of the Σ-trick the library uses
    sims = x @ x.T
    n = len(x)
    return float((sims.sum() - np.trace(sims)) / (n * (n - 1)))


def _sample(n, dim, basis, seed, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(n, dim, generator=g, dtype=torch.float64) + shift
    return project_out(raw.float(), basis).double()


def test_fitted_offsets_give_the_target_cones_and_gap_exactly():
    dim = 32
    basis = geometry_basis(dim, seed=3)
    assert torch.allclose(basis @ basis.T, torch.eye(2), atol=1e-6)
    a, b = _sample(300, dim, basis, 0, shift=0.2), _sample(250, dim, basis, 1)
    geometry = fit_geometry(a.numpy(), b.numpy(), cone_first=0.468, cone_second=0.3, gap=0.82)
    assert all(geometry.reached.values())
    offsets = offset_vectors(basis, geometry).double()
    ea, eb = shape(a, offsets[0]), shape(b, offsets[1])
    assert torch.allclose(ea.norm(dim=1), torch.ones(len(ea), dtype=torch.float64), atol=1e-6)  # unit, no renorm
    assert _pairwise_cone(ea.numpy()) == pytest.approx(0.468, abs=1e-5)
    assert _pairwise_cone(eb.numpy()) == pytest.approx(0.3, abs=1e-5)
    gap = float(torch.linalg.norm(ea.mean(0) - eb.mean(0)))
    assert gap == pytest.approx(0.82, abs=1e-5)
    # the offsets' angle is the fitted one
    ca, cb = offsets[0] / offsets[0].norm(), offsets[1] / offsets[1].norm()
    assert float(ca @ cb) == pytest.approx(geometry.cos_theta, abs=1e-6)


def test_cross_modal_similarity_is_an_increasing_affine_map_and_the_temperature_scales():
    dim = 24
    basis = geometry_basis(dim, seed=0)
    a, b = _sample(40, dim, basis, 2), _sample(40, dim, basis, 3)
    geometry = Geometry(0.9, 0.6, 0.3, {})
    offsets = offset_vectors(basis, geometry).double()
    su, se = a @ b.T, shape(a, offsets[0]) @ shape(b, offsets[1]).T
    expected = (su + 0.9 * 0.6 * 0.3) / geometry.scale()  # e_a·e_b = (u_a·u_b + r_a r_b cos θ) / (N_a N_b)
    assert torch.allclose(se, expected, atol=1e-6)
    assert torch.equal(torch.argsort(su, dim=1, stable=True), torch.argsort(se, dim=1, stable=True))
    tau_e = 0.01
    assert torch.allclose(torch.softmax(se / tau_e, 1), torch.softmax(su / (tau_e * geometry.scale()), 1), atol=1e-6)
    assert geometry.scale() == pytest.approx(math.sqrt(1.81 * 1.36))


def test_unreachable_targets_are_clipped_and_flagged():
    dim = 16
    basis = geometry_basis(dim, seed=1)
    a = _sample(100, dim, basis, 0, shift=2.0)  # a wide shared mean: own cone far above 0.1
    b = _sample(100, dim, basis, 1)
    geometry = fit_geometry(a.numpy(), b.numpy(), cone_first=0.1, cone_second=0.2, gap=5.0)
    assert geometry.reached["cone_first"] is False and geometry.r_first == 0.0
    assert geometry.reached["modality_gap"] is False and -1.0 <= geometry.cos_theta <= 1.0
    with pytest.raises(ValueError, match="cone_first"):
        fit_geometry(a.numpy(), b.numpy(), cone_first=1.0, cone_second=0.2, gap=0.5)


def test_training_temperature_undoes_the_offsets_scale():
    # unit embeddings with cone ~0: N_m = 1/sqrt(1 - cone_m)
    assert training_temperature(0.01, 0.468, 0.468) == pytest.approx(0.01 / 0.532)
    assert training_temperature(0.01, 0.0, 0.0) == pytest.approx(0.01)


def test_shaped_demo_space_round_trips_and_old_checkpoints_load_unshaped(tmp_path):
    from cmcr.encoders.demo import DemoSpace, DemoSpaceModel

    model = DemoSpaceModel("clip", 16, ["red", "drum"])
    basis = geometry_basis(16, seed=0)
    model.set_geometry(basis, Geometry(0.8, 0.5, 0.2, {}))
    space = DemoSpace(model)
    ids = [space.load("text", "a red drum"), space.load("text", "red")]
    before = space.encode("text", ids)
    path = tmp_path / "clip.pt"
    torch.save(space.checkpoint(), path)
    again = DemoSpace.from_checkpoint(path)
    assert again.model.shaped and torch.allclose(again.encode("text", ids), before)
    # the text rows carry the text offset: their component along it is r / sqrt(1 + r²)
    c_text = offset_vectors(basis, Geometry(0.8, 0.5, 0.2, {}))[1]
    along = before @ (c_text / c_text.norm())
    assert torch.allclose(along, torch.full((2,), 0.5 / math.sqrt(1.25)), atol=1e-5)
    payload = torch.load(path, weights_only=True)
    for key in ("geometry_basis", "geometry_offsets"):
        del payload["state"][key]
    torch.save(payload, path)
    assert not DemoSpace.from_checkpoint(path).model.shaped
