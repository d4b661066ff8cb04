"""The CLI end to end on files: aggregate → train → evaluate, numbers equal the library's."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from cmcr.cli import app, parse_overrides
from cmcr.config import MemoryConfig
from cmcr.memory import aggregate_memory
from conftest import toy_world, unit

runner = CliRunner()


def small_params(tmp_path: Path) -> Path:
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    params["projector"].update(in_dims={"clip": 32, "clap": 32}, hidden_dim=64, out_dim=32)
    params["memory"].update(temperature=0.05)
    params["loss"].update(shared_temperature=0.05, pseudo_temperature=0.05)
    params["train"].update(epochs=3, batch_size=256, lr=3e-3, device="cpu")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_parse_overrides_like_dvc():
    assert parse_overrides(["noise.var=0.002", "loss.intra_spaces=[clip]", "train.epochs=3"]) == {
        "noise": {"var": 0.002}, "loss": {"intra_spaces": ["clip"]}, "train": {"epochs": 3}}


def test_aggregate_train_evaluate(tmp_path):
    params = small_params(tmp_path)
    q, m = unit(40, 32, seed=1), unit(90, 32, seed=2)
    np.save(tmp_path / "q.npy", q.numpy())
    np.save(tmp_path / "m.npy", m.numpy())
    res = runner.invoke(app, ["aggregate", "--queries", str(tmp_path / "q.npy"), "--memory", str(tmp_path / "m.npy"),
                              "--out", str(tmp_path / "agg.npy"), "-p", str(params), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    expected = aggregate_memory(q, m, MemoryConfig(temperature=0.05), device="cpu")
    np.testing.assert_allclose(np.load(tmp_path / "agg.npy"), expected.numpy(), atol=1e-6)
    assert not list(tmp_path.glob(".agg.npy*"))  # no temporary left behind

    data, ev = toy_world()
    folder = tmp_path / "emb"
    folder.mkdir()
    for name, mat in {"clip_text": data.shared["clip"], "clap_text": data.shared["clap"],
                      "clip_image_from_text": data.memory["clip"], "clap_audio_from_text": data.memory["clap"],
                      "clap_audio": ev["clap_audio"], "clip_image": ev["clip_image"]}.items():
        np.save(folder / f"{name}.npy", torch.as_tensor(mat).numpy())
    res = runner.invoke(app, ["train", "--embeddings", str(folder), "--out", str(tmp_path / "p.pt"), "-p", str(params),
                              "-S", "train.epochs=2", "--history", str(tmp_path / "h.json")])
    assert res.exit_code == 0, res.output
    history = json.loads((tmp_path / "h.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    res = runner.invoke(app, ["evaluate-retrieval", "--checkpoint", str(tmp_path / "p.pt"),
                              "--first-space", "clap", "--first", str(folder / "clap_audio.npy"),
                              "--second-space", "clip", "--second", str(folder / "clip_image.npy"),
                              "--out", str(tmp_path / "m.json")])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    from cmcr.metrics.retrieval import bidirectional_retrieval
    from cmcr.graph import load_unit

    loaded = load_unit(tmp_path / "p.pt")  # `cmcr train` writes the connection as a one-link graph
    assert loaded.graph.mode == "joint" and loaded.configs["clip_clap"].train.epochs == 2
    with torch.no_grad():
        direct = bidirectional_retrieval(loaded.projectors["clap"].embed(ev["clap_audio"]),
                                         loaded.projectors["clip"].embed(ev["clip_image"]))
    assert set(metrics) == {"A2I", "I2A"}
    for direction in metrics:
        assert metrics[direction] == pytest.approx(direct[direction])


def test_cli_errors_are_clear(tmp_path):
    params = small_params(tmp_path)
    res = runner.invoke(app, ["train", "--embeddings", str(tmp_path), "--out", str(tmp_path / "p.pt"), "-p", str(params)])
    assert res.exit_code != 0
    assert "embedding file not found" in str(res.exception) and "clip_text.npy" in str(res.exception)
    res = runner.invoke(app, ["config", "-p", str(params), "-S", "noise.var=-1"])
    assert res.exit_code != 0 and "variance" in str(res.exception)


def test_errors_are_one_line_and_choices_are_checked(tmp_path):
    """Finding 8: CLI errors printed 36-line tracebacks; --connection / --space took any string."""
    import subprocess
    import sys

    params = small_params(tmp_path)
    cli = [sys.executable, "-m", "cmcr"]
    for args, needle in ((["config", "-p", str(params), "-S", "noise.var=-1"], "noise.var (sigma^2, a variance) must be"),
                         (["config", "-p", str(tmp_path / "nope.yaml")], "nope.yaml: params file not found"),
                         (["train", "--embeddings", str(tmp_path), "--out", str(tmp_path / "p.pt"), "-p", str(params)],
                          "clip_text.npy")):
        out = subprocess.run(cli + args, capture_output=True, text=True)
        assert out.returncode == 1, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("cmcr: error: ") and needle in lines[0], out.stderr
    # --connection names a link params declare (every link is data): an unknown one is one line listing them
    out = subprocess.run(cli + ["config", "-p", str(params), "--connection", "clip_audio"], capture_output=True, text=True)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1 and lines[0].startswith("cmcr: error: unknown connection 'clip_audio'")
    assert "['clip_clap', 'clip_ulip']" in lines[0] and "connections.clip_audio.link" in lines[0], out.stderr
    # --space takes any space of the checkpoint (a graph's own spaces too; issue 32): a missing checkpoint is one line
    out = subprocess.run(cli + ["project", "--checkpoint", str(tmp_path / "x.pt"), "--space", "audio", "--embeddings",
                                "e.npy", "--out", "o.npy"], capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.strip() == f"cmcr: error: trained unit checkpoint not found: {tmp_path / 'x.pt'}"


def test_cli_train_runs_at_the_training_scale(tmp_path):
    """Issue 32 (1): `cmcr train` resolves params' scale as the pipeline does. 2,000 toy texts, scale auto with
    20 steps from -S train.epochs=1 × batch 256 (a group -S stays the connection's own): ⌊2000 · 1 / 20⌋ = 100 is
    below min_batch 128 → batch 128, 16 batches per epoch, ⌈20 / 16⌉ = 2 epochs."""
    params = small_params(tmp_path)
    data, _ = toy_world()
    for name, mat in {"clip_text": data.shared["clip"], "clap_text": data.shared["clap"],
                      "clip_image_from_text": data.memory["clip"], "clap_audio_from_text": data.memory["clap"]}.items():
        np.save(tmp_path / f"{name}.npy", torch.as_tensor(mat).numpy())
    res = runner.invoke(app, ["train", "--embeddings", str(tmp_path), "--out", str(tmp_path / "p.pt"), "-p", str(params),
                              "-S", "scale.mode=auto", "-S", "scale.auto.steps=20", "-S", "train.epochs=1"])
    assert res.exit_code == 0, res.output
    train = torch.load(tmp_path / "p.pt", weights_only=True)["configs"]["clip_clap"]["train"]
    assert (train["epochs"], train["batch_size"], train["auto_steps"], train["auto_min_batch"]) == (2, 128, 20, 128)
    res = runner.invoke(app, ["train", "--embeddings", str(tmp_path), "--out", str(tmp_path / "q.pt"), "-p", str(params),
                              "-S", "train.epochs=1"])  # the committed params: setup demo → small; 1 × 256 set on purpose
    train = torch.load(tmp_path / "q.pt", weights_only=True)["configs"]["clip_clap"]["train"]
    assert (train["epochs"], train["batch_size"], train["auto_steps"]) == (1, 256, 0)


def test_config_of_a_variant_is_what_the_pipeline_trains(tmp_path):
    """Finding 2: `cmcr config` printed 36 epochs / batch 10240 while the demo trained 10 / 256."""
    root_params = Path(__file__).resolve().parents[1] / "params.yaml"
    demo = yaml.safe_load(root_params.read_text())["scale"]["small"]
    res = runner.invoke(app, ["config", "-p", str(root_params), "--variant", "K"])
    assert res.exit_code == 0, res.output
    spec = json.loads(res.output)
    assert (spec["config"]["train"]["epochs"], spec["config"]["train"]["batch_size"]) == (demo["epochs"], demo["batch_size"])
    assert spec["scale"] == {"mode": "small", "applied": demo, "not_applied": []} and spec["group"] == "table5"
    res = runner.invoke(app, ["config", "-p", str(root_params), "--variant", "K", "-S", "train.epochs=3"])
    spec = json.loads(res.output)
    assert spec["config"]["train"]["epochs"] == 3 and spec["config"]["train"]["batch_size"] == demo["batch_size"]
    assert "train.epochs=3 kept" in spec["scale"]["not_applied"][0]
    res = runner.invoke(app, ["config", "-p", str(root_params), "--variant", "I"])
    assert json.loads(res.output)["config"]["memory"]["mode"] == "argmax"


def test_train_reads_the_pipeline_layout_and_pairs_texts_by_id(tmp_path):
    """Finding 1 / 8: `cmcr train` wanted a flat folder; texts listed in another order by the second space
    (byo) must pair by text_id — here CLAP's texts are reversed, and training equals the aligned run."""
    import pandas as pd

    params = small_params(tmp_path)
    data, _ = toy_world(n_train=600)
    n = len(data.shared["clip"])
    ids = [f"t{i}" for i in range(n)]
    layouts = {}
    for name, order in (("aligned", np.arange(n)), ("reversed", np.arange(n)[::-1])):
        emb, agg = tmp_path / name / "embeddings", tmp_path / name / "aggregated"
        for space, rows in (("clip", np.arange(n)), ("clap", order)):
            (emb / space).mkdir(parents=True, exist_ok=True)
            np.save(emb / space / "text.npy", torch.as_tensor(data.shared[space]).numpy()[rows])
            pd.DataFrame({"text_id": [ids[i] for i in rows]}).to_parquet(emb / space / "text.parquet")
        agg.mkdir(parents=True)
        np.save(agg / "clip_image_from_text.npy", torch.as_tensor(data.memory["clip"]).numpy())
        np.save(agg / "clap_audio_from_text.npy", torch.as_tensor(data.memory["clap"]).numpy()[order])
        out = tmp_path / f"{name}.pt"
        res = runner.invoke(app, ["train", "--embeddings", str(emb), "--aggregated", str(agg), "--out", str(out),
                                  "-p", str(params), "-S", "train.epochs=1"])
        assert res.exit_code == 0, res.output
        layouts[name] = torch.load(out, weights_only=True)
    a, b = layouts["aligned"]["projectors"], layouts["reversed"]["projectors"]
    for space in a:
        for key in a[space]["state"]:
            assert torch.equal(a[space]["state"][key], b[space]["state"][key]), (space, key)
    # without the id column nothing can be paired: an error naming the files, not a silent row-by-row pairing
    pd.DataFrame({"text": ["x"] * n}).to_parquet(tmp_path / "reversed" / "embeddings" / "clap" / "text.parquet")
    res = runner.invoke(app, ["train", "--embeddings", str(tmp_path / "reversed" / "embeddings"), "--aggregated",
                              str(tmp_path / "reversed" / "aggregated"), "--out", str(tmp_path / "x.pt"), "-p", str(params)])
    assert res.exit_code != 0 and "no common id column" in str(res.exception)


def test_version_and_python_m():
    import subprocess
    import sys

    from typer.testing import CliRunner

    from cmcr import __version__
    from cmcr.cli import app

    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"cmcr {__version__}"
    out = subprocess.run([sys.executable, "-m", "cmcr", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"cmcr {__version__}"
    assert "convert-weights" in subprocess.run([sys.executable, "-m", "cmcr", "--help"], capture_output=True,
                                                text=True).stdout


def test_stale_outputs_are_summarised_and_cleaned_by_a_command(tmp_path):
    """Issue 23, point 6: keeping rows K, C, F, J made validate log one ~9,000-character line listing 60 files
    twice. Now: a summary (how many files of which variants) and `cmcr clean --stale`."""
    import subprocess
    import sys

    import yaml

    from conftest import copy_project

    copy_project(tmp_path)
    p = yaml.safe_load((tmp_path / "params.yaml").read_text())
    every = list(p["variants"])
    for name in every:
        for seed in (0, 1, 2):
            for folder, suffix in (("models/connections", ".pt"), ("models/history", ".json")):
                (tmp_path / folder / name).mkdir(parents=True, exist_ok=True)
                (tmp_path / folder / name / f"seed{seed}{suffix}").write_text("x")
    (tmp_path / "models/connections/K/seed7.pt").write_text("x")  # a seed no longer trained of a kept variant
    p["variants"] = {k: v for k, v in p["variants"].items() if k in ("K", "C", "F", "J")}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    removed = len(every) - 4
    out = subprocess.run([sys.executable, "stages/validate.py"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if "WARNING" in line and "optimiser steps" not in line]
    assert len(warnings) == 1 and len(warnings[0]) < 600, warnings  # (the other: the demo's few steps, one line)
    assert f"{removed * 6 + 1} checkpoint/history file(s) of {removed} trained unit(s) no longer in params.yaml: A (3 seeds)" \
        in warnings[0] and "seeds no longer trained of 1 unit(s): K (1 seed)" in warnings[0]
    assert "cmcr clean --stale" in warnings[0] and "seed0.pt" not in warnings[0]

    res = runner.invoke(app, ["clean", "--stale", "--root", str(tmp_path), "--dry-run"])
    assert res.exit_code == 0 and res.output.count("would remove ") == removed * 6 + 1, res.output
    assert (tmp_path / "models/connections/A/seed0.pt").exists()
    res = runner.invoke(app, ["clean", "--stale", "--root", str(tmp_path)])
    assert res.exit_code == 0 and res.output.count("removed ") == removed * 6 + 1, res.output
    left = sorted(str(f.relative_to(tmp_path)) for f in (tmp_path / "models").rglob("*") if f.is_file())
    assert left == sorted(f"models/{folder}/{v}/seed{s}{suffix}" for v in ("K", "C", "F", "J") for s in (0, 1, 2)
                          for folder, suffix in (("connections", ".pt"), ("history", ".json")))
    assert not (tmp_path / "models/connections/A").exists()  # emptied variant folders go too
    res = runner.invoke(app, ["clean", "--stale", "--root", str(tmp_path)])
    assert res.exit_code == 0 and "no stale checkpoints or histories" in res.output
