"""A space of your own (issue 22): params ``spaces`` lists it, ``paper.encoders.<space>.plugin`` names the file that
registers its encoder (setup paper) or its embeddings are brought (setup byo); validate refuses every bad
declaration in one line before anything runs. The pipeline runs (tests/test_paper_e2e.py, tests/test_pipeline.py's
byo test); here: the plugin loader, the encoder against a hand-computed embedding, and the checks."""

import copy
import shutil

import numpy as np
import pytest
import torch
import yaml

from cmcr.config import ConfigError
from conftest import ROOT_DIR

PLUGIN = ROOT_DIR / "tests" / "plugins" / "touch.py"
TOUCH_LINK = {"link": {"spaces": ["clip", "touch"], "shared": "image", "memory": {"clip": "text", "touch": "touch"}},
              "loss": {"intra_spaces": ["clip", "touch"]}}


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder with plugins/touch.py and random touch weights; the working directory (as in a stage)."""
    (tmp_path / "plugins").mkdir()
    shutil.copy(PLUGIN, tmp_path / "plugins" / "touch.py")
    monkeypatch.chdir(tmp_path)
    from cmcr.encoders.base import load_plugin

    load_plugin(tmp_path / "plugins" / "touch.py")[0].random_weights(str(tmp_path / "touch.pt"), dim=32, seed=1)
    return tmp_path


def paper_params(**changes):
    p = yaml.safe_load((ROOT_DIR / "params.yaml").read_text())
    p["setup"] = "paper"
    p["spaces"] = ["clip", "clap", "ulip", "touch"]
    p["variants"] = {"K": p["variants"]["K"], "clip_ulip": p["variants"]["clip_ulip"]}
    p["connections"]["clip_touch"] = copy.deepcopy(TOUCH_LINK)
    p["graphs"] = {"touch_into_clip": {"mode": "extend", "base": "clip", "spaces": ["clip", "touch"],
                                       "links": ["clip_touch"]}}
    p["paper"]["encoders"]["touch"] = {"plugin": "plugins/touch.py", "weights": "touch.pt", "device": "cpu"}
    for key, value in changes.items():
        node = p
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = copy.deepcopy(value)
    return p


def test_the_plugin_encoder_embeds_as_its_formula(project):
    """build_space with ``plugin=`` imports the user's file and builds its class; its embeddings are the towers'
    output, L2-normalised — checked against the formula computed here with NumPy; a bad item is a recorded failure."""
    from PIL import Image

    from cmcr.encoders.base import build_space
    from cmcr.extraction import extract

    space = build_space("touch", plugin="plugins/touch.py", weights="touch.pt", device="cpu")
    assert space.dim == 32 and space.modalities == ("touch", "image")
    signal = np.sin(np.linspace(0, 7, 100)) + 0.1 * np.arange(100) / 100
    np.save(project / "a.npy", signal)
    np.save(project / "bad.npy", np.zeros((3, 3)))
    Image.fromarray((np.arange(20 * 24 * 3) % 251).astype(np.uint8).reshape(20, 24, 3)).save(project / "a.png")
    out = extract(space, "touch", [str(project / "a.npy"), str(project / "bad.npy")], progress=False)
    assert out.embeddings.shape == (1, 32) and len(out.failures) == 1 and "1-D array" in out.failures[0]["reason"]
    state = torch.load(project / "touch.pt", weights_only=True)
    x = np.interp(np.linspace(0, 99, 64), np.arange(100), signal)
    x = (x - x.mean()) / (x.std() + 1e-8)
    expected = state["touch.weight"].double().numpy() @ x + state["touch.bias"].double().numpy()
    np.testing.assert_allclose(out.embeddings[0], expected / np.linalg.norm(expected), atol=1e-5)
    image = np.asarray(Image.open(project / "a.png").convert("RGB").resize((16, 16)), dtype=np.float64) / 255
    expected = state["image.weight"].double().numpy() @ image.transpose(2, 0, 1).reshape(-1) + state["image.bias"].double().numpy()
    got = extract(space, "image", [str(project / "a.png")], progress=False).embeddings[0]
    np.testing.assert_allclose(got, expected / np.linalg.norm(expected), atol=1e-5)
    # the space's identity (the extraction shards' key) names the plugin's class and changes with its weights
    other = project / "other.pt"
    import importlib

    importlib.import_module(type(space).__module__).random_weights(str(other), dim=32, seed=2)
    assert space.identity()["class"].startswith("cmcr_plugin_touch_") and space.identity()["class"].endswith(".TouchSpace")
    assert build_space("touch", plugin="plugins/touch.py", weights=str(other), device="cpu").identity()["weights"] \
        != space.identity()["weights"]


def test_an_edited_plugin_is_another_module(project):
    """The module is keyed by the file's bytes: the same file from two places is one module, an edit is a new one
    (so shards made by the old code are not reused), and each file's own class is what build_space returns."""
    from cmcr.encoders.base import build_space, load_plugin

    copy = project / "elsewhere" / "touch.py"
    copy.parent.mkdir()
    shutil.copy(project / "plugins" / "touch.py", copy)
    assert load_plugin(copy)[0] is load_plugin(project / "plugins" / "touch.py")[0]
    edited = project / "edited" / "touch.py"
    edited.parent.mkdir()
    edited.write_text(PLUGIN.read_text().replace('name = "touch"', 'name = "touch"\n    edited = True'))
    module, own = load_plugin(edited)
    assert module is not load_plugin(copy)[0] and set(own) == {"touch"}
    assert getattr(build_space("touch", plugin=edited, weights="touch.pt", device="cpu"), "edited", False)
    assert not hasattr(build_space("touch", plugin=copy, weights="touch.pt", device="cpu"), "edited")


