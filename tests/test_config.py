"""Config objects: the paper's values from params.yaml, per-connection overrides, early errors."""

from pathlib import Path

import pytest
import yaml

from cmcr.config import ConfigError, ConnectionConfig, LossConfig, TrainConfig, connection_config_from_params

PARAMS = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())


def test_params_carry_the_papers_values():
    av = connection_config_from_params(PARAMS, "clip_clap")
    assert (av.memory.temperature, av.loss.shared_temperature, av.loss.pseudo_temperature) == (0.01, 0.01, 0.01)
    assert (av.noise.var, av.loss.lambda_intra) == (0.004, 0.1)
    assert (av.train.epochs, av.train.batch_size, av.train.lr, av.train.lr_schedule) == (36, 10240, 1e-3, "cosine")
    assert av.loss.intra_spaces == ("clip", "clap")
    td = connection_config_from_params(PARAMS, "clip_ulip")
    assert (td.noise.var, td.loss.lambda_intra) == (0.002, 0.4)
    assert (td.train.epochs, td.train.batch_size, td.train.lr) == (24, 8192, 5e-3)
    assert td.connection.spaces == ("clip", "ulip") and td.loss.intra_spaces == ("clip", "ulip")
    assert td.projector.in_dims == {}  # read from the embeddings when training starts


def test_overriding_the_base_noise_leaves_the_3d_connection_alone():
    # a base value different from both connections' own, so a base-overrides-connection bug shows
    params = {**PARAMS, "noise": {**PARAMS["noise"], "var": 0.0123}}
    assert PARAMS["connections"]["clip_ulip"]["noise"]["var"] == 0.002
    assert connection_config_from_params(params, "clip_clap").noise.var == 0.0123
    assert connection_config_from_params(params, "clip_ulip").noise.var == 0.002  # its own value
    # and a key the 3D connection does not override follows the base
    params = {**PARAMS, "noise": {**PARAMS["noise"], "renorm": False}}
    assert connection_config_from_params(params, "clip_ulip").noise.renorm is False
    row_a = connection_config_from_params(PARAMS, "clip_clap", {"loss": {"intra_spaces": ["clip"]}})
    assert row_a.loss.intra_spaces == ("clip",)


def test_round_trip_through_plain_dict():
    config = connection_config_from_params(PARAMS, "clip_ulip")
    assert ConnectionConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("bad,match", [
    ({"loss": {"shared_temperature": 0}}, "tau2"),
    ({"loss": {"pseudo_temperature": -1}}, "tau3"),
    ({"memory": {"temperature": 0}}, "tau1"),
    ({"noise": {"var": -0.1}}, "variance"),
    ({"train": {"batch_size": 1}}, "batch_size"),
    ({"loss": {"intra_spaces": ["ulip"]}}, "not spaces of connection"),
    ({"loss": {"typo": 1}}, "unknown key"),
    ({"loss": {"shared_pair": False, "pseudo_pair": False, "intra_spaces": []}}, "nothing to train"),
    ({"lossy": {}}, "unknown group"),
])
def test_bad_values_fail_early_with_the_key_named(bad, match):
    with pytest.raises(ConfigError, match=match):
        connection_config_from_params(PARAMS, "clip_clap", bad)


def test_unknown_connection():
    with pytest.raises(ConfigError, match="unknown connection"):
        connection_config_from_params(PARAMS, "clap_ulip")
    with pytest.raises(ConfigError, match="intra_distance"):
        LossConfig(intra_distance="l1")
    with pytest.raises(ConfigError, match="lr"):
        TrainConfig(lr=0)


def test_pipeline_wiring_comes_from_the_connections():
    from cmcr.config import Connection, extraction_sets
    from conftest import CLIP_CLAP, CLIP_ULIP

    assert CLIP_CLAP.aggregate_jobs() == [("clip_image_from_text", "clip/text", "clip/image"),
                                          ("clap_audio_from_text", "clap/text", "clap/audio")]
    assert CLIP_ULIP.training_inputs() == {"clip": ("clip/image", "clip_text_from_image"),
                                           "ulip": ("ulip/image", "ulip_points_from_image")}
    assert extraction_sets([CLIP_CLAP, CLIP_ULIP]) == {"clip": {"text": "texts", "image": "memory"},
                                 "clap": {"text": "texts", "audio": "memory"},
                                 "ulip": {"image": "memory", "points": "memory"}}
    # a third connection is one definition: its sets, Eq. 2 jobs and training inputs follow
    clap_ulip = Connection("clap_ulip", ("clap", "ulip"), "points", {"clap": "audio", "ulip": "image"})
    assert clap_ulip.aggregate_jobs()[0] == ("clap_audio_from_points", "clap/points", "clap/audio")
    assert extraction_sets([clap_ulip])["ulip"] == {"points": "memory", "image": "memory"}


