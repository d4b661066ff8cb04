"""The Python API and index/search over the connected space, on random-weight demo spaces and real files."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
import torch

from cmcr.api import ConnectedModel, EmbedError
from cmcr.artifacts import ArtifactError, save_torch
from cmcr.config import ConfigError, ConnectionConfig, LossConfig, ProjectorConfig
from conftest import CLIP_CLAP, CLIP_ULIP, PAPER_LINKS as CONNECTIONS
from cmcr.encoders.demo import DemoSpace, DemoSpaceModel
from cmcr.extraction import extract_sharded
from cmcr.projector import build_projectors
from cmcr.search import build_index, open_index, search, top_k
from cmcr.graph import connection_unit
from cmcr.world import SAMPLE_RATE

DIM = 32


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A few real files of each modality (PNG images, WAV sounds, NPY clouds) and demo spaces' checkpoints."""
    from PIL import Image

    root = tmp_path_factory.mktemp("api")
    rng = np.random.default_rng(0)
    out = {"image": [], "audio": [], "points": []}
    for i in range(7):
        path = root / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (40 + i, 48, 3), dtype=np.uint8)).save(path)
        out["image"].append(str(path))
        path = root / f"snd{i}.wav"
        soundfile.write(path, (0.3 * np.sin(np.arange(SAMPLE_RATE) * (0.01 + 0.01 * i))).astype(np.float32), SAMPLE_RATE)
        out["audio"].append(str(path))
        path = root / f"pts{i}.npy"
        np.save(path, rng.standard_normal((300, 3)).astype(np.float32))
        out["points"].append(str(path))
    torch.manual_seed(0)
    vocab = ["a", "red", "bell", "dog", "barking", "small", "train"]
    for name in ("clip", "clap", "ulip"):
        save_torch(root / f"{name}.pt", DemoSpace(DemoSpaceModel(name, DIM, vocab)).checkpoint())
    for connection in ("clip_clap", "clip_ulip"):
        conn = CONNECTIONS[connection]
        config = ConnectionConfig(connection=conn, projector=ProjectorConfig(in_dims={s: DIM for s in conn.spaces},
                                                                             hidden_dim=48, out_dim=24),
                                  loss=LossConfig(intra_spaces=conn.spaces))
        projectors = build_projectors(config.projector, conn.spaces)
        for module in projectors.modules():  # non-trivial BatchNorm statistics
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
        save_torch(root / f"{connection}.pt", connection_unit(projectors.eval(), config, connection).checkpoint())
    out["root"] = root
    return out


def model(files, connection="clip_clap", **kwargs) -> ConnectedModel:
    spaces = {s: {"checkpoint": files["root"] / f"{s}.pt"} for s in CONNECTIONS[connection].spaces}
    return ConnectedModel.load(files["root"] / f"{connection}.pt",
                               {s: DemoSpace.from_checkpoint(files["root"] / f"{s}.pt") for s in spaces}, **kwargs)


@pytest.mark.parametrize("connection,modality,space", [("clip_clap", "image", "clip"), ("clip_clap", "audio", "clap"),
                                                       ("clip_ulip", "points", "ulip"), ("clip_ulip", "text", "clip")])
def test_api_embedding_equals_the_pipelines_projected_embedding(files, tmp_path, connection, modality, space):
    m = model(files, connection)
    items = files[modality] if modality != "text" else ["a red bell", "a dog barking", "small train"]
    ids = [f"i{k}" for k in range(len(items))]
    # the pipeline: the sharded extraction of the space's encoder, then the projector (Eq. 4) + L2
    extract_sharded(m.spaces[space], modality, items, ids, tmp_path, "x", shard_size=3, batch_size=2, progress=False)
    raw = np.load(tmp_path / "x.npy")
    with torch.no_grad():
        pipeline = m.result.projectors[space].embed(torch.from_numpy(raw)).numpy()
    api = m.embed(modality, items)
    assert api.dtype == np.float32 and api.shape == (len(items), 24)
    np.testing.assert_allclose(np.linalg.norm(api, axis=1), 1.0, atol=1e-6)
    assert np.abs(api - pipeline).max() <= 1e-5
    single = {"image": m.embed_image, "audio": m.embed_audio, "points": m.embed_points, "text": m.embed_text}[modality]
    assert np.abs(single(items[1]) - pipeline[1:2]).max() <= 1e-5  # one item, not a list