def test_setup_paper_accepts_a_space_of_your_own(project):
    """spaces lists it, its plugin registers it, a declared link and a graph use it: the whole params check
    passes, and the graph knows which space embeds touch."""
    from cmcr.graph import graphs_of
    from cmcr.validation import check_params

    p = paper_params()
    check_params(p)
    graph = graphs_of(p)["touch_into_clip"]
    assert graph.modalities() == {"image": "clip", "text": "clip", "touch": "touch"}


def test_an_encoder_alias_makes_a_second_space_of_a_registered_kind():
    """``encoder: clip`` builds a second CLIP-kind space under another name (e.g. a larger CLIP as ``clip_l``)."""
    from cmcr.encoders.base import register_paper_encoders
    from cmcr.graph import space_modalities

    p = paper_params()
    p["spaces"].append("clip_l")
    p["paper"]["encoders"]["clip_l"] = {"encoder": "clip", "model_name": "ViT-L-14"}
    del p["paper"]["encoders"]["touch"]  # no plugin needed for this check
    p["spaces"].remove("touch")
    p["connections"] = {k: v for k, v in p["connections"].items() if k != "clip_touch"}
    register_paper_encoders(p)
    assert space_modalities("clip_l") == ("image", "text")


@pytest.mark.parametrize("changes,message", [
    ({"spaces": ["clip", "clap", "clip"]}, r"^spaces lists a space twice: \['clip', 'clap', 'clip'\]$"),
    ({"spaces": ["clip", "Touch!"]}, r"^spaces must be a non-empty list of names .*got \['clip', 'Touch!'\]$"),
    ({"spaces": "clip"}, r"^spaces must be a non-empty list of names"),
    ({"spaces": ["clip", "clap", "touch"]},
     r"^spaces: \['ulip'\] not listed, but the variants use connection clip_ulip \(clip \+ ulip\); add it"),
    ({"spaces": ["clip", "clap", "ulip", "touch", "thermal"]},
     r"^paper.encoders.thermal: no encoder registered as 'thermal' — a space of your own names the file"),
    ({"paper.encoders.touch.plugin": "/abs/touch.py"}, r"^paper.encoders.touch.plugin: '/abs/touch.py' must be a \.py "
                                                        r"file under the project's plugins/ folder"),
    ({"paper.encoders.touch.plugin": "plugins/../touch.py"}, r"^paper.encoders.touch.plugin: .* under the project's plugins/"),
    ({"paper.encoders.touch.plugin": "plugins/missing.py"}, r"^paper.encoders.touch.plugin: plugins/missing.py does not exist"),
    ({"paper.encoders.touch.plugin": "plugins/broken.py"},
     r"^paper.encoders.touch.plugin: importing plugins/broken.py failed: ZeroDivisionError: division by zero$"),
    ({"paper.encoders.touch.encoder": "tactile"}, r"^paper.encoders.touch: unknown encoder space 'tactile' \(after importing plugins/touch.py\); registered: \["),
    ({"connections.clip_touch.link.memory": {"clip": "text", "touch": "smell"}},
     r"^connections.clip_touch.link: memory modality 'smell' of touch must be one of its other modalities \(\['touch'\]\)$"),
    ({"paper.encoders.touch.plugin": 3}, r"^paper.encoders.touch.plugin must be a string \(or null\), got 3$"),
])
def test_bad_declarations_of_a_space_are_one_line(project, changes, message):
    from cmcr.validation import check_params

    (project / "plugins" / "broken.py").write_text("1 / 0\n")
    with pytest.raises(ConfigError, match=message):
        check_params(paper_params(**changes))


