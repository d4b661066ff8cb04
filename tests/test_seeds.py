"""Scores over training seeds: mean ± std, the paired difference to K, and how the tables print them."""

import math

import pytest

from cmcr.config import ConfigError
from cmcr.metrics.seeds import mean_std, paired_difference, seed_values, summarize_seeds, t_quantile


def test_mean_and_sample_std_by_hand():
    mean, std = mean_std([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3)
    # deviations -4/3, -1/3, 5/3: squares 16/9 + 1/9 + 25/9 = 42/9, over n - 1 = 2
    assert std == pytest.approx(math.sqrt(42 / 18))
    assert mean_std([3.0]) == (3.0, None)
    with pytest.raises(ValueError):
        mean_std([])


def test_summary_keeps_the_single_run_layout_and_every_seed():
    per_seed = {"0": {"A2I": {"mAP": 10.0, "R@1": 1.0}}, "1": {"A2I": {"mAP": 12.0, "R@1": 3.0}},
                "2": {"A2I": {"mAP": 14.0, "R@1": 2.0}}}
    s = summarize_seeds(per_seed)
    assert s["A2I"] == {"mAP": pytest.approx(12.0), "R@1": pytest.approx(2.0)}
    assert s["std"]["A2I"]["mAP"] == pytest.approx(2.0) and s["std"]["A2I"]["R@1"] == pytest.approx(1.0)
    assert s["seeds"] == per_seed
    assert seed_values(s, "A2I", "mAP") == {"0": 10.0, "1": 12.0, "2": 14.0}
    one = summarize_seeds({"0": {"top1": 50.0}})
    assert one["top1"] == 50.0 and one["std"]["top1"] is None
    with pytest.raises(ValueError, match="seed 1 reports"):
        summarize_seeds({"0": {"a": 1.0}, "1": {"b": 1.0}})


def test_t_quantiles_match_the_tables():
    assert t_quantile(1) == pytest.approx(12.7062, abs=1e-4)
    assert t_quantile(2) == pytest.approx(4.3027, abs=1e-4)
    assert t_quantile(4) == pytest.approx(2.7764, abs=1e-4)


def test_paired_difference_marks_only_what_exceeds_the_spread():
    k = {"0": 10.0, "1": 11.0, "2": 12.0}
    # the row is 1 below K at every seed, with spread 0.1: d = -0.9, -1.0, -1.1 → mean -1, sd 0.1,
    # t = 1 / (0.1 / √3) = 17.3 > 4.30
    shifted = paired_difference({"0": 9.1, "1": 10.0, "2": 10.9}, k)
    assert shifted["mean"] == pytest.approx(-1.0) and shifted["std"] == pytest.approx(0.1)
    assert shifted["n"] == 3 and shifted["significant"]
    # the same mean difference with a spread as large as the seeds' own: d = 0, -1, -2 → sd 1, t = 1.73 < 4.30
    noisy = paired_difference({"0": 10.0, "1": 10.0, "2": 10.0}, k)
    assert noisy["mean"] == pytest.approx(-1.0) and not noisy["significant"]
    # one seed: nothing to compare against
    assert not paired_difference({"0": 5.0}, {"0": 10.0})["significant"]
    # only the seeds both have are paired
    assert paired_difference({"0": 9.0, "7": 1.0}, k)["n"] == 1


def test_seeds_param_is_checked():
    from cmcr.experiments import seeds_of

    assert seeds_of({}) == [0] and seeds_of({"seeds": [3, 1]}) == [3, 1]
    for bad in ([], [0, 0], [-1], ["a"], [True], 3):
        with pytest.raises(ConfigError, match="seeds"):
            seeds_of({"seeds": bad})


def test_a_train_seed_in_params_is_rejected_naming_where(tmp_path):
    from pathlib import Path

    from cmcr.params import load_params
    from cmcr.validation import validate_params

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    validate_params(params)
    params["connections"]["clip_ulip"]["train"]["seed"] = 4
    with pytest.raises(ConfigError, match=r"connections.clip_ulip.train.seed: .*entry of `seeds`"):
        validate_params(params)


def test_table5_prints_mean_std_marks_and_relative_drops():
    from cmcr.config import ConnectionConfig, LossConfig
    from cmcr.report import table5

    def run(values):
        return summarize_seeds({str(s): {"A2I": {"mAP": a}, "I2A": {"mAP": i}} for s, (a, i) in enumerate(values)})

    retrieval = {"demo": {"random": {"A2I": {"mAP": 1.0}, "I2A": {"mAP": 1.0}},
                          "ceiling": {"A2I": {"mAP": 50.0}, "I2A": {"mAP": 50.0}},
                          "K": run([(10.0, 10.0), (11.0, 11.0), (12.0, 12.0)]),
                          "D": run([(8.0, 8.0), (9.0, 9.0), (10.0, 10.0)]),     # 2 below K at every seed
                          "E": run([(12.0, 10.0), (9.0, 11.0), (12.0, 12.0)])}}  # the same as K within noise
    configs = {"K": ConnectionConfig(), "D": ConnectionConfig(loss=LossConfig(shared_pair=False)),
               "E": ConnectionConfig(loss=LossConfig(pseudo_pair=False))}
    text = table5(retrieval, configs, paper=False, rows=["K", "D", "E"])
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "| 11.00 ± 1.00 | 11.00 ± 1.00 |" in rows["K"]
    assert "9.00 ± 1.00 †" in rows["D"] and "−2.00 ± 0.00 †" in rows["D"]
    assert "| 0.82 | 0.78 |" in rows["D"]  # ours 9 / 11; the paper's D: 13.77 / 17.73
    assert "†" not in rows["E"] and "| 1.00 | 0.97 |" in rows["E"]  # ours 11 / 11; the paper's E: 17.15 / 17.73
    assert "Random (expected) mAP: demo A2I 1.00, I2A 1.00." in text
    assert "Ceiling mAP" in text and "over 3 training seeds (0, 1, 2" in text


def test_experiment_table_shows_differing_params_and_fits_the_width():
    from cmcr.exps import experiment_table, flat_keys

    assert flat_keys({"a": {"b": 1, "c": [1, 2]}, "d": {}}) == ["a.b", "a.c", "d"]
    rows = [
        {"Experiment": None, "rev": "workspace", "typ": "workspace", "noise.var": 0.004, "train.lr": 0.001,
         "loss.intra_spaces": ["clip", "clap"], "retrieval.demo.K_A2I_mAP": 15.9},
        {"Experiment": None, "rev": "main", "typ": "baseline", "noise.var": 0.004, "train.lr": 0.001,
         "loss.intra_spaces": ["clip", "clap"], "retrieval.demo.K_A2I_mAP": 15.9},
        {"Experiment": "fussy-cane", "rev": "3e1f0a2b9c", "typ": "branch_base", "noise.var": 0.002, "train.lr": 0.001,
         "loss.intra_spaces": ["clip"] * 12, "retrieval.demo.K_A2I_mAP": 14.2},
    ]
    metrics = {"retrieval.demo.K_A2I_mAP": "K_A2I_mAP"}
    text = experiment_table(rows, metrics, ["noise.var", "train.lr", "loss.intra_spaces"], width=200)
    lines = text.splitlines()
    assert lines[0].split() == ["experiment", "noise.var", "loss.intra_spaces", "K_A2I_mAP"]  # train.lr: same everywhere
    assert lines[3].split()[:2] == ["fussy-cane@3e1f0a2", "0.002"] and lines[3].endswith("14.2")
    # too wide for 60 columns: the widest param goes, and is named
    narrow = experiment_table(rows, metrics, ["noise.var", "train.lr", "loss.intra_spaces"], width=60)
    assert all(len(line) <= 60 for line in narrow.splitlines())
    assert "loss.intra_spaces" not in narrow.splitlines()[0] and "not shown for width: loss.intra_spaces" in narrow


def test_paired_reference_config_holds_only_what_it_trains_with():
    """The paired objective uses the projector, the training settings and τ3: a change of σ² or λ leaves its
    effective config (data/params/paired.json) as it was, so `-S noise.var=…` does not retrain it."""
    from pathlib import Path

    from cmcr.experiments import resolve_variant, training_spec
    from cmcr.params import load_params

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    before = training_spec(resolve_variant(params, "paired"))
    assert before["config"]["loss"]["shared_pair"] is False and before["config"]["noise"]["enabled"] is False
    params["noise"]["var"], params["loss"]["lambda_intra"] = 0.002, 0.5
    assert training_spec(resolve_variant(params, "paired")) == before
    params["train"]["epochs"] = 3  # explicit: wins over the demo scale
    assert training_spec(resolve_variant(params, "paired"))["config"]["train"]["epochs"] == 3