def aggregate_jobs(params):
    from cmcr.graph import graphs_of
    from cmcr.plan import aggregate_plan
    from cmcr.validation import check_params

    return aggregate_plan(params, check_params(params), graphs_of(params))


def test_aggregate_plan_has_one_job_per_link_and_memory_config():
    from cmcr.config import MemoryConfig
    from cmcr.experiments import resolve_variant
    from cmcr.plan import aggregate_key, variant_aggregate

    assert list(aggregate_jobs(PARAMS)) == ["clip_clap/softmax", "clip_clap/argmax", "clip_clap/random", "clip_ulip/softmax"]
    assert variant_aggregate(PARAMS, resolve_variant(PARAMS, "I")) == "clip_clap/argmax"
    assert variant_aggregate(PARAMS, resolve_variant(PARAMS, "paired")) is None  # true pairs: no Eq. 2
    params = {**PARAMS, "connections": {**PARAMS["connections"], "clip_ulip": {
        **PARAMS["connections"]["clip_ulip"], "memory": {"mode": "argmax"}}}}
    assert [k for k in aggregate_jobs(params) if k.startswith("clip_ulip")] == ["clip_ulip/argmax"]
    official = {**PARAMS, "graphs": {"j": {"mode": "joint", "spaces": ["clip", "ulip"], "links": ["clip_ulip"]}},
                "variants": {"o": {"group": "table4", "official": {"release": "ulip_clip", "checkpoint": "x"}}}}
    assert list(aggregate_jobs(official)) == ["clip_ulip/softmax"]  # a graph's links need their Eq. 2 too; a release none
    # a variant with its own τ1 trains on aggregates at that τ1 (it trained on its link's before), in a folder of its own
    own = {**PARAMS, "variants": {**PARAMS["variants"], "T2": {"overrides": {"memory": {"temperature": 0.02}}}}}
    jobs = aggregate_jobs(own)
    t2 = variant_aggregate(own, resolve_variant(own, "T2"))
    assert t2.startswith("clip_clap/softmax-") and len(t2) == len("clip_clap/softmax-") + 8
    assert jobs[t2]["memory"]["temperature"] == 0.02 and jobs["clip_clap/softmax"]["memory"]["temperature"] == 0.01
    base = MemoryConfig()
    assert aggregate_key(MemoryConfig(mode="random"), base) == "random"  # only the mode differs: its name
    assert aggregate_key(MemoryConfig(seed=3), base) != aggregate_key(MemoryConfig(seed=4), base)


def test_a_data_stage_plan_holds_exactly_the_params_it_reads():
    """cmcr.plan.params_subset (a data stage's plan, issue 31): the dotted keys' values nested as in params, a key
    params lacks left out (no empty parents), nothing else copied."""
    from cmcr.plan import extraction_params, params_subset

    p = {"setup": "paper", "demo": {"world": {"seed": 3}, "spaces": {"dim": 8}},
         "paper": {"encoders": {"clip": {"weights": "a.pt"}, "clap": {"weights": "b.pt"}}, "sets": {"clip": {"x": {}}},
                   "extraction": {"devices": 1}, "texts": {"seed": 0}}, "extraction": {"max_failure_rate": 0.1}}
    assert params_subset(p, ("setup", "demo.world", "missing.key", "demo.missing")) == {"setup": "paper", "demo": {"world": {"seed": 3}}}
    assert params_subset(p, extraction_params("clap")) == {
        "setup": "paper", "extraction": {"max_failure_rate": 0.1},
        "paper": {"encoders": {"clap": {"weights": "b.pt"}}, "extraction": {"devices": 1}}}  # clip's encoder, sets: not clap's