def test_setup_byo_takes_a_space_without_an_encoder():
    """setup byo: no encoder to import — a listed space has the modalities its links state (its files are checked
    by the byo check); unlisted, it is refused."""
    from cmcr.graph import Graph, graphs_of
    from cmcr.validation import check_params

    p = paper_params(setup="byo")
    p["spaces"] = ["clip", "clap", "ulip", "skin"]
    del p["paper"]["encoders"]["touch"]
    p["connections"]["clip_touch"] = {"link": {"spaces": ["clip", "skin"], "shared": "image",
                                               "memory": {"clip": "text", "skin": "pressure"}},
                                      "loss": {"intra_spaces": ["clip", "skin"]}}
    p["graphs"]["touch_into_clip"]["spaces"] = ["clip", "skin"]
    check_params(p)
    graph = graphs_of(p)["touch_into_clip"]
    assert graph.modalities() == {"image": "clip", "text": "clip", "pressure": "skin"}
    assert Graph.from_dict(graph.to_dict()).modalities() == graph.modalities()  # a checkpoint needs no params
    p["spaces"] = ["clip", "clap", "ulip"]
    with pytest.raises(ConfigError, match=r"^connections.clip_touch.link: unknown space 'skin': no registered encoder "
                                          r"space states its modalities \(known: .*\); a space of your own is listed in spaces"):
        check_params(p)


TOUCH_TASK = {"query": {"space": "touch", "modality": "touch"}, "gallery": {"space": "clip", "modality": "image"}}


@pytest.mark.parametrize("task,message", [
    ({**TOUCH_TASK, "query": {"space": "skin", "modality": "touch"}},
     r"^graph_tasks.t.query.space must be one of spaces \(clip, clap, ulip, touch\), got 'skin'$"),
    ({**TOUCH_TASK, "gallery": {"space": "clip", "modality": "audio"}},
     r"^graph_tasks.t.gallery.modality: clip embeds \['image', 'text'\], not 'audio'$"),
    ({**TOUCH_TASK, "gallery": {"space": "touch", "modality": "touch"}},
     r"^graph_tasks.t: query and gallery are both touch"),
    ({**TOUCH_TASK, "classes": "material"}, r"^graph_tasks.t.classes must be a list of column names"),
    ({**TOUCH_TASK, "kind": "zeroshot"}, r"^graph_tasks.t: unknown key\(s\) \['kind'\]"),
    ({**TOUCH_TASK, "query": {"space": "touch", "modality": "Touch2"}}, r"^graph_tasks.t.query.modality must be a modality name"),
])
def test_bad_graph_tasks_are_one_line(project, task, message):
    from cmcr.validation import check_params

    with pytest.raises(ConfigError, match=message):
        check_params(paper_params(graph_tasks={"t": task}))


