"""The MCR graph (issue 22, first part): graphs and links declared as data, checked; joint training of any
number of spaces, which for two spaces and one link is exactly C-MCR's training."""

import dataclasses

import pytest
import torch

from cmcr.config import ConfigError, ConnectionConfig, LossConfig, ProjectorConfig, TrainConfig
from conftest import PAPER_LINKS as CONNECTIONS
from cmcr.graph import Graph, check_graph, graphs_of, space_modalities, train_connection, train_joint
from cmcr.train import ConnectionData
from conftest import ROOT_DIR, toy_world


def params_with(graphs, connections=None):
    import yaml

    p = yaml.safe_load((ROOT_DIR / "params.yaml").read_text())
    p["graphs"] = graphs
    if connections:
        p["connections"] = dict(p.get("connections") or {}) | connections
    return p


def test_space_modalities_come_from_the_encoder_classes():
    assert space_modalities("clip") == ("image", "text") and space_modalities("ulip") == ("points", "image")
    with pytest.raises(ConfigError, match="unknown space 'imagebind'"):
        space_modalities("imagebind")


@pytest.mark.parametrize("graph,connections,message", [
    ({"mode": "joint", "spaces": ["clip", "clap", "imagebind"], "links": ["clip_clap"]}, None,
     r"^graphs.g.spaces: unknown space 'imagebind'"),
    ({"mode": "joint", "spaces": ["clap", "ulip"], "links": ["clap_ulip"]},
     {"clap_ulip": {"link": {"spaces": ["clap", "ulip"], "shared": "text", "memory": {"clap": "audio", "ulip": "points"}}}},
     r"^connections.clap_ulip.link: spaces \['clap', 'ulip'\] share no 'text': ulip embeds \['points', 'image'\]"),
    ({"mode": "extend", "base": ["clip", "clap"], "spaces": ["clip", "clap"], "links": ["clip_clap"]}, None,
     r"^graphs.g.base: extend mode has one base space, got 2"),
    ({"mode": "extend", "base": "clip", "spaces": ["clip", "clap", "ulip"], "links": ["clip_clap", "clip_ulip", "clap_ulip"]},
     {"clap_ulip": {"link": {"spaces": ["clap", "ulip"], "shared": "audio", "memory": {"clap": "text", "ulip": "points"}}}},
     r"^connections.clap_ulip.link: spaces \['clap', 'ulip'\] share no 'audio'"),  # the link itself is refused first
    ({"mode": "extend", "base": "clip", "spaces": ["clip", "clap", "ulip"], "links": ["clip_clap"]}, None,
     r"^graphs.g: leaf space\(s\) \['ulip'\] have no path to the base 'clip'"),
    ({"mode": "joint", "spaces": ["clip", "clap", "ulip"], "links": ["clip_clap"]}, None,
     r"^graphs.g: space\(s\) \['ulip'\] are not linked"),
    ({"mode": "joint", "spaces": ["clip", "clap"], "links": ["clip_audio"]}, None,
     r"^graphs.g.links: unknown connection 'clip_audio'"),
    ({"mode": "fused", "spaces": ["clip", "clap"], "links": ["clip_clap"]}, None, r"^graphs.g.mode must be one of joint, extend"),
])
def test_bad_graphs_are_refused_with_one_line_naming_the_key(graph, connections, message):
    from cmcr.validation import check_params

    with pytest.raises(ConfigError, match=message) as info:
        check_params(params_with({"g": graph}, connections))
    assert "\n" not in str(info.value)


def test_a_cycle_in_extend_mode_is_refused():
    """Two links between the same two spaces: the leaf has two paths to the base."""
    from cmcr.config import Connection

    conns = {"a": Connection("a", ("clip", "ulip"), "image", {"clip": "text", "ulip": "points"}),
             "b": Connection("b", ("clip", "ulip"), "image", {"clip": "text", "ulip": "points"})}
    with pytest.raises(ConfigError, match=r"^graphs.g.links: extend mode needs a tree .* make a cycle"):
        check_graph("g", {"mode": "extend", "base": "clip", "spaces": ["clip", "ulip"], "links": ["a", "b"]}, conns)


