"""params.yaml read as DVC reads it (YAML 1.2) and checked as a whole before any stage runs."""

import re

import pytest

from cmcr.config import ConfigError, deep_merge
from cmcr.experiments import resolve_variant, scale_of, training_scale
from cmcr.params import load_params, parse_overrides, parse_value
from cmcr.validation import check_params, validate_params
from conftest import ROOT_DIR

PARAMS = load_params(ROOT_DIR / "params.yaml")


def with_(*overrides: str) -> dict:
    return deep_merge(PARAMS, parse_overrides(list(overrides)))


def test_yaml_1_2_like_dvc(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr: 5e-4\nnoise:\n  enabled: yes\n  renorm: on\n")
    data = load_params(path)
    assert data["train"]["lr"] == 0.0005  # YAML 1.1 (PyYAML) reads the string '5e-4'
    assert data["noise"] == {"enabled": "yes", "renorm": "on"}  # YAML 1.1 reads True, True
    assert parse_value("5e-4") == 0.0005 and parse_value("[clip]") == ["clip"] and parse_value("maybe") == "maybe"
    with pytest.raises(ConfigError, match="noise.enabled must be true or false, got 'yes'"):
        validate_params(deep_merge(PARAMS, data))


def test_unreadable_params_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [1,\n")
    with pytest.raises(ConfigError, match=r"params.yaml: not valid YAML \(line"):
        load_params(bad)
    bad.write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_params(bad)


def test_the_committed_params_are_valid_and_resolve_every_variant():
    resolved = validate_params(PARAMS)
    assert list(resolved) == list(PARAMS["variants"])
    assert resolved["K"]["train"]["epochs"] == PARAMS["scale"]["small"]["epochs"]  # the demo trains small
    assert resolved["I"]["memory"]["mode"] == "argmax" and resolved["C"]["loss"]["intra_spaces"] == []


@pytest.mark.parametrize("override,message", [
    ("noise.var=-1", re.escape("noise.var (sigma^2, a variance) must be a finite number >= 0, got -1")),
    ("setup=nonsense", "setup must be one of"),
    ("train.min_lr=abc", "train.min_lr must be a finite number >= 0, got 'abc'"),
    ("noise.enabled=maybe", "noise.enabled must be true or false, got 'maybe'"),
    ("noise.renorm=2", "noise.renorm must be true or false, got 2"),
    ("train.device=tpu", "train.device must be one of auto, cpu, cuda, mps or cuda:<index>; got 'tpu'"),
    ("loss.intra_spaces=clip", re.escape("loss.intra_spaces must be a list of names, e.g. [clip], got 'clip'")),
    ("train.epochs=0", "train.epochs must be an integer >= 1, got 0"),
    ("train.batch_size=1", "train.batch_size must be an integer >= 2, got 1"),
    ("memory.mode=top", "memory.mode must be one of softmax, argmax, random; got 'top'"),
    ("memory.query_chunk=x", "memory.query_chunk"),
    ("connections.clip_ulip.noise.var=-2", "variant clip_ulip .*noise.var"),
    ("connections.clip_clap.link.shared=audio", "connections.clip_clap.link: spaces \\['clip', 'clap'\\] share no 'audio'"),
    ("connections.clip_ulip.link=null", "connections.clip_ulip.link must be {spaces: \\[a, b\\], shared"),
    ("variants.K=foo", "variants.K must be a mapping"),
    ("variants.A.overrides.loss.intra_spaces=[audio]", "variant A .*intra_spaces names \\['audio'\\]"),
    ("evaluation.counterfactual.ap=bad", "evaluation.counterfactual.ap: 'bad' is not one of"),
    ("benchmarks.retrieval=demo", "benchmarks.retrieval must be a list of dataset names"),
    ("benchmarks.speech=[x]", "benchmarks: unknown key"),
    ("bogus=1", "params: unknown top-level key"),
    ("demo.world.corpus=0", "demo.world.corpus must be an integer >= 1, got 0"),
    ("demo.spaces.geometry=real", "demo.spaces.geometry must be one of published, learned; got 'real'"),
    ("extraction.max_failure_rate=2", "extraction.max_failure_rate must be a number in \\[0, 1\\], got 2"),
    ("paper.encoders.clip.precision=fp8", "paper.encoders.clip.precision must be one of fp32, bf16, fp16; got 'fp8'"),
    ("paper.encoders.ulip.trust_checkpoint=yes", "paper.encoders.ulip.trust_checkpoint must be true or false"),
    ("graphs=null", "graphs: none declared"),
    ("graphs.extend.base=imagebind", "graphs.extend.base must name one of graphs.extend.spaces \\(clip, clap, ulip\\)"),
    ("graphs.joint.spaces=[clip,clap,imagebind]", "graphs.joint.spaces: unknown space 'imagebind'"),
    ("graphs.paired_audio_3d.pairs.dataset=VGGSound", "graphs.paired_audio_3d.pairs: the demo world's true pairs"),
    ("extend.dense=maybe", "extend.dense must be true or false"),
    ("graph_training.memroy={mode: argmax}", "graph_training: unknown group\\(s\\) \\['memroy'\\]; known: memory, noise"),
    ("graph_training.loss=0.05", "graph_training.loss must be a mapping, got 0.05"),
    ("graph_training.loss.shared_temperature=-1", "graphs.joint: .*temperature"),
    ("benchmarks.graph=demo", "benchmarks.graph must be a list of dataset names"),
])
def test_every_bad_value_is_one_line_naming_key_value_and_what_is_allowed(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        validate_params(with_(override))
    assert "\n" not in str(info.value)


def test_every_link_is_declared_in_params_the_papers_two_included():
    """Issue 31, point 1: clip_clap and clip_ulip are declared in params.yaml as any link (no Python constant); a
    params file whose variants or benchmarks use a link it does not declare is refused, naming what to declare."""
    import cmcr.config
    from cmcr.config import Connection, connection_of

    assert PARAMS["connections"]["clip_clap"]["link"] == {"spaces": ["clip", "clap"], "shared": "text",
                                                         "memory": {"clip": "image", "clap": "audio"}}
    assert connection_of(PARAMS, "clip_ulip") == Connection("clip_ulip", ("clip", "ulip"), "image",
                                                            {"clip": "text", "ulip": "points"})
    assert not [k for k, v in vars(cmcr.config).items() if isinstance(v, (Connection, dict)) and k.isupper()
                and (isinstance(v, Connection) or any(isinstance(x, Connection) for x in v.values()))]
    no_clap = deep_merge(PARAMS, {})
    no_clap["connections"] = {k: v for k, v in PARAMS["connections"].items() if k != "clip_clap"}
    with pytest.raises(ConfigError, match="graphs.joint.links: unknown connection 'clip_clap'; known: clip_ulip"):
        validate_params(no_clap)
    no_clap["graphs"] = {"paired_audio_3d": PARAMS["graphs"]["paired_audio_3d"]}
    with pytest.raises(ConfigError, match=r"variants \['K', 'A'.*train the link 'clip_clap', which params do not "
                                          r"declare: connections.clip_clap.link: \{spaces"):
        validate_params(no_clap)
    no_clap["variants"] = {k: v for k, v in PARAMS["variants"].items() if v.get("connection") == "clip_ulip"}
    with pytest.raises(ConfigError, match="benchmarks.retrieval evaluates the link 'clip_clap', which params do not"):
        validate_params(no_clap)
    linkless = deep_merge(PARAMS, {})
    linkless["connections"] = PARAMS["connections"] | {"clip_ulip": {"noise": {"var": 0.002}}}
    with pytest.raises(ConfigError, match="connections.clip_ulip: no link declared"):
        validate_params(linkless)


def test_explicit_training_scale_wins_over_the_demo_scale():
    """Finding 2: `-S train.epochs=3` / `-S train.batch_size=64` were replaced by demo.overrides (10 / 256)
    (now scale small, what scale.mode setup gives the demo)."""
    demo = PARAMS["scale"]["small"]
    assert resolve_variant(PARAMS, "K").config.train.epochs == demo["epochs"]
    changed = with_("train.epochs=3", "train.batch_size=64")
    k = resolve_variant(changed, "K").config.train
    assert (k.epochs, k.batch_size) == (3, 64)
    applied, notes = training_scale(changed, "clip_clap")
    assert applied["train"] == {} and len(notes) == 2 and "train.epochs=3 kept" in notes[0]
    # the 3D connection keeps its own paper scale (24 / 8192), so the demo scale still applies to it
    assert resolve_variant(changed, "clip_ulip").config.train.epochs == demo["epochs"]
    ulip = resolve_variant(with_("connections.clip_ulip.train.epochs=7"), "clip_ulip").config.train
    assert ulip.epochs == 7 and ulip.batch_size == demo["batch_size"]
    # a variant's own override wins over both; outside the demo setup the small scale is not used
    assert resolve_variant(with_("variants.K.overrides.train.epochs=2"), "K").config.train.epochs == 2
    assert resolve_variant(with_("setup=paper"), "K").config.train.epochs == PARAMS["train"]["epochs"]


@pytest.mark.parametrize("setup,mode,expected", [
    ("demo", "setup", "small"), ("byo", "setup", "auto"), ("paper", "setup", "paper"),
    ("demo", "paper", "paper"), ("byo", "small", "small"), ("paper", "auto", "auto"),
])
def test_the_training_scale_follows_the_setup_unless_chosen(setup, mode, expected):
    """Issue 32 (1): byo trained at the paper's 36 epochs × batch 10,240 whatever its size. scale.mode setup gives
    each setup its scale; a mode named wins; the variant's config says what was resolved."""
    p = with_(f"setup={setup}", f"scale.mode={mode}")
    assert scale_of(p) == expected
    train = resolve_variant(p, "K").config.train
    want = {"paper": (36, 10240, 0), "small": (5, 128, 0), "auto": (36, 10240, 500)}[expected]
    assert (train.epochs, train.batch_size, train.auto_steps) == want
    assert train.auto_min_batch == 128
    ulip = resolve_variant(p, "clip_ulip").config.train  # its own paper scale (24 × 8192) is where auto starts
    assert (ulip.epochs, ulip.batch_size) == ((5, 128) if expected == "small" else (24, 8192))


@pytest.mark.parametrize("override,message", [
    ("scale.mode=large", "scale.mode must be one of setup, paper, small, auto; got 'large'"),
    ("scale.auto.steps=0", "scale.auto.steps must be an integer >= 1, got 0"),
    ("scale.auto.min_batch=1", "scale.auto.min_batch must be an integer >= 2, got 1"),
    ("scale.small.epoch=3", r"scale.small: unknown key\(s\) \['epoch'\]; known: epochs, batch_size"),
    ("scale.steps=3", r"scale: unknown key\(s\) \['steps'\]"),
    ("train.auto_steps=100", "train.auto_steps: set the training scale with scale.mode: auto"),
    ("variants.K.overrides.train.auto_min_batch=64", "variants.K.overrides.train.auto_min_batch: set the training"),
    ("demo.overrides.train.epochs=5", "demo.overrides: the demo's training scale is now scale.small"),
])
def test_a_bad_training_scale_is_one_line(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        validate_params(with_(override))
    assert "\n" not in str(info.value)


def _few(p: dict, rows=None) -> dict[str, tuple[str, str]]:
    from cmcr.graph import graphs_of
    from cmcr.plan import pipeline_plans, unit_plans
    from cmcr.validation import few_steps
    from cmcr.world import WorldConfig

    world = WorldConfig(**p["demo"]["world"])
    variants, graphs = check_params(p), graphs_of(p)
    plans = unit_plans(pipeline_plans(p, variants, graphs), variants, graphs)
    return {unit: (steps, how) for unit, steps, how in few_steps(plans, rows or (lambda space, name: world.set_rows(name)))}


def test_units_with_few_optimiser_steps_are_named_with_their_count_and_knobs():
    """Issue 30 (4): the demo world's sizes (2,000 texts, 3,000 images, 2,000 reference pairs) at each scale,
    hand-computed: small 5 × ⌈2000/128⌉ = 80 steps; paper 36 epochs of one batch of all 2,000 = 36 (clip_ulip
    24 × one batch of 3,000 = 24); auto ≥ 500: none. The extend leaf ULIP pools its link's shared images (3,000),
    ULIP's points (2,000) and CLIP's texts (2,000): 7,000 tuples → 5 × ⌈7000/128⌉ = 275."""
    small = _few(PARAMS)
    assert small["K"] == ("80", "5 epochs × 16 batches of 128 from 2,000 items")
    assert small["no_image_text"][0] == "≤ 80" and small["clip_ulip"][0] == "120"
    assert small["graph extend leaf ulip"] == ("275", "5 epochs × 55 batches of 128 from 7,000 items")
    assert "graph extend leaf clap" not in small  # 8,000 tuples: 5 × 63 = 315 steps
    paper = _few(with_("scale.mode=paper"))
    assert paper["K"] == ("36", "36 epochs × 1 batches of 2,000 from 2,000 items")
    assert paper["clip_ulip"] == ("24", "24 epochs × 1 batches of 3,000 from 3,000 items")
    assert _few(with_("scale.mode=auto")) == {}
    # the issue's own case: a paired reference of 4,000 true pairs at batch 2,048 for 20 epochs = 40 steps
    p = with_("setup=paper", "scale.mode=paper", "train.epochs=20", "train.batch_size=2048")
    p["paper"]["sets"] = {"clip": {"paired_image@VGGSound": {"manifest": "x.parquet"}},
                          "clap": {"paired_audio@VGGSound": {"manifest": "y.parquet"}}}
    p["variants"] = {"K": PARAMS["variants"]["K"], "paired": {"group": "reference", "paired": "VGGSound"}}
    p["graphs"] = {"joint": PARAMS["graphs"]["joint"]}
    few = _few(p, lambda space, name: {"paired_image@VGGSound": 4000, "text": 2_330_000}.get(name))
    assert few == {"paired": ("40", "20 epochs × 2 batches of 2,048 from 4,000 items")}  # K, joint: 2.33M texts
