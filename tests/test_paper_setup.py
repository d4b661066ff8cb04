"""setup: paper — the texts and extract stages with the real encoder architectures (random weights,
allowed explicitly for this test) on the official release's real files, sharded and resumable."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_paper_setup_extracts_with_real_encoders(official_dir, tmp_path):
    shutil.copytree(ROOT / "stages", tmp_path / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    data = tmp_path / "user"
    data.mkdir()
    (data / "coco.json").write_text(json.dumps({"annotations": [{"caption": "a dog on a beach"},
                                                                {"caption": "a red train"}]}))
    pd.DataFrame({"caption": ["a dog barks", "a train passes"]}).to_csv(data / "audiocaps.csv", index=False)
    (data / "broken.jpeg").write_bytes(b"\xff\xd8 not really")
    photos = [str(official_dir / f"{n}.jpeg") for n in ("BBQ", "toilet", "train")]
    pd.DataFrame({"path": photos + [str(data / "broken.jpeg")]}).to_parquet(data / "images.parquet")
    pd.DataFrame({"path": [str(official_dir / f"{n}.wav") for n in ("BBQ", "toilet")]}).to_parquet(data / "audio.parquet")
    pd.DataFrame({"path": [str(official_dir / f"{n}.npy") for n in ("BBQ", "toilet")]}).to_parquet(data / "points.parquet")
    pd.DataFrame({"file": photos[:2], "pair_id": [0, 1]}).to_parquet(data / "eval_images.parquet")

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["setup"] = "paper"
    params["extraction"]["max_failure_rate"] = 0.5
    params["paper"]["encoders"] = {"clip": {"allow_random": True, "device": "cpu"},
                                   "clap": {"allow_random": True, "device": "cpu"},
                                   "ulip": {"allow_random": True, "trust_pickled_points": True, "device": "cpu"}}
    params["paper"]["texts"]["files"].update(coco=str(data / "coco.json"), audiocaps=str(data / "audiocaps.csv"))
    params["paper"]["sets"] = {
        "clip": {"image": {"manifest": str(data / "images.parquet")},
                 "eval_image@AVE": {"manifest": str(data / "eval_images.parquet"), "column": "file"}},
        "clap": {"audio": {"manifest": str(data / "audio.parquet")}},
        "ulip": {"image": {"manifest": str(data / "images.parquet")}, "points": {"manifest": str(data / "points.parquet")}},
    }
    params["paper"]["extraction"] = {"batch_size": 2, "num_workers": 0, "shard_size": 2}
    params["benchmarks"] = {"retrieval": ["AVE"], "localization": [], "counterfactual": [], "zeroshot3d": []}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def stage(*args, ok=True):
        res = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert (res.returncode == 0) == ok, res.stderr[-3000:]
        return res.stderr

    # the demo's paired-data references name the dataset 'demo': with setup paper the validate stage asks for
    # their manifests (before anything runs); this user has no true pairs and removes them
    err = stage("stages/validate.py", ok=False)
    assert "variants.paired.paired: 'demo' needs the manifests paper.sets.clip.paired_image@demo, " \
           "paper.sets.clap.paired_audio@demo" in err, err
    params["variants"] = {k: v for k, v in params["variants"].items() if "paired" not in v}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    err = stage("stages/validate.py", ok=False)  # the same for the audio–3D paired-data reference graph
    assert "graphs.paired_audio_3d.pairs: 'demo' needs the manifests paper.sets.clap.paired_audio_points@demo" in err, err
    params["graphs"].pop("paired_audio_3d")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stage("stages/validate.py")
    stage("stages/texts.py")
    texts = pd.read_parquet(tmp_path / "data/texts.parquet")
    assert texts["source"].tolist() == ["image-text", "image-text", "audio-text", "audio-text"]
    for space in ("clip", "ulip"):
        stage("stages/extract.py", space)
    # CLAP text needs the real roberta-base tokenizer, absent offline: a clear refusal, not garbage
    assert "tokenizer is not available" in stage("stages/extract.py", "clap", ok=False)
    emb = tmp_path / "data" / "embeddings"
    assert np.load(emb / "clip/text.npy").shape == (4, 512)
    assert np.load(emb / "clip/image.npy").shape == (3, 512)  # the broken JPEG is a recorded failure
    failures = pd.read_parquet(emb / "clip/failures.parquet")
    assert failures["item"].str.endswith("broken.jpeg").tolist() == [True] and failures["set"].tolist() == ["image"]
    assert pd.read_parquet(emb / "clip/eval_image@AVE.parquet")["pair_id"].tolist() == [0, 1]
    assert np.load(emb / "ulip/points.npy").shape == (2, 512) and np.load(emb / "ulip/image.npy").shape == (3, 512)
    log = stage("stages/extract.py", "ulip")  # rerun: every shard is already there
    assert "2 already done" in log and "0 computed" in log
    points = np.load(emb / "ulip/points.npy")
    # other weights (here another random init): the old shards are stale, never reused
    params["paper"]["encoders"]["ulip"]["seed"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # the plans it changes: ulip's extraction and the overview (the API builds encoders from it); clip's, clap's stay
    assert "2 changed (spaces/ulip.json, overview.json)" in stage("stages/validate.py")
    log = stage("stages/extract.py", "ulip")
    assert "0 already done" in log and "other run(s)" in log
    assert not np.allclose(np.load(emb / "ulip/points.npy"), points)