def test_the_paper_graphs_are_valid_and_list_every_modality():
    graphs = graphs_of(params_with({
        "joint3": {"mode": "joint", "spaces": ["clip", "clap", "ulip"], "links": ["clip_clap", "clip_ulip"]},
        "extend3": {"mode": "extend", "base": "clip", "spaces": ["clip", "clap", "ulip"], "links": ["clip_clap", "clip_ulip"]}}))
    assert graphs["joint3"].modalities() == {"image": "clip", "text": "clip", "audio": "clap", "points": "ulip"}
    assert graphs["extend3"].toward_base() == {"clap": ("clip", CONNECTIONS["clip_clap"]),
                                               "ulip": ("clip", CONNECTIONS["clip_ulip"])}


def small_config(connection, **train):
    conn = CONNECTIONS[connection]
    return ConnectionConfig(connection=conn, loss=LossConfig(intra_spaces=conn.spaces),
                            projector=ProjectorConfig(in_dims={}, hidden_dim=48, out_dim=24),
                            train=TrainConfig(epochs=3, batch_size=64, lr=2e-3, seed=4, device="cpu") if not train
                            else TrainConfig(**train))


def test_a_two_space_graph_trains_exactly_what_the_connection_trains():
    """Joint mode is C-MCR generalised: one link, two spaces → the same bytes and the same losses as the paper's
    per-connection step written out here (Eq. 3 noise on both roles, Eq. 4 projection, Eq. 10 over the one
    connection) in the shared optimisation loop. A variant and ``train_connection`` train this way."""
    from cmcr.enhance import semantic_completion
    from cmcr.loss import total_loss
    from cmcr.train import fit_streams

    data, _ = toy_world(n_train=500, n_memory=300, n_eval=10, dim=16)
    config = small_config("clip_clap")
    run = data.resolve_dims(config)
    spaces = ("clip", "clap")

    def step(projectors, tensors, idx, generator):
        i = idx[""]
        shared = {s: projectors[s](semantic_completion(tensors[f"shared/{s}"][i], run.noise, generator)) for s in spaces}
        memory = {s: projectors[s](semantic_completion(tensors[f"memory/{s}"][i], run.noise, generator)) for s in spaces}
        return total_loss(shared, memory, spaces, run.loss)

    inputs = {f"shared/{s}": data.shared[s] for s in spaces} | {f"memory/{s}": data.memory[s] for s in spaces}
    alone = fit_streams(inputs, {"": 500}, run, spaces, step, progress=False, label="by hand")
    graph = Graph("g", "joint", spaces, (CONNECTIONS["clip_clap"],))
    joint = train_joint(graph, {"clip_clap": data}, {"clip_clap": config}, progress=False)
    assert joint.history == {"joint": alone.history}
    assert train_connection(data, config, progress=False).history == joint.history  # the same training
    for space in spaces:
        for key, value in alone.projectors[space].state_dict().items():
            assert torch.equal(joint.projectors[space].state_dict()[key], value), (space, key)


def toy_link(connection, seed, n=400):
    """Toy data for a link: ``toy_world`` with its spaces renamed to the link's (shared, memory per space)."""
    data, _ = toy_world(n_train=n, n_memory=200, n_eval=10, dim=16, seed=seed)
    first, second = CONNECTIONS[connection].spaces if connection in CONNECTIONS else connection
    rename = {"clip": first, "clap": second}
    return ConnectionData(shared={rename[s]: x for s, x in data.shared.items()},
                          memory={rename[s]: x for s, x in data.memory.items()})


