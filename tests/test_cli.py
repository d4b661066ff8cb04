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
    from cmcr.train import load_checkpoint

    loaded = load_checkpoint(tmp_path / "p.pt")
    assert loaded.config.train.epochs == 2
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
    assert res.exit_code != 0 and "variance" in res.output


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