def test_shared_modality_from_one_space_or_both(files):
    texts = ["a red bell", "a dog barking"]
    by = {mode: model(files, shared_space=mode).embed_text(texts) for mode in ("clip", "clap", "mean")}
    mean = by["clip"] + by["clap"]
    np.testing.assert_allclose(by["mean"], mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-6)
    assert not np.allclose(by["clip"], by["clap"])
    with pytest.raises(ConfigError, match="shared_space must be one of clip, clap, mean"):
        model(files, shared_space="ulip")
    with pytest.raises(ValueError, match=r"the clip_clap connection \(clip_clap\) embeds image, text, audio, not points"):
        model(files).embed_points(files["points"][:1])


def test_mismatched_encoders_and_unreadable_files_are_clear_errors(files, tmp_path):
    with pytest.raises(ConfigError, match=r"connects \['clap', 'clip'\] .* given for \['clip', 'ulip'\]"):
        ConnectedModel.load(files["root"] / "clip_clap.pt", {s: DemoSpace.from_checkpoint(files["root"] / f"{s}.pt")
                                                             for s in ("clip", "ulip")})
    torch.manual_seed(1)
    wide = DemoSpace(DemoSpaceModel("clap", 64, ["a"]))
    with pytest.raises(ConfigError, match="clap projector takes 32-d embeddings but the clap encoder .* gives 64-d"):
        ConnectedModel.load(files["root"] / "clip_clap.pt",
                            {"clip": DemoSpace.from_checkpoint(files["root"] / "clip.pt"), "clap": wide})
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....not audio")
    with pytest.raises(EmbedError, match="broken.wav: cannot be read as audio by demo_clap"):
        model(files).embed_audio([files["audio"][0], str(broken)])


def test_official_release_checkpoint_through_the_api(files, tmp_path):
    """An official release imported by cmcr/official.py embeds like ours (512-d demo spaces stand in for CLIP/ULIP-2)."""
    from conftest import OFFICIAL
    from cmcr.official import load_official

    if not (OFFICIAL / "ulip_clip.pt").is_file():
        pytest.skip("official fixtures not found")
    save_torch(tmp_path / "official.pt", connection_unit(*load_official(OFFICIAL / "ulip_clip.pt", "ulip_clip"),
                                                         "ulip_clip").checkpoint())
    torch.manual_seed(2)
    spaces = {s: DemoSpace(DemoSpaceModel(s, 512, ["a", "dog"])) for s in ("clip", "ulip")}
    m = ConnectedModel.load(tmp_path / "official.pt", spaces)
    x = m.embed_points(files["points"][:2])
    raw = m.encode_raw("ulip", "points", files["points"][:2])
    with torch.no_grad():
        np.testing.assert_allclose(x, m.result.projectors["ulip"].embed(torch.from_numpy(raw)).numpy(), atol=1e-5)
    assert m.embed_text("a dog").shape == (1, m.dim)