def test_three_spaces_train_together_and_share_the_hub_projector():
    """clip–clap and clip–ulip summed: one clip projector for both links, every link's loss falls, and the
    history keeps each link's parts. Links of different sizes: the first sets the epoch, the other wraps."""
    graph = graphs_of(params_with({"j": {"mode": "joint", "spaces": ["clip", "clap", "ulip"],
                                          "links": ["clip_clap", "clip_ulip"]}}))["j"]
    data = {"clip_clap": toy_link("clip_clap", 0, 400), "clip_ulip": toy_link("clip_ulip", 1, 250)}
    configs = {"clip_clap": small_config("clip_clap", epochs=4, batch_size=64, lr=2e-3, seed=0, device="cpu"),
               "clip_ulip": dataclasses.replace(small_config("clip_ulip"), loss=LossConfig(
                   intra_spaces=("clip", "ulip"), lambda_intra=0.4))}
    result = train_joint(graph, data, configs, progress=False)
    assert set(result.projectors) == {"clip", "clap", "ulip"}
    history = result.history["joint"]
    first, last = history[0], history[-1]
    assert {"clip_clap/loss", "clip_ulip/loss", "clip_ulip/intra", "clip_clap/shared_pair"} <= set(first)
    assert last["clip_clap/loss"] < first["clip_clap/loss"] and last["clip_ulip/loss"] < first["clip_ulip/loss"]
    assert last["loss"] == pytest.approx(last["clip_clap/loss"] + last["clip_ulip/loss"], rel=1e-6)
    assert len(history) == 4  # 400 items at batch 64: 7 steps per epoch; the 250-item link wraps (4 batches)


def test_a_fourth_space_is_registered_and_linked_from_params_alone():
    """A user's own space: an encoder class registered under a name (its modalities stated), a link declared
    in params, a graph over it — no other code."""
    from cmcr.encoders.base import EncoderSpace, register

    @register("toy_touch")
    class ToyTouchSpace(EncoderSpace):  # noqa: F811 — a user's encoder (tactile signals + images)
        modalities = ("touch", "image")

        def load(self, modality, item):
            raise NotImplementedError

        def encode_batch(self, modality, batch):
            raise NotImplementedError

    p = params_with({"with_touch": {"mode": "joint", "spaces": ["clip", "clap", "toy_touch"],
                                    "links": ["clip_clap", "clip_touch"]}},
                    {"clip_touch": {"link": {"spaces": ["clip", "toy_touch"], "shared": "image",
                                             "memory": {"clip": "text", "toy_touch": "touch"}},
                                    "noise": {"var": 0.002}, "loss": {"intra_spaces": ["clip", "toy_touch"]}}})
    from cmcr.config import connection_config_from_params
    from cmcr.validation import check_params

    graph = graphs_of(p)["with_touch"]  # the graph and the declared link are checked (spaces, modalities, config)
    # the pipeline embeds the spaces params lists: validate names what to add, in one line
    with pytest.raises(ConfigError, match=r"^graphs.with_touch.spaces: \['toy_touch'\] not in spaces \(clip, clap, ulip\)"):
        check_params(p)
    # listed, it has no stand-in in the demo world: run it in setup paper (its encoder) or byo (its embeddings)
    with pytest.raises(ConfigError, match=r"^spaces: \['toy_touch'\] has no demo stand-in"):
        check_params({**p, "spaces": ["clip", "clap", "ulip", "toy_touch"]})
    assert graph.modalities()["touch"] == "toy_touch"
    touch = connection_config_from_params(p, "clip_touch")
    assert touch.noise.var == 0.002 and touch.connection.shared_modality == "image"
    touch = dataclasses.replace(touch, projector=ProjectorConfig(in_dims={}, hidden_dim=48, out_dim=24),
                                train=TrainConfig(epochs=2, batch_size=64, lr=2e-3, seed=0, device="cpu"))
    av = dataclasses.replace(connection_config_from_params(p, "clip_clap"), projector=touch.projector, train=touch.train)
    data = {"clip_clap": toy_link("clip_clap", 0, 300), "clip_touch": toy_link(("clip", "toy_touch"), 2, 300)}
    result = train_joint(graph, data, {"clip_clap": av, "clip_touch": touch}, progress=False)
    assert set(result.projectors) == {"clip", "clap", "toy_touch"}
    # the checkpoint carries the declared link, so it loads without the params that declared it
    payload = result.checkpoint()
    assert [link["name"] for link in payload["graph"]["links"]] == ["clip_clap", "clip_touch"]
    assert payload["configs"]["clip_touch"]["connection"] == {"name": "clip_touch", "spaces": ["clip", "toy_touch"],
                                                               "shared_modality": "image",
                                                               "memory_modality": {"clip": "text", "toy_touch": "touch"}}


