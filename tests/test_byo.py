"""setup: byo — the validate stage checks the layout of byo/embeddings before anything runs (issue 24, point 4)."""

import numpy as np
import pandas as pd
import pytest
import yaml

from cmcr.artifacts import ArtifactError
from cmcr.validation import check_byo_layout, pipeline_sets
from conftest import ROOT_DIR


def write_set(folder, space, name, rows, table_rows=None):
    (folder / space).mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(0).standard_normal((rows, 8)).astype(np.float32)
    np.save(folder / space / f"{name}.npy", x / np.linalg.norm(x, axis=1, keepdims=True))
    pd.DataFrame({"item_id": np.arange(rows if table_rows is None else table_rows)}).to_parquet(
        folder / space / f"{name}.parquet")


@pytest.fixture
def params():
    p = yaml.safe_load((ROOT_DIR / "params.yaml").read_text())
    p["setup"] = "byo"
    p["variants"] = {"K": p["variants"]["K"]}  # the audio-visual connection only
    p["graphs"] = {"av": {"mode": "extend", "base": "clip", "spaces": ["clip", "clap"], "links": ["clip_clap"]}}
    p["benchmarks"] = {"retrieval": ["AVE"], "localization": [], "counterfactual": [], "zeroshot3d": []}
    return p


def test_required_sets_rows_and_half_sets_are_checked(params, tmp_path):
    for space, name in (("clip", "text"), ("clap", "text"), ("clip", "image")):
        write_set(tmp_path, space, name, 5)
    with pytest.raises(ArtifactError, match=r"^setup byo: .*clap/audio.npy is missing \(required\); layout in "
                                            r"byo/embeddings/README.md$"):
        check_byo_layout(pipeline_sets(params), tmp_path)
    write_set(tmp_path, "clap", "audio", 6, table_rows=4)
    with pytest.raises(ArtifactError, match=r"clap/audio.npy has 6 rows but .*clap/audio.parquet lists 4"):
        check_byo_layout(pipeline_sets(params), tmp_path)
    write_set(tmp_path, "clap", "audio", 6)
    # the optional AVE sets are absent: skipped, not required; each set's rows (the validate stage's unit sizes)
    assert check_byo_layout(pipeline_sets(params), tmp_path) == {("clip", "text"): 5, ("clap", "text"): 5, ("clip", "image"): 5,
                                                  ("clap", "audio"): 6}
    write_set(tmp_path, "clip", "eval_image@AVE", 3)
    (tmp_path / "clip" / "eval_image@AVE.parquet").unlink()
    with pytest.raises(ArtifactError, match=r"eval_image@AVE.parquet is missing \(its pair is there\)"):
        check_byo_layout(pipeline_sets(params), tmp_path)
    (tmp_path / "clip" / "eval_image@AVE.parquet").write_bytes(b"not parquet")
    with pytest.raises(ArtifactError, match="eval_image@AVE.parquet: not a readable Parquet table"):
        check_byo_layout(pipeline_sets(params), tmp_path)


def test_a_temporary_experiment_workspace_is_named(params, tmp_path):
    """`dvc exp run --temp` copies only tracked files: the byo embeddings are missing there, and the error says why."""
    with pytest.raises(ArtifactError, match=r"clip/text.npy is missing .* temporary copy made by `dvc exp run "
                                            r"--temp` .*`dvc add byo/embeddings`"):
        check_byo_layout(pipeline_sets(params), tmp_path, temp_workspace=True)