def test_top_k_streams_in_chunks_and_matches_a_full_sort():
    rng = np.random.default_rng(3)
    emb = rng.standard_normal((1000, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    emb[500] = emb[10]  # a tie: the lower row comes first
    q = emb[[10, 3]]
    full = q @ emb.T
    for chunk in (7, 100, 5000):
        scores, rows = top_k(q, emb, 5, chunk=chunk)
        expected = np.stack([np.lexsort((np.arange(1000), -s))[:5] for s in full])
        np.testing.assert_array_equal(rows, expected)
        np.testing.assert_allclose(scores, np.take_along_axis(full, expected, 1), atol=1e-6)
    assert rows[0][:2].tolist() == [10, 500]
    assert top_k(q, emb[:3], 5)[1].shape == (2, 3)  # k larger than the index


def test_index_and_search(files, tmp_path):
    m = model(files)
    ids = [Path(p).name for p in files["image"]]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    info = build_index(m, "image", files["image"] + [str(bad)], ids + ["bad.png"], tmp_path / "idx", shard_size=3,
                       progress=False, max_failure_rate=0.5)
    assert (info["rows"], info["failed"], info["items"]) == (7, 1, 8)
    assert pd.read_parquet(tmp_path / "idx" / "failures.parquet")["id"].tolist() == ["bad.png"]
    emb, items, _ = open_index(tmp_path / "idx", m)
    np.testing.assert_allclose(emb, m.embed_image(files["image"]), atol=1e-5)
    hits = search(m, tmp_path / "idx", files["audio"][2], "audio", k=3, chunk=2)
    brute = (m.embed_audio(files["audio"][2]) @ m.embed_image(files["image"]).T)[0]
    assert hits["item"].tolist() == [files["image"][i] for i in np.argsort(-brute)[:3]]
    np.testing.assert_allclose(hits["score"], np.sort(brute)[::-1][:3], atol=1e-5)
    assert hits["rank"].tolist() == [1, 2, 3]
    # rebuilding resumes from the shards (nothing re-encoded) and gives the same index
    again = build_index(m, "image", files["image"] + [str(bad)], ids + ["bad.png"], tmp_path / "idx", shard_size=3,
                        progress=False, max_failure_rate=0.5)
    assert again == info
    # an index built with another checkpoint or other encoders is refused
    other = model(files, shared_space="clip")  # same files; text would differ, images do not: accepted
    open_index(tmp_path / "idx", other)
    torch.manual_seed(5)
    retrained = ConnectedModel(m.result, {"clip": DemoSpace(DemoSpaceModel("clip", DIM, ["a"])), "clap": m.spaces["clap"]},
                               checkpoint_digest=m.checkpoint_digest)
    with pytest.raises(ArtifactError, match="built with another clip encoder"):
        search(retrained, tmp_path / "idx", files["audio"][0], "audio")
    moved = ConnectedModel(m.result, m.spaces, checkpoint_digest="0" * 32)
    with pytest.raises(ArtifactError, match="built with checkpoint"):
        search(moved, tmp_path / "idx", files["audio"][0], "audio")
    with pytest.raises(ArtifactError, match="not a cmcr index"):
        open_index(tmp_path)


def test_search_page_in_a_browser(files, tmp_path):
    from cmcr.examples import search_page
    from cmcr.pages import check_page

    m = model(files)
    build_index(m, "audio", files["audio"], [f"a{i}" for i in range(7)], tmp_path / "idx", progress=False)
    hits = search(m, tmp_path / "idx", files["image"][0], "image", k=5)
    page = search_page(tmp_path / "out.html", "image", files["image"][0], hits, tmp_path / "idx")
    text = page.read_text()
    assert text.count("<audio") == 5 and "#1 " in text and "http" not in text.lower()
    from conftest import have_browser

    if not have_browser():
        pytest.skip("no chromium on PATH: the page was written but not opened")
    check = check_page(page, screenshot=tmp_path / "out.png")
    assert check.ok and check.images == 6  # the query's image and five waveforms


def demo_project(files, tmp_path) -> Path:
    """A project folder laid out as `dvc repro` leaves it (setup demo): the stand-ins, K's first seed, params."""
    import shutil

    import yaml

    from conftest import ROOT_DIR

    project = tmp_path / "project"
    (project / "models" / "spaces").mkdir(parents=True)
    (project / "models" / "connections" / "K").mkdir(parents=True)
    for s in ("clip", "clap"):
        shutil.copy(files["root"] / f"{s}.pt", project / "models" / "spaces" / f"{s}.pt")
    shutil.copy(files["root"] / "clip_clap.pt", project / "models" / "connections" / "K" / "seed0.pt")
    params = yaml.safe_load((ROOT_DIR / "params.yaml").read_text())
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    write_overview(project, params)
    return project


def write_overview(project, params) -> None:
    """The overview plan the validate stage writes (:func:`cmcr.plan.overview_plan`): what the API reads of the run."""
    from cmcr import layout
    from cmcr.graph import graphs_of
    from cmcr.plan import overview_plan, plan_text
    from cmcr.validation import check_params

    path = project / layout.OVERVIEW_PLAN
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(plan_text(overview_plan(params, check_params(params), graphs_of(params))))


def test_cli_index_and_search_on_a_project(files, tmp_path):
    """`cmcr index` / `cmcr search` on a project folder laid out as `dvc repro` leaves it (setup demo)."""
    import shutil

    from typer.testing import CliRunner

    from cmcr.cli import app

    project = demo_project(files, tmp_path)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in files["image"]:
        shutil.copy(p, folder)
    runner = CliRunner()
    res = runner.invoke(app, ["index", "--root", str(project), "--out", str(tmp_path / "idx"), "--modality", "image",
                              "--folder", str(folder), "--pattern", "*.png"])
    assert res.exit_code == 0, res.output
    assert "7 image items indexed, 0 failed" in res.output
    res = runner.invoke(app, ["search", "--root", str(project), "--index", str(tmp_path / "idx"), "--query",
                              files["audio"][1], "--query-modality", "audio", "-k", "4", "--json", str(tmp_path / "h.json"),
                              "--parquet", str(tmp_path / "h.parquet"), "--html", str(tmp_path / "h.html")])
    assert res.exit_code == 0, res.output
    hits = json.loads((tmp_path / "h.json").read_text())
    assert [h["rank"] for h in hits] == [1, 2, 3, 4] and pd.read_parquet(tmp_path / "h.parquet")["id"].tolist() == [
        h["id"] for h in hits]
    m = ConnectedModel.from_pipeline(project, "K")
    brute = (m.embed_audio(files["audio"][1]) @ m.embed_image(sorted(str(p) for p in folder.glob("*.png"))).T)[0]
    assert [h["score"] for h in hits] == pytest.approx(sorted(brute, reverse=True)[:4], abs=1e-5)
    assert all(h["id"] in res.output for h in hits) and (tmp_path / "h.html").is_file()
    res = runner.invoke(app, ["search", "--root", str(project), "--index", str(tmp_path / "idx"), "--text", "a red bell"])
    assert res.exit_code == 0 and res.output.count(".png") == 5 * 2  # id and item columns
    res = runner.invoke(app, ["search", "--root", str(project), "--index", str(tmp_path / "idx"), "--query",
                              str(tmp_path / "missing.wav"), "--query-modality", "audio"],
                        env={"COLUMNS": "400"})  # typer's error box wraps at the terminal width
    assert res.exit_code == 2 and "no such file" in res.output
    res = runner.invoke(app, ["search", "--root", str(project), "--index", str(tmp_path / "idx"), "--variant", "Z",
                              "--text", "x"])
    assert res.exit_code != 0 and "trained unit checkpoint not found" in str(res.exception)


def test_cli_index_failure_rate_stop_is_one_line(files, tmp_path):
    """Issue 23, point 7: `cmcr index` over 21 images with one unreadable file stopped with a 40-line traceback.
    Now: one line naming how many failed, the failures file and the option that keeps going."""
    import shutil
    import subprocess
    import sys

    project = demo_project(files, tmp_path)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(20):
        shutil.copy(files["image"][i % 7], folder / f"{i:02d}.png")
    (folder / "20.png").write_bytes(b"not a png")
    cli = [sys.executable, "-m", "cmcr", "index", "--root", str(project), "--modality", "image", "--folder", str(folder)]
    out = subprocess.run(cli + ["--out", str(tmp_path / "idx")], capture_output=True, text=True)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("cmcr: error: clip_image: 1 of 21 items failed (4.8% > 1.0%); see "), last
    assert str(tmp_path / "idx" / "raw" / "clip_image.failures.parquet") in last
    assert last.endswith("to keep going without them, raise --max-failure-rate (e.g. to 0.048)")
    out = subprocess.run(cli + ["--out", str(tmp_path / "idx"), "--max-failure-rate", "0.048"], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "20 image items indexed, 1 failed" in out.stdout, out.stderr


def test_read_only_maps_raise_no_numpy_writable_warning(tmp_path):
    """Issue 24, point 5: `UserWarning: The given NumPy array is not writable` on every evaluation and search came
    from tensors made of read-only memory maps. PyTorch warns once per process, so this runs in a fresh one,
    with every warning an error: top-k over a memory-mapped index, the API's projection of a memory map, and
    the evaluation loader of a benchmark's memory-mapped sets."""
    import subprocess
    import sys

    script = tmp_path / "check.py"
    script.write_text(f"""
import numpy as np, pandas as pd, torch
from pathlib import Path
from cmcr.search import top_k
from cmcr.evaluation import load_benchmark
root = Path({str(tmp_path)!r})
x = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
for space, name in (("clap", "eval_audio@demo"), ("clip", "eval_image@demo")):
    (root / "emb" / space).mkdir(parents=True, exist_ok=True)
    np.save(root / "emb" / space / f"{{name}}.npy", x)
    pd.DataFrame({{"pair_id": np.arange(50)}}).to_parquet(root / "emb" / space / f"{{name}}.parquet")
index = np.load(root / "emb" / "clip" / "eval_image@demo.npy", mmap_mode="r")
scores, rows = top_k(index[:2], index, 3, chunk=16)
assert rows[:, 0].tolist() == [0, 1]
data, coverage = load_benchmark(root / "emb", "retrieval", "demo")
print("ok")
""")
    out = subprocess.run([sys.executable, "-W", "error", str(script)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_examples_name_items_by_file_and_class():
    """Issue 24, point 5: examples.html named a query by a bare pair id; now by its file and its classes. Issue 32,
    point 4: the classes in words (the world's size and condition indices were printed as codes, "size 0 ·
    condition 2"), and a point cloud by its concept only (a shape shows neither size nor condition)."""
    from cmcr.examples import describe
    from cmcr.world import class_names

    table = pd.DataFrame({"pair_id": [7, 8], "path": ["a/snd_0007.wav", "b/x.png"], "concept": [2, 0],
                          "size": ["small", "big"], "condition": ["old", "new"]})
    assert describe(table, 0, "/w/a/snd_0007.wav", {"concept": {2: "bird"}}) == ("snd_0007.wav",
                                                                                  ["bird · size small · condition old"])
    assert describe(table, 1, None) == ("pair 8", ["concept 0 · size big · condition new"])
    assert describe(table[["path"]], 1, None) == ("row 1", [])
    coded = pd.DataFrame({"pair_id": [3], "concept": [1], "size": [0], "condition": [2]})
    names = class_names()
    assert names["size"] == {0: "small", 1: "medium-sized", 2: "large"} and names["condition"][2] == "old"
    assert describe(coded, 0, None, names) == ("pair 3", [f"{names['concept'][1]} · small · old"])
    assert describe(coded, 0, None, names, columns=("concept",)) == ("pair 3", [names["concept"][1]])


def test_example_rows_mark_the_exact_pair_and_the_same_concept_apart(tmp_path):
    """Issue 32, point 4: the audio→3D examples said "a hit of the same concept is right too" but marked every
    same-concept hit ✗. Now: ✓ exact pair, ✓ same concept (another mark), ✗; each query's header counts how many of
    its top k share its concept and where its own pair ranks; clouds are described by concept only."""
    from cmcr.examples import MARKS, Renderer, _retrieval_rows

    # sound 0 (concept 5): its own cloud (row 2) second, a cloud of its concept (row 0) first, one of another (row 1)
    audio = torch.tensor([[1.0, 0.0, 0.0]])
    clouds = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1, 0.0], [0.0, 1.0, 0.0], [1.0, 0.3, 0.0],
                                                         [-1.0, 0.0, 0.0]]), dim=1)
    ta = pd.DataFrame({"pair_id": [12], "concept": [5], "size": [2], "condition": [1]})
    tp = pd.DataFrame({"pair_id": [10, 11, 12, 13], "concept": [5, 4, 5, 5], "size": [0, 1, 1, 2], "condition": [0] * 4})
    page = _retrieval_rows((audio, ta, "audio", "A"), (clouds, tp, "points", "3D"), Renderer(tmp_path, tmp_path),
                           lambda path: path, count=1, k=3, seed=0, dataset="demo",
                           names={"concept": {4: "drum", 5: "bell"}, "size": {2: "large"}, "condition": {1: "used"}},
                           relevant=("concept",), both=False, described={"points": ("concept",)})
    assert "A→3D demo: 2 of the top 3 share its concept; its own pair ranks #2 of 4" in page
    hits = page.split('<span class="arrow">→</span>')[1].split("</figure>")
    assert MARKS["concept"] in hits[0] and MARKS[True] in hits[1] and MARKS[False] in hits[2]
    assert "✓ same concept" in MARKS["concept"] and "✓ exact pair" in MARKS[True]
    assert "bell · large · used" in page  # the sound: concept, size, condition in words
    assert "#1  0.995  pair 10<br>bell<br>" in hits[0]  # a cloud: its concept in words, nothing else
    assert "size" not in page.split('<span class="arrow">→</span>')[1]  # a cloud shows neither size nor condition


def test_a_graph_checkpoint_searches_point_clouds_with_a_sound(files, tmp_path):
    """Issue 22: `cmcr index/search --graph` — an `extend` graph (CLIP base; CLAP and ULIP leaves with Ex-MCR
    projectors) embeds sounds and clouds into one space; the API equals projector + L2 of the raw embedding; a
    modality the graph does not embed, and an index built with another model, are refused."""
    import shutil

    import yaml
    from typer.testing import CliRunner

    from cmcr.cli import app
    from cmcr.exmcr import ExtendProjector, Identity
    from cmcr.graph import Graph, GraphResult

    torch.manual_seed(1)
    graph = Graph("extend", "extend", ("clip", "clap", "ulip"), (CLIP_CLAP, CLIP_ULIP), "clip")
    modules = torch.nn.ModuleDict({"clip": Identity(DIM), "clap": ExtendProjector(DIM, 40, DIM),
                                   "ulip": ExtendProjector(DIM, 40, DIM)}).eval()
    project = demo_project(files, tmp_path)
    shutil.copy(files["root"] / "ulip.pt", project / "models" / "spaces" / "ulip.pt")
    save_torch(project / "models" / "graphs" / "extend" / "seed0.pt",
               GraphResult(graph, modules, {"clip_clap": ConnectionConfig(CLIP_CLAP)}, {}).checkpoint())
    m = ConnectedModel.from_pipeline(project, graph="extend")
    assert m.spaces_for("audio") == ["clap"] and m.spaces_for("text") == ["clip"] and m.dim == DIM
    raw = m.encode_raw("ulip", "points", files["points"][:3])
    with torch.no_grad():
        want = modules["ulip"].embed(torch.from_numpy(raw)).numpy()
    assert np.abs(m.embed_points(files["points"][:3]) - want).max() <= 1e-6
    runner = CliRunner()
    folder = tmp_path / "clouds"
    folder.mkdir()
    for p in files["points"]:
        shutil.copy(p, folder)
    res = runner.invoke(app, ["index", "--root", str(project), "--graph", "extend", "--out", str(tmp_path / "idx"),
                              "--modality", "points", "--folder", str(folder), "--pattern", "*.npy"])
    assert res.exit_code == 0, res.output
    assert "7 points items indexed, 0 failed" in res.output
    res = runner.invoke(app, ["search", "--root", str(project), "--graph", "extend", "--index", str(tmp_path / "idx"),
                              "--query", files["audio"][2], "--query-modality", "audio", "-k", "3",
                              "--json", str(tmp_path / "h.json"), "--html", str(tmp_path / "h.html")])
    assert res.exit_code == 0, res.output
    hits = json.loads((tmp_path / "h.json").read_text())
    scores = m.embed_audio(files["audio"][2]) @ m.embed_points(files["points"]).T
    assert [Path(h["item"]).name for h in hits] == [Path(files["points"][i]).name for i in np.argsort(-scores[0])[:3]]
    assert "graph extend" in (tmp_path / "h.html").read_text()
    res = runner.invoke(app, ["search", "--root", str(project), "--index", str(tmp_path / "idx"), "--query",
                              files["audio"][2], "--query-modality", "audio"])  # variant K cannot embed the index's clouds
    assert res.exit_code != 0 and "the clip_clap connection (clip_clap) embeds image, text, audio, not points" in str(res.exception)
    paired = Graph("p", "paired", ("clap", "ulip"), (), None, {"dataset": "demo", "modalities": {"clap": "audio", "ulip": "points"}})
    pm = ConnectedModel(GraphResult(paired, torch.nn.ModuleDict({s: modules[s] for s in ("clap", "ulip")}), {}, {}),
                        {s: m.spaces[s] for s in ("clap", "ulip")})
    with pytest.raises(ValueError, match="graph p embeds audio, points, not text"):
        pm.embed_text("a dog")


def test_a_byo_graph_projects_indexes_and_searches_precomputed_embeddings(tmp_path):
    """Issue 32, point 2: a graph trained in setup byo over a space of your own (``skin``, its ``pressure``
    modality) could not be used: `cmcr search --graph` refused byo, `cmcr project --space skin` was not a choice,
    `cmcr project` on a graph checkpoint was a raw traceback. Now: ConnectedModel.project(space, modality, array),
    `cmcr project --graph/--checkpoint`, `cmcr index --embeddings` and `cmcr search --query-embeddings` work with
    no encoder, and results carry the rows' own columns."""
    import yaml
    from typer.testing import CliRunner

    from cmcr.api import EmbedError
    from cmcr.cli import app
    from cmcr.config import Connection
    from cmcr.exmcr import ExtendProjector, Identity
    from cmcr.graph import Graph, GraphResult

    torch.manual_seed(3)
    link = Connection("clip_touch", ("clip", "skin"), "image", {"clip": "text", "skin": "pressure"})
    graph = Graph("touch_into_clip", "extend", ("clip", "skin"), (link,), "clip")
    modules = torch.nn.ModuleDict({"clip": Identity(16), "skin": ExtendProjector(12, 20, 16)}).eval()
    project = tmp_path / "project"
    (project / "models" / "graphs" / "touch_into_clip").mkdir(parents=True)
    (project / "params.yaml").write_text(yaml.safe_dump({"setup": "byo", "seeds": [0]}))
    # the three keys of the overview plan the API reads (setup, seeds, encoders); validate writes all of it
    (project / "data" / "params").mkdir(parents=True)
    (project / "data" / "params" / "overview.json").write_text(json.dumps(
        {"format": "cmcr.plan/1", "setup": "byo", "seeds": [0], "encoders": {}}))
    checkpoint = project / "models" / "graphs" / "touch_into_clip" / "seed0.pt"
    save_torch(checkpoint, GraphResult(graph, modules, {"clip_touch": ConnectionConfig(CLIP_CLAP)}, {}).checkpoint())
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((9, 12)).astype(np.float32)
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    with torch.no_grad():
        want = modules["skin"].embed(torch.from_numpy(raw)).numpy()

    m = ConnectedModel.from_pipeline(project, graph="touch_into_clip")  # byo: no encoders, projection only
    assert m.spaces == {} and m.modalities() == {"image": ["clip"], "text": ["clip"], "pressure": ["skin"]}
    assert np.abs(m.project("skin", "pressure", raw) - want).max() <= 1e-6
    with pytest.raises(EmbedError, match="graph touch_into_clip embeds pressure with skin, not clip"):
        m.project("clip", "pressure", raw)
    with pytest.raises(EmbedError, match="skin projector takes 12-d embeddings; these are 16-d"):
        m.project("skin", "pressure", np.zeros((2, 16), np.float32))
    with pytest.raises(EmbedError, match="no skin encoder here"):
        m.embed("pressure", ["a.bin"])

    np.save(tmp_path / "skin.npy", raw)
    pd.DataFrame({"id": [f"s{i}" for i in range(9)], "material": ["silk", "wood", "felt"] * 3}).to_parquet(
        tmp_path / "skin.parquet")
    runner = CliRunner()
    for source in (["--root", str(project), "--graph", "touch_into_clip"], ["--checkpoint", str(checkpoint)]):
        res = runner.invoke(app, ["project", *source, "--space", "skin", "--modality", "pressure", "--embeddings",
                                  str(tmp_path / "skin.npy"), "--out", str(tmp_path / "out.npy")])
        assert res.exit_code == 0, res.output
        assert np.abs(np.load(tmp_path / "out.npy") - want).max() <= 1e-6
        assert pd.read_parquet(tmp_path / "out.parquet").equals(pd.read_parquet(tmp_path / "skin.parquet"))
    res = runner.invoke(app, ["project", "--checkpoint", str(checkpoint), "--space", "touch", "--embeddings",
                              str(tmp_path / "skin.npy"), "--out", str(tmp_path / "o.npy")])
    message = " ".join(res.output.replace("│", " ").split())  # typer's box wraps the line
    assert res.exit_code == 2 and "'touch' is not a space of graph touch_into_clip: its spaces are clip, skin" in message

    res = runner.invoke(app, ["index", "--root", str(project), "--graph", "touch_into_clip", "--modality", "pressure",
                              "--embeddings", str(tmp_path / "skin.npy"), "--space", "skin", "--id-column", "id",
                              "--out", str(tmp_path / "idx")])
    assert res.exit_code == 0, res.output
    assert "9 skin pressure embeddings indexed" in res.output
    images = rng.standard_normal((2, 16)).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    np.save(tmp_path / "q.npy", images)
    res = runner.invoke(app, ["search", "--root", str(project), "--graph", "touch_into_clip", "--index",
                              str(tmp_path / "idx"), "--query-embeddings", str(tmp_path / "q.npy"), "--space", "clip",
                              "--query-modality", "image", "-k", "3", "--json", str(tmp_path / "h.json")])
    assert res.exit_code == 0, res.output
    assert res.output.split()[:6] == ["query", "rank", "score", "id", "item", "material"]  # the rows' own columns
    hits = pd.DataFrame(json.loads((tmp_path / "h.json").read_text()))
    scores = images @ want.T  # the clip base is the identity (L2): image rows are already in the space
    for q in (0, 1):
        top = np.argsort(-scores[q])[:3]
        assert hits[hits["query"] == q]["id"].tolist() == [f"s{i}" for i in top]
        assert hits[hits["query"] == q]["material"].tolist() == [["silk", "wood", "felt"][i % 3] for i in top]