def test_a_declared_links_config_is_checked_by_validate():
    from cmcr.validation import check_params

    p = params_with({}, {"clip_ulip2": {"link": {"spaces": ["clip", "ulip"], "shared": "image",
                                                 "memory": {"clip": "text", "ulip": "points"}}}})
    with pytest.raises(ConfigError, match=r"^connections.clip_ulip2: loss.intra_spaces names \['clap'\]"):
        check_params(p)  # the base loss group's [clip, clap] does not fit this link: say which


def test_a_declared_link_between_pipeline_spaces_gets_its_own_eq2_folder_and_passes_validate():
    """A second CLIP–CLAP link with its own τ1 and σ²: validate accepts a graph over it; the aggregate stage computes
    its Eq. 2 (the aggregate plan) into its own folder, so the built-in link's files of the same name stay as they are."""
    from pathlib import Path

    from cmcr.graph import graphs_of
    from cmcr.plan import aggregate_folder, aggregate_plan
    from cmcr.validation import check_params

    p = params_with({"joint": {"mode": "joint", "spaces": ["clip", "clap", "ulip"], "links": ["clip_clap_t2", "clip_ulip"]},
                     "extend": {"mode": "extend", "base": "clip", "spaces": ["clip", "clap"], "links": ["clip_clap_t2"]}},
                    {"clip_clap_t2": {"link": {"spaces": ["clip", "clap"], "shared": "text",
                                               "memory": {"clip": "image", "clap": "audio"}},
                                      "memory": {"temperature": 0.02}, "noise": {"var": 0.002}}})
    jobs = aggregate_plan(p, check_params(p), graphs_of(p))
    assert jobs["clip_clap_t2/softmax"]["memory"]["temperature"] == 0.02
    assert jobs["clip_clap_t2/softmax"]["link"] == {"name": "clip_clap_t2", "spaces": ["clip", "clap"], "shared": "text",
                                                    "memory": {"clip": "image", "clap": "audio"}}
    assert aggregate_folder("data/aggregated", "clip_clap_t2", "softmax") == Path("data/aggregated/clip_clap_t2/softmax")


def test_graph_training_sits_between_the_base_groups_and_a_links_own_and_never_reaches_a_variant():
    """Issue 30: params' ``graph_training`` (τ2 = τ3 = 0.05, per-modality BatchNorm statistics) is what a link trains
    at inside a graph; a link's own ``connections.<link>`` setting wins over it; the variants keep the paper's
    1/100; ``graph_training: {}`` gives the graph's links the paper's settings back."""
    from cmcr.config import connection_config_from_params
    from cmcr.graph import graph_config

    p = params_with({"joint": {"mode": "joint", "spaces": ["clip", "clap", "ulip"], "links": ["clip_clap", "clip_ulip"]},
                     "pairs": {"mode": "paired", "spaces": ["clap", "ulip"],
                               "pairs": {"dataset": "demo", "modalities": {"clap": "audio", "ulip": "points"}}}})
    p["graph_training"] = {"loss": {"shared_temperature": 0.05, "pseudo_temperature": 0.05},
                           "projector": {"norm_stats": "modality"}}
    p["connections"]["clip_ulip"]["loss"]["pseudo_temperature"] = 0.02
    graphs = graphs_of(p)
    joint = graph_config(p, graphs["joint"])
    assert (joint["clip_clap"].loss.shared_temperature, joint["clip_clap"].loss.pseudo_temperature) == (0.05, 0.05)
    assert (joint["clip_ulip"].loss.shared_temperature, joint["clip_ulip"].loss.pseudo_temperature) == (0.05, 0.02)
    assert joint["clip_ulip"].loss.lambda_intra == 0.4 and joint["clip_ulip"].noise.var == 0.002  # the link's own
    assert {c.projector.norm_stats for c in joint.values()} == {"modality"}
    assert graph_config(p, graphs["pairs"])["pairs"].loss.pseudo_temperature == 0.05  # the paired reference too
    variant = connection_config_from_params(p, "clip_clap")
    assert (variant.loss.shared_temperature, variant.projector.norm_stats) == (0.01, "shared")
    p["graph_training"] = {}
    paper = graph_config(p, graphs["joint"])
    assert (paper["clip_clap"].loss.shared_temperature, paper["clip_clap"].projector.norm_stats) == (0.01, "shared")
    own = connection_config_from_params(p, "clip_clap")
    assert (paper["clip_clap"].loss, paper["clip_clap"].projector, paper["clip_clap"].noise) == (own.loss, own.projector, own.noise)


