"""The MCR graph's ``extend`` mode (Ex-MCR): decoupled projector, modality-centric tuples, dense losses,
base-outwards training, graph checkpoints, and the graph benchmark family's scoring."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from conftest import CLIP_CLAP, CLIP_ULIP
from cmcr.config import ConfigError, Connection, ConnectionConfig, LossConfig, MemoryConfig, \
    NoiseConfig, ProjectorConfig, TrainConfig
from cmcr.exmcr import (ROLES, ExtendConfig, ExtendProjector, Identity, dense_alignment, extend_loss,
                        modality_centric_data, stack_centres)
from cmcr.graph import (Graph, check_graph, extend_tuples, load_unit,
                        train_extend, train_joint, ExtendLinkData)
from conftest import unit


def info_nce64(x, z, tau):
    """Eq. 1 written out in float64 with explicit log-sum-exp (independent of cmcr.loss)."""
    x, z = F.normalize(x.double(), dim=-1), F.normalize(z.double(), dim=-1)
    s = (x @ z.T / tau).numpy()
    n = s.shape[0]
    rows = [-(s[i, i] - np.log(np.exp(s[i] - s[i].max()).sum()) - s[i].max()) for i in range(n)]
    cols = [-(s[i, i] - np.log(np.exp(s[:, i] - s[:, i].max()).sum()) - s[:, i].max()) for i in range(n)]
    return 0.5 * (np.mean(rows) + np.mean(cols))


def test_decoupled_projector_starts_as_the_identity_then_two_mlp_blocks():
    p = ExtendProjector(16, 32, 16)
    x = unit(5, 16, seed=0)
    assert torch.equal(p.intra(x), x + p.linear.bias)  # identity weights (bias: PyTorch's default init)
    assert torch.equal(p.linear.weight, torch.eye(16))
    linears = [m for m in p.mlp if isinstance(m, torch.nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(32, 16), (16, 32)] * 2
    expected = (16 * 16 + 16) + 2 * ((16 * 32 + 32) + 2 * 32 + (32 * 16 + 16) + 2 * 16)
    assert sum(q.numel() for q in p.parameters()) == expected
    p.eval()
    assert torch.allclose(p.embed(x).norm(dim=-1), torch.ones(5))
    assert ExtendProjector(16, 32, 24).linear.weight.shape == (24, 16)  # another base width: a plain linear map
    assert torch.allclose(Identity(16).embed(2 * x), x, atol=1e-7) and not list(Identity(16).parameters())
    with pytest.raises(Exception, match="expects N×16"):
        p(unit(3, 8, seed=1))


def naive(q, k, tau, v=None):
    w = torch.softmax(q.double() @ k.double().T / tau, 1)
    return w @ (k if v is None else v).double()


def test_every_modality_is_a_query_and_the_weights_cross_through_the_shared_items():
    """Each centre's four roles against the float64 formulas of cmcr.exmcr's docstring (τ1 = 0.05)."""
    s_clap, s_clip = unit(40, 8, seed=1), unit(40, 6, seed=2)  # one shared set, two spaces of different widths
    m_clap, m_clip = unit(30, 8, seed=3), unit(25, 6, seed=4)
    mem = MemoryConfig(temperature=0.05)
    aggregates = {"clap": naive(s_clap, m_clap, 0.05).float(), "clip": naive(s_clip, m_clip, 0.05).float()}
    out = modality_centric_data(CLIP_CLAP, "clap", {"clap": s_clap, "clip": s_clip}, {"clap": m_clap, "clip": m_clip},
                                aggregates, mem)
    assert list(out) == ["shared", "leaf", "parent"] and all(list(t) == list(ROLES) for t in out.values())
    assert torch.equal(out["shared"]["leaf_shared"], s_clap) and torch.equal(out["shared"]["parent_memory"], aggregates["clip"])
    leaf = out["leaf"]  # queries: the leaf's memory (sounds)
    assert torch.equal(leaf["leaf_memory"], m_clap)
    assert torch.allclose(leaf["leaf_shared"].double(), naive(m_clap, s_clap, 0.05), atol=1e-5)
    to_clip = naive(m_clap, s_clap, 0.05, s_clip)  # the sounds' text weights, over the same texts in CLIP
    assert torch.allclose(leaf["parent_shared"].double(), to_clip, atol=1e-5)
    assert torch.allclose(leaf["parent_memory"].double(), naive(F.normalize(to_clip, dim=-1), m_clip.double(), 0.05), atol=1e-5)
    parent = out["parent"]  # queries: the parent's memory (images)
    to_clap = naive(m_clip, s_clip, 0.05, s_clap)
    assert torch.equal(parent["parent_memory"], m_clip)
    assert torch.allclose(parent["leaf_shared"].double(), to_clap, atol=1e-5)
    assert torch.allclose(parent["parent_shared"].double(), naive(m_clip, s_clip, 0.05), atol=1e-5)
    assert torch.allclose(parent["leaf_memory"].double(), naive(F.normalize(to_clap, dim=-1), m_clap.double(), 0.05), atol=1e-5)
    stacked = stack_centres(out)
    assert stacked["leaf_memory"].shape == (40 + 30 + 25, 8) and stacked["parent_shared"].shape == (95, 6)
    only = modality_centric_data(CLIP_CLAP, "clap", {"clap": s_clap, "clip": s_clip}, {"clap": m_clap, "clip": m_clip},
                                 aggregates, mem, ("leaf",))
    assert list(only) == ["leaf"]
    with pytest.raises(Exception, match="row k of both must be the same item"):
        modality_centric_data(CLIP_CLAP, "clap", {"clap": s_clap, "clip": s_clip[:39]}, {"clap": m_clap, "clip": m_clip},
                              aggregates, mem)


def test_dense_alignment_is_four_info_nce_terms_at_their_temperatures():
    x = {r: unit(12, 8, seed=i) for i, r in enumerate(ROLES)}
    config = ConnectionConfig(connection=CLIP_CLAP, loss=LossConfig(shared_temperature=0.07, pseudo_temperature=0.2))
    parts = dense_alignment(x["leaf_memory"], x["leaf_shared"], x["parent_shared"], x["parent_memory"], config)
    want = {"shared_pair": info_nce64(x["leaf_shared"], x["parent_shared"], 0.07),
            "pseudo_pair": info_nce64(x["leaf_memory"], x["parent_memory"], 0.2),
            "memory_shared": info_nce64(x["leaf_memory"], x["parent_shared"], 0.2),
            "shared_memory": info_nce64(x["leaf_shared"], x["parent_memory"], 0.2)}
    assert set(parts) == set(want)
    for k, v in want.items():
        assert math.isclose(float(parts[k]), v, rel_tol=1e-5), k
    sparse = dense_alignment(x["leaf_memory"], x["leaf_shared"], x["parent_shared"], x["parent_memory"], config, dense=False)
    assert set(sparse) == {"shared_pair", "pseudo_pair"}


def test_extend_loss_adds_lambda_times_eq9_on_the_linear_layer_for_an_intra_space():
    torch.manual_seed(0)
    p = ExtendProjector(8, 16, 8)
    batch = {r: unit(10, 8, seed=10 + i) for i, r in enumerate(ROLES)}
    config = ConnectionConfig(connection=CLIP_CLAP, noise=NoiseConfig(enabled=False, renorm=False),
                              loss=LossConfig(lambda_intra=0.3, intra_spaces=("clap",)))
    parts = extend_loss(p, "clap", batch, batch, config, dense=True)
    intra = 0.5 * (F.normalize(p.intra(batch["leaf_shared"]), dim=-1)
                   - F.normalize(p.intra(batch["leaf_memory"]), dim=-1)).norm(dim=-1).mean()
    assert math.isclose(float(parts["intra"].detach()), float(intra.detach()), rel_tol=1e-5)
    inter = sum(float(parts[k].detach()) for k in ("shared_pair", "pseudo_pair", "memory_shared", "shared_memory"))
    assert math.isclose(float(parts["loss"].detach()), inter + 0.3 * float(intra.detach()), rel_tol=1e-5)
    off = extend_loss(p, "clap", batch, batch, dataclasses.replace(config, loss=LossConfig(intra_spaces=("clip",))), True)
    assert "intra" not in off


def small_links():
    """Two links' data into a CLIP-like base of width 6 (CLAP-like 8, ULIP-like 5), 60 shared items each."""
    def link(leaf_width, seed):
        return ExtendLinkData({"clip": unit(60, 6, seed=seed), "leaf": unit(60, leaf_width, seed=seed + 1)},
                              {"clip": unit(40, 6, seed=seed + 2), "leaf": unit(50, leaf_width, seed=seed + 3)},
                              {"clip": unit(60, 6, seed=seed + 4), "leaf": unit(60, leaf_width, seed=seed + 5)})
    a, b = link(8, 0), link(5, 10)
    clap = ExtendLinkData({"clip": a.shared["clip"], "clap": a.shared["leaf"]}, {"clip": a.memory_sets["clip"], "clap": a.memory_sets["leaf"]},
                          {"clip": a.aggregates["clip"], "clap": a.aggregates["leaf"]})
    ulip = ExtendLinkData({"clip": b.shared["clip"], "ulip": b.shared["leaf"]}, {"clip": b.memory_sets["clip"], "ulip": b.memory_sets["leaf"]},
                          {"clip": b.aggregates["clip"], "ulip": b.aggregates["leaf"]})
    config = ConnectionConfig(connection=CLIP_CLAP, projector=ProjectorConfig(hidden_dim=16, out_dim=6),
                              train=TrainConfig(epochs=3, batch_size=32, lr=0.01))
    configs = {"clip_clap": config, "clip_ulip": dataclasses.replace(config, connection=CLIP_ULIP,
                                                                     loss=LossConfig(intra_spaces=("ulip",)))}
    graph = Graph("ex", "extend", ("clip", "clap", "ulip"), (CLIP_CLAP, CLIP_ULIP), "clip")
    return graph, {"clip_clap": clap, "clip_ulip": ulip}, configs