def test_graph_tasks_of_your_own_are_refused_in_the_demo_and_named_apart_from_the_built_in_ones(project):
    from cmcr.validation import check_params

    p = yaml.safe_load((ROOT_DIR / "params.yaml").read_text())
    p["graph_tasks"] = {"image_points": {"query": {"space": "clip", "modality": "image"},
                                         "gallery": {"space": "ulip", "modality": "points"}}}
    with pytest.raises(ConfigError, match=r"^graph_tasks: \['image_points'\] read sets of your own .* the demo world"):
        check_params(p)
    with pytest.raises(ConfigError, match=r"^graph_tasks.audio_text: a task name .* not a built-in one"):
        check_params(paper_params(graph_tasks={"audio_text": TOUCH_TASK}))
    check_params(paper_params(graph_tasks={"touch_image": {**TOUCH_TASK, "classes": ["material"]}}))


def test_a_graph_task_of_your_own_is_extracted_scored_and_tabled(project):
    """A declared task adds its sets to its spaces' extraction (graph_<modality>@<dataset>, optional), is scored
    like the built-in retrieval tasks (joined by pair_id; each pair its own class without class columns: ceiling
    mAP 100; chance the analytic expectation) and gets its two columns in results/graph.md."""
    tmp_path = project
    import pandas as pd

    from cmcr.artifacts import save_embedding_set
    from cmcr.benchmarks import graph_tasks
    from cmcr.validation import pipeline_sets
    from cmcr.evaluation import ceiling, load_task, random_baseline, score_model, unusable
    from cmcr.metrics.retrieval import random_expectation
    from cmcr.report import graph_table

    p = paper_params(graph_tasks={"touch_image": TOUCH_TASK})
    p["benchmarks"]["graph"] = ["TouchAndGo"]
    sets = pipeline_sets(p)
    assert sets["touch"]["graph_touch@TouchAndGo"] == ("touch", False)
    assert sets["clip"]["graph_image@TouchAndGo"] == ("image", False)
    spec = graph_tasks(p)["touch_image"]
    assert spec == ("retrieval", ("touch", "touch", "graph_touch"), ("image", "clip", "graph_image"), ())
    g = torch.Generator().manual_seed(0)
    touch = torch.nn.functional.normalize(torch.randn(8, 6, generator=g), dim=1)
    image = torch.nn.functional.normalize(torch.randn(8, 6, generator=g), dim=1)
    save_embedding_set(tmp_path / "touch", "graph_touch@TouchAndGo", touch.numpy(), pd.DataFrame({"pair_id": range(8)}))
    save_embedding_set(tmp_path / "clip", "graph_image@TouchAndGo", image.numpy()[::-1].copy(),
                       pd.DataFrame({"pair_id": range(7, -1, -1)}))  # listed in reverse: joined by pair_id
    data, coverage = load_task(tmp_path, "touch_image", "TouchAndGo", spec)
    assert coverage == {"scored": 8, "listed": 8}
    assert data.directions() == ("touch2I", "I2touch")
    assert ceiling(data)["touch2I"]["mAP"] == 100.0
    assert random_baseline(data)["touch2I"] == random_expectation(8)
    identity = {"touch": lambda x, modality=None: x, "clip": lambda x, modality=None: x}
    assert unusable(data, identity, {"touch": "touch", "image": "clip"}) is None
    assert unusable(data, identity, {"image": "clip"}) == "embeds touch from None, the set is touch's"
    scores, _ = score_model(data, identity, "identity")
    sims = (touch @ image.T).numpy()  # an independent count: rank of the true image among the 8, per touch query
    ranks = 1 + (sims > np.diag(sims)[:, None]).sum(1)
    assert scores["touch2I"]["mAP"] == pytest.approx(100 * np.mean(1 / ranks), abs=1e-6)
    table = graph_table({"TouchAndGo": {"touch_image": {"identity": scores, "ceiling": ceiling(data)}}},
                        {"identity": "Identity", "ceiling": "Ceiling"})
    assert "| touch→I mAP | I→touch mAP |" in table and "| TouchAndGo | Ceiling |" in table