def test_an_older_connection_checkpoint_loads_as_the_one_link_graph_it_is(tmp_path):
    """Issue 31, point 3: one checkpoint format (a connection is a one-link graph) and one loader; a connection
    checkpoint written by an older cmcr (format cmcr.projectors/1, written here by hand as it was) is converted on load
    — mode joint, or paired for the paired-data reference — and projects exactly as the projectors it holds."""
    from cmcr.artifacts import save_torch
    from cmcr.graph import CONNECTION_FORMAT, connection_unit, load_unit
    from cmcr.projector import build_projectors
    from conftest import CLIP_CLAP, unit

    config = ConnectionConfig(CLIP_CLAP, projector=ProjectorConfig(in_dims={"clip": 6, "clap": 5}, hidden_dim=12, out_dim=4))
    torch.manual_seed(0)
    projectors = build_projectors(config.projector, CLIP_CLAP.spaces)
    for module in projectors.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    projectors.eval()
    history = [{"epoch": 0, "loss": 1.5}]
    for objective, mode in (("cmcr", "joint"), ("paired", "paired")):
        old = {"format": CONNECTION_FORMAT, "objective": objective, "connection": "clip_clap", "config": config.to_dict(),
               "projectors": {s: m.state_dict() for s, m in projectors.items()}, "history": history}
        save_torch(tmp_path / f"{objective}.pt", old)
        loaded = load_unit(tmp_path / f"{objective}.pt")
        assert loaded.graph.mode == mode and loaded.graph.links == (CLIP_CLAP,) and loaded.graph.name == "clip_clap"
        assert loaded.configs == {"clip_clap": config} and loaded.history == {mode: history}
        for space, width in (("clip", 6), ("clap", 5)):
            x = unit(9, width, seed=width)
            assert torch.equal(loaded.projectors[space].embed(x), projectors[space].embed(x))  # 0 difference
        # and saved again, it is the one format, read back the same
        save_torch(tmp_path / "again.pt", loaded.checkpoint())
        again = load_unit(tmp_path / "again.pt")
        assert again.graph == loaded.graph and again.configs == loaded.configs
    new = connection_unit(projectors, config, "K", history=history)
    assert new.graph.owners("text") == ["clip", "clap"] and new.graph.owners("audio") == ["clap"]
    assert new.graph.label() == "the clip_clap connection (K)"
    # an old checkpoint whose states do not fit its config (clap's width stated 7, its weights 5 wide): one error
    # naming the file, not a traceback from load_state_dict
    wrong = dict(old, config=ConnectionConfig(CLIP_CLAP, projector=ProjectorConfig(
        in_dims={"clip": 6, "clap": 7}, hidden_dim=12, out_dim=4)).to_dict())
    save_torch(tmp_path / "wrong.pt", wrong)
    with pytest.raises(ValueError, match=r"wrong\.pt: a cmcr\.projectors/1 checkpoint without a readable config and "
                                         r"projectors \(RuntimeError"):
        load_unit(tmp_path / "wrong.pt")