def test_extend_trains_the_leaves_into_the_untouched_base_and_seeds_do_not_depend_on_threads(tmp_path):
    graph, data, configs = small_links()
    tuples = extend_tuples(graph, data, configs)
    assert tuples["clap"]["leaf_memory"].shape == (60 + 50 + 40, 8) and tuples["ulip"]["parent_shared"].shape == (60 + 50 + 40, 6)
    together = train_extend(graph, tuples, configs, seeds=[0, 1], workers=2, progress=False)
    alone = train_extend(graph, tuples, configs, seeds=[1], workers=1, progress=False)
    for leaf in ("clap", "ulip"):
        a, b = together[1].projectors[leaf].state_dict(), alone[1].projectors[leaf].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(together[0].projectors["clap"].linear.weight, together[1].projectors["clap"].linear.weight)
    result = together[0]
    assert result.projectors["clip"].kind == "identity" and not list(result.projectors["clip"].parameters())
    x = unit(4, 6, seed=99)
    assert torch.allclose(result.projectors["clip"].embed(x), x, atol=1e-7)  # the base is kept as it is
    first, last = result.history["clap"][0]["loss"], result.history["clap"][-1]["loss"]
    assert last < first and {"memory_shared", "shared_memory", "intra"} <= set(result.history["clap"][-1])
    assert "intra" in result.history["ulip"][-1]
    path = tmp_path / "g.pt"
    torch.save(result.checkpoint(), path)
    loaded = load_unit(path)
    assert loaded.graph == graph and loaded.extend == ExtendConfig().to_dict()
    for space, width in (("clap", 8), ("ulip", 5), ("clip", 6)):
        x = unit(7, width, seed=3)
        assert torch.equal(loaded.projectors[space].embed(x), result.projectors[space].eval().embed(x))
    torch.save({"format": "cmcr.projectors/1"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt: a cmcr.projectors/1 checkpoint without a readable config"):
        load_unit(tmp_path / "bad.pt")
    torch.save({"format": "something/1"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: not a cmcr trained unit checkpoint"):
        load_unit(tmp_path / "other.pt")


def test_a_leaf_two_links_from_the_base_trains_against_its_parents_projection():
    """A chain clip ← clap ← x: x's targets are clap's trained (frozen) projection, not clap's raw space."""
    graph, data, configs = small_links()
    link = Connection("clap_x", ("clap", "x"), "audio", {"clap": "text", "x": "touch"})
    d = data["clip_clap"]
    data["clap_x"] = ExtendLinkData({"clap": unit(50, 8, seed=40), "x": unit(50, 4, seed=41)},
                                    {"clap": d.shared["clap"], "x": unit(30, 4, seed=42)},
                                    {"clap": unit(50, 8, seed=43), "x": unit(50, 4, seed=44)})
    configs["clap_x"] = dataclasses.replace(configs["clip_clap"], connection=link, loss=LossConfig(intra_spaces=("x",)))
    chain = Graph("chain", "extend", ("clip", "clap", "x"), (CLIP_CLAP, link), "clip")
    tuples = extend_tuples(chain, data, configs)
    (result,) = train_extend(chain, tuples, configs, seeds=[0], progress=False).values()
    assert result.projectors["x"].out_dim == 6  # lands in the base's width through clap's projector
    # x's targets were clap's projection of its tuples: re-running x's training against that gives the same weights
    from cmcr.exmcr import train_leaf

    again = train_leaf("x", tuples["x"], result.projectors["clap"].eval().embed, configs["clap_x"], progress=False)
    assert all(torch.equal(a, b) for a, b in zip(again.projectors["x"].state_dict().values(),
                                                 result.projectors["x"].state_dict().values()))


def test_joint_and_paired_results_round_trip_through_the_graph_checkpoint(tmp_path):
    from cmcr.graph import train_paired
    from cmcr.train import ConnectionData

    joint = Graph("j", "joint", ("clip", "clap"), (CLIP_CLAP,))
    config = ConnectionConfig(connection=CLIP_CLAP, projector=ProjectorConfig(hidden_dim=16, out_dim=8), train=TrainConfig(epochs=2, batch_size=16))
    data = {"clip_clap": ConnectionData({"clip": unit(40, 6, seed=1), "clap": unit(40, 7, seed=2)},
                                        {"clip": unit(40, 6, seed=3), "clap": unit(40, 7, seed=4)})}
    result = train_joint(joint, data, {"clip_clap": config}, progress=False)
    pairs = Connection("p", ("clap", "ulip"), "true pairs", {"clap": "audio", "ulip": "points"})
    paired_config = dataclasses.replace(config, connection=pairs, loss=LossConfig(intra_spaces=(), shared_pair=False))
    paired_graph = Graph("p", "paired", ("clap", "ulip"), (), None, {"dataset": "demo", "modalities": {"clap": "audio", "ulip": "points"}})
    paired = train_paired(paired_graph, {"clap": unit(30, 7, seed=5), "ulip": unit(30, 5, seed=6)}, paired_config,
                          progress=False)
    for r in (result, paired):
        torch.save(r.checkpoint(), tmp_path / "c.pt")
        loaded = load_unit(tmp_path / "c.pt")
        assert loaded.graph == r.graph and set(loaded.history) == {r.graph.mode}
        for space, m in r.projectors.items():
            x = unit(5, m.in_dim, seed=8)
            assert torch.equal(loaded.projectors[space].embed(x), m.eval().embed(x))
    assert paired_graph.modalities() == {"audio": "clap", "points": "ulip"}


@pytest.mark.parametrize("entry,message", [
    ({"mode": "paired", "spaces": ["clap", "ulip", "clip"], "pairs": {"dataset": "demo", "modalities": {}}},
     r"^graphs.g.spaces: mode paired trains two spaces on true pairs, got 3"),
    ({"mode": "paired", "spaces": ["clap", "ulip"], "links": ["clip_clap"], "pairs": {}},
     r"^graphs.g: mode paired trains on true pairs, not on links"),
    ({"mode": "paired", "spaces": ["clap", "ulip"], "pairs": {"dataset": "demo", "modalities": {"clap": "audio"}}},
     r"^graphs.g.pairs must be \{dataset: <name>, modalities: \{clap: <modality>, ulip: <modality>\}\}"),
    ({"mode": "paired", "spaces": ["clap", "ulip"], "pairs": {"dataset": "demo", "modalities": {"clap": "audio", "ulip": "text"}}},
     r"^graphs.g.pairs.modalities.ulip: ulip embeds \['points', 'image'\], not 'text'"),
    ({"mode": "joint", "spaces": ["clip", "clap"], "links": ["clip_clap"], "pairs": {}},
     r"^graphs.g.pairs is for mode paired"),
])
def test_paired_graph_definitions_are_checked(entry, message):
    from conftest import PAPER_LINKS as CONNECTIONS

    with pytest.raises(ConfigError, match=message):
        check_graph("g", entry, CONNECTIONS)


def test_extend_switches_are_checked():
    assert ExtendConfig.from_params({}) == ExtendConfig()
    assert ExtendConfig.from_params({"extend": {"dense": False, "centres": ["shared"]}}).centres == ("shared",)
    with pytest.raises(ConfigError, match=r"extend: unknown key\(s\) \['densa'\]"):
        ExtendConfig.from_params({"extend": {"densa": True}})
    with pytest.raises(ConfigError, match="extend.centres must be a non-empty list of shared, leaf, parent"):
        ExtendConfig.from_params({"extend": {"centres": ["audio"]}})


# ------------------------------------------------------------------------------------------ graph benchmark

def write_set(folder, name, matrix, table):
    from cmcr.artifacts import save_embedding_set

    folder.mkdir(parents=True, exist_ok=True)
    save_embedding_set(folder, name, np.asarray(matrix, dtype=np.float32), table)


def test_graph_tasks_score_against_their_exact_ceiling_and_skip_what_a_model_cannot_embed(tmp_path):
    """audio↔3D on 12 pairs of 3 concepts (4 each): the exact ceiling (a perfect concept-level ranker, ties in a
    random order) is the closed form H(4)/4; a model embedding every item exactly at its concept ties each pair
    with its 3 class mates, and ties count against it (rank 4: mAP 25); chance is the analytic expectation."""
    from cmcr.evaluation import ceiling, load_task, random_baseline, score_model, unusable

    concept = np.repeat([0, 1, 2], 4)
    centres = F.normalize(torch.randn(3, 5, generator=torch.Generator().manual_seed(0)), dim=-1)
    table = pd.DataFrame({"pair_id": np.arange(12), "concept": concept, "size": np.arange(12) % 3, "condition": 0})
    write_set(tmp_path / "clap", "graph_audio@d", centres[concept], table)
    write_set(tmp_path / "ulip", "graph_points@d", centres[concept].flip(0).numpy(),
              table.iloc[::-1][["pair_id", "concept"]].reset_index(drop=True))  # another row order: joined by pair_id
    data, coverage = load_task(tmp_path, "audio_points", "d")
    assert coverage == {"scored": 12, "listed": 12} and data.directions() == ("A2P", "P2A")
    best = ceiling(data)
    h4 = 1 + 1 / 2 + 1 / 3 + 1 / 4
    assert math.isclose(best["A2P"]["mAP"], 100 * h4 / 4, rel_tol=1e-9)
    identity = {s: (lambda x, modality=None: F.normalize(x, dim=-1)) for s in ("clap", "ulip")}
    scores, items = score_model(data, identity, "exact")
    assert scores["A2P"]["mAP"] == pytest.approx(25.0) and scores["P2A"]["R@5"] == pytest.approx(100.0)
    assert len(items) == 24 and set(items["direction"]) == {"A2P", "P2A"}
    assert random_baseline(data)["A2P"]["mAP"] == pytest.approx(100 * sum(1 / r for r in range(1, 13)) / 12)
    assert unusable(data, {"clap": identity["clap"]}) == "embeds no ulip (points)"
    assert unusable(data, identity, {"audio": "clap", "points": "clip"}) == "embeds points from clip, the set is ulip's"
    assert unusable(data, identity, {"audio": "clap", "points": "ulip"}) is None
    narrow = {"clap": identity["clap"], "ulip": lambda x, modality=None: F.normalize(x[:, :3], dim=-1)}
    assert unusable(data, narrow) == "embeds to different widths {'clap': 5, 'ulip': 3}"
    from cmcr.artifacts import ArtifactError

    with pytest.raises((ArtifactError, FileNotFoundError), match="graph_text@d"):
        load_task(tmp_path, "audio_text", "d")


def test_each_seeds_checkpoint_records_its_own_seed():
    graph, data, configs = small_links()
    results = train_extend(graph, extend_tuples(graph, data, configs), configs, seeds=[3, 5], progress=False)
    assert {s: r.configs["clip_clap"].train.seed for s, r in results.items()} == {3: 3, 5: 5}
