"""Artifacts: atomic writes, and clear errors for bad pipeline inputs."""

import numpy as np
import pandas as pd
import pytest
import yaml
from pathlib import Path

from cmcr.artifacts import ArtifactError, atomic_path, load_embedding_set, load_npy, save_embedding_set
from cmcr.config import ConfigError
from cmcr.experiments import resolve_variant, variant_connection

PARAMS = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.npy"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_embedding_set_round_trip_and_row_check(tmp_path):
    emb = np.eye(3, dtype=np.float32)
    save_embedding_set(tmp_path, "s", emb, pd.DataFrame({"item_id": ["a", "b", "c"]}))
    matrix, table = load_embedding_set(tmp_path, "s", columns=["item_id"])
    assert np.array_equal(matrix, emb) and list(table["item_id"]) == ["a", "b", "c"]
    pd.DataFrame({"item_id": ["a", "b"]}).to_parquet(tmp_path / "s.parquet")
    with pytest.raises(ArtifactError, match=r"s.parquet: has 2 rows but its embedding matrix has 3"):
        load_embedding_set(tmp_path, "s")
    with pytest.raises(ArtifactError, match="missing column"):
        save_embedding_set(tmp_path, "t", emb, pd.DataFrame({"x": [1, 2, 3]}))
        load_embedding_set(tmp_path, "t", columns=["item_id"])


def test_missing_and_malformed_embedding_files(tmp_path):
    with pytest.raises(ArtifactError, match=r"embedding file not found: .*clip/text.npy"):
        load_npy(tmp_path / "clip" / "text.npy")
    np.save(tmp_path / "v.npy", np.zeros(4, dtype=np.float32))
    with pytest.raises(ArtifactError, match=r"v.npy: expected a 2-D matrix"):
        load_npy(tmp_path / "v.npy")
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ArtifactError, match="not a plain numeric"):
        load_npy(tmp_path / "o.npy")


def test_unknown_ablation_row():
    with pytest.raises(ConfigError, match="unknown variant 'Z'"):
        resolve_variant(PARAMS, "Z")
    with pytest.raises(ConfigError, match="unknown variant"):
        variant_connection(PARAMS, "Z")
    bad = {**PARAMS, "variants": {"X": {"group": "table9"}}}
    with pytest.raises(ConfigError, match="group must be one of"):
        resolve_variant(bad, "X")
    bad = {**PARAMS, "variants": {"X": {"exclude_sources": ["book-text"]}}}
    with pytest.raises(ConfigError, match="unknown source"):
        resolve_variant(bad, "X")


def test_table5_rows_resolve_to_the_papers_switches():
    rows = {r: resolve_variant(PARAMS, r).config for r in "ABCDEFGHIJK"}
    assert rows["A"].loss.intra_spaces == ("clip",) and rows["B"].loss.intra_spaces == ("clap",)
    assert rows["C"].loss.intra_spaces == ()
    assert not rows["D"].loss.shared_pair and rows["D"].loss.pseudo_pair
    assert rows["E"].loss.shared_pair and not rows["E"].loss.pseudo_pair
    assert not rows["F"].loss.shared_pair and not rows["F"].loss.pseudo_pair
    assert not rows["G"].noise.renorm and rows["G"].noise.enabled
    assert not rows["H"].noise.renorm and not rows["H"].noise.enabled
    assert rows["I"].memory.mode == "argmax" and rows["J"].memory.mode == "random"
    k = rows["K"]
    assert (k.noise.var, k.loss.lambda_intra, k.memory.temperature) == (0.004, 0.1, 0.01)


def test_save_torch_is_byte_reproducible(tmp_path):
    import torch

    from cmcr.artifacts import save_torch

    save_torch(tmp_path / "a.pt", {"w": torch.arange(5.0)})
    save_torch(tmp_path / "b.pt", {"w": torch.arange(5.0)})
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert torch.equal(torch.load(tmp_path / "a.pt", weights_only=True)["w"], torch.arange(5.0))


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path):
    from cmcr.artifacts import atomic_dir

    target = tmp_path / "emb"
    target.mkdir()
    (target / "old.npy").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "new.npy").write_text("half")
            raise RuntimeError("killed")
    assert [p.name for p in tmp_path.iterdir()] == ["emb"] and (target / "old.npy").exists()
    with atomic_dir(target) as tmp:
        (tmp / "new.npy").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.npy"]


def test_artifacts_get_the_umask_permissions_not_mkstemps(tmp_path):
    import os
    import stat

    from cmcr.artifacts import save_npy, write_json

    old = os.umask(0o022)
    try:
        save_npy(tmp_path / "x.npy", np.zeros((2, 2), np.float32))
        write_json(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(old)
    for name in ("x.npy", "m.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_a_new_table5_variant_appears_in_table5_in_params_order():
    """Finding 6: a variant added to group table5 was trained and evaluated but shown in no table."""
    from cmcr import report
    from cmcr.experiments import variant_names

    params = {**PARAMS, "variants": {**PARAMS["variants"],
                                     "L": {"group": "table5", "overrides": {"loss": {"lambda_intra": 0.5}}}}}
    names = [n for n in variant_names(params) if resolve_variant(params, n).group == "table5"]
    assert names == list("KABCDEFGHIJ") + ["L"]
    configs = {n: resolve_variant(params, n).config for n in names}
    scores = {n: {"A2I": {"mAP": 10.0 + i}, "I2A": {"mAP": 20.0 + i}} for i, n in enumerate(names)}
    retrieval = {"AVE": {**scores, "random": {"A2I": {"mAP": 1.0}, "I2A": {"mAP": 1.0}}}}
    table = report.table5(retrieval, configs, paper=True, rows=names)
    lines = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert [line.split("|")[1].strip() for line in lines if not set(line) <= set("|- ")] == names
    row_l = next(line for line in lines if line.startswith("| L |"))
    assert "21.00" in row_l or "21.0" in row_l  # its own scores (index 11 → 10 + 11)
    assert "loss.lambda_intra=0.5" in row_l and row_l.count("–") >= 4  # no paper value for L
    assert "| K |" in table and "| A |" in table


def test_headline_metrics_are_few_flat_and_rounded():
    """Finding 5: metrics nested {dataset: {variant: {direction: {metric}}}} made `dvc exp show` ~392 columns."""
    from cmcr import report

    scores = {
        "retrieval": {"AVE": {"K": {"A2I": {"mAP": 4.114, "R@1": 1.0}, "I2A": {"mAP": 3.999}},
                              "F": {"A2I": {"mAP": 2.0}, "I2A": {"mAP": 2.0}}, "random": {"A2I": {"mAP": 1.0}}},
                      "Flickr-SoundNet": {"skipped": "sets absent"}},
        "localization": {"VGGSS": {"K": {"cIoU": 39.456, "AUC": 38.31}}},
        "counterfactual": {"Ex-VGGSS": {"K": {"skipped": "different widths"}}},
        "zeroshot3d": {"ModelNet40": {"clip_ulip": {"top1": 64.9, "top5": 87.0}, "K": {"top1": 1.0}}},
    }
    summary = report.headline(scores, {"clip_clap": "K", "clip_ulip": "clip_ulip"})
    assert summary == {"retrieval": {"AVE": {"K_A2I_mAP": 4.11, "K_I2A_mAP": 4.0}},
                       "localization": {"VGGSS": {"K_cIoU": 39.46, "K_AUC": 38.31}},
                       "zeroshot3d": {"ModelNet40": {"clip_ulip_top1": 64.9}}}
