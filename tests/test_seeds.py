"""Scores over training seeds: mean ± std, the paired difference to K, and how the tables print them."""

import math

import pytest

from cmcr.config import ConfigError
from conftest import CLIP_CLAP
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
    configs = {"K": ConnectionConfig(CLIP_CLAP), "D": ConnectionConfig(CLIP_CLAP, loss=LossConfig(shared_pair=False)),
               "E": ConnectionConfig(CLIP_CLAP, loss=LossConfig(pseudo_pair=False))}
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


def test_experiment_table_puts_metrics_that_do_not_fit_in_a_block_below():
    """Issue 32, point 3: with the graphs' headlines beside the connections' (14 metrics) one line no longer fits
    200 columns: the metrics wrap into blocks, each with the experiment and its differing params, none dropped."""
    from cmcr.exps import experiment_table

    names = [f"K_m{i}" for i in range(7)] + [f"joint_g{i}" for i in range(7)]
    rows = [{"Experiment": None, "rev": "main", "typ": "baseline", "noise.var": 0.004} | {n: 20.0 + i for i, n in enumerate(names)},
            {"Experiment": "exp-a", "rev": "abcdef12", "typ": "branch_base", "noise.var": 0.002}
            | {n: 10.0 + i for i, n in enumerate(names)}]
    text = experiment_table(rows, {n: n for n in names}, ["noise.var"], width=80)
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines)
    headers = [line.split() for line in lines if line.startswith("experiment")]
    assert len(headers) >= 2 and all(h[:2] == ["experiment", "noise.var"] for h in headers)  # params in every block
    shown = [c for h in headers for c in h[2:]]
    assert shown == names  # every metric once, in order: the connections' first, then the graph's
    assert "not shown for width" not in text
    for block_start in (i for i, line in enumerate(lines) if line.startswith("experiment")):
        assert lines[block_start + 2].split()[:2] == ["exp-a@abcdef1", "0.002"]


def test_paired_reference_config_holds_only_what_it_trains_with():
    """The paired objective uses the projector, the training settings and τ3: a change of σ² or λ leaves its
    effective config (data/params/paired.json) as it was, so `-S noise.var=…` does not retrain it."""
    from pathlib import Path

    from cmcr.experiments import resolve_variant
    from cmcr.params import load_params
    from cmcr.plan import variant_plan

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    before = variant_plan(params, resolve_variant(params, "paired"))
    config = before["configs"]["clip_clap"]
    assert config["loss"]["shared_pair"] is False and config["noise"]["enabled"] is False
    params["noise"]["var"], params["loss"]["lambda_intra"] = 0.002, 0.5
    assert variant_plan(params, resolve_variant(params, "paired")) == before
    params["train"]["epochs"] = 3  # explicit: wins over the demo scale
    assert variant_plan(params, resolve_variant(params, "paired"))["configs"]["clip_clap"]["train"]["epochs"] == 3


def test_experiments_show_spread_and_a_paired_test_against_the_baseline():
    """Issue 24, point 3: `cmcr experiments` showed means only, and a running experiment the baseline's numbers."""
    from cmcr.exps import experiment_table
    from cmcr.metrics.seeds import paired_difference

    def seeds(values):
        return {"retrieval.demo.K_A2I_mAP": round(sum(values) / len(values), 2)} | {
            f"retrieval.demo.K_A2I_mAP_seed{s}": v for s, v in enumerate(values)}

    base, better, same = [21.0, 21.5, 21.9], [22.0, 22.4, 23.0], [21.3, 21.2, 22.0]
    rows = [{"Experiment": None, "rev": "main", "typ": "baseline", "noise.var": 0.004} | seeds(base),
            {"Experiment": "up", "rev": "aaaaaaa1", "typ": "branch_commit", "noise.var": 0.002, "State": "Success"}
            | seeds(better),
            {"Experiment": "flat", "rev": "aaaaaaa2", "typ": "branch_commit", "noise.var": 0.008, "State": "Success"}
            | seeds(same),
            {"Experiment": "busy", "rev": "aaaaaaa3", "typ": "branch_base", "noise.var": 0.016, "State": "Running"}
            | seeds(base)]  # DVC fills a running row with the baseline's metrics
    text = experiment_table(rows, {"retrieval.demo.K_A2I_mAP": "K_A2I_mAP"}, ["noise.var"], width=200)
    lines = {line.split()[0]: line.split() for line in text.splitlines()[1:5]}
    # by hand: base mean 21.4667, sd 0.4509; up − base = (1.0, 0.9, 1.1): mean 1.00, sd 0.1, t = 17.3 > 4.30
    assert lines["main"][-1] == "21.47±0.45"
    assert lines["up@aaaaaaa"][-1] == "22.47±0.50(Δ+1.00†)"
    # flat − base = (0.3, −0.3, 0.1): mean 0.033, not significant
    assert lines["flat@aaaaaaa"][-1] == "21.50±0.44(Δ+0.03)"
    assert not paired_difference(dict(enumerate(same)), dict(enumerate(base)))["significant"]
    assert lines["busy@aaaaaaa"][-1] == "running"  # not the baseline's 21.47
    assert "paired difference to its baseline" in text.splitlines()[-1]
    assert all("_seed" not in line and "_std" not in line for line in text.splitlines()[:1])


def test_headline_summary_keeps_std_and_every_seed():
    from cmcr.metrics.seeds import summarize_seeds
    from cmcr.report import headline, plots_page

    per_seed = {"0": {"A2I": {"mAP": 20.0}, "I2A": {"mAP": 19.0}}, "1": {"A2I": {"mAP": 22.0}, "I2A": {"mAP": 19.5}}}
    scores = {"retrieval": {"demo": {"K": summarize_seeds(per_seed)}}}
    summary = headline(scores, {"clip_clap": "K"})
    assert summary["retrieval"]["demo"] == {"K_A2I_mAP": 21.0, "K_A2I_mAP_std": 1.41, "K_A2I_mAP_seed0": 20.0,
                                            "K_A2I_mAP_seed1": 22.0, "K_I2A_mAP": 19.25, "K_I2A_mAP_std": 0.35,
                                            "K_I2A_mAP_seed0": 19.0, "K_I2A_mAP_seed1": 19.5}
    from cmcr.report import headline_means

    assert headline_means(summary) == {"retrieval": {"demo": {"K_A2I_mAP": 21.0, "K_I2A_mAP": 19.25}}}
    page = plots_page(summary, {}, [])
    assert "<td>K_A2I_mAP</td><td>21.00 ± 1.41</td><td>2</td>" in page and "K_A2I_mAP_seed0" not in page


def test_loss_curves_are_distinguishable():
    from cmcr.report import line_style

    names = ["K"] + list("ABCDEFGHIJ") + [f"v{i}" for i in range(10)]  # 21 curves, as the demo plots
    styles = [line_style(n, names) for n in names]
    assert styles[0] == ("black", "-", 2.4)
    assert len({(tuple(c), ls) for c, ls, _ in styles[1:]}) == 20  # no two curves alike


def test_tables_say_what_produced_them_and_use_labels(tmp_path):
    """Issue 24, point 5: a -S projector.hidden_dim=512 run's tables looked like the default's; the σ² sweep hid
    its effect on localization / counterfactual; a variant's label was not used."""
    import torch

    from cmcr.config import ConnectionConfig, LossConfig, NoiseConfig, ProjectorConfig, TrainConfig
    from conftest import PAPER_LINKS as CONNECTIONS
    from cmcr.projector import build_projectors
    from cmcr.report import benchmark_table, figure3_table, training_note
    from cmcr.graph import connection_unit

    conn = CONNECTIONS["clip_clap"]
    config = ConnectionConfig(connection=conn, projector=ProjectorConfig(in_dims={"clip": 512, "clap": 48}, hidden_dim=512,
                                                                          out_dim=256),
                              loss=LossConfig(intra_spaces=conn.spaces), train=TrainConfig(epochs=7, batch_size=64, lr=2e-3))
    result = connection_unit(build_projectors(config.projector, conn.spaces), config, "K")
    # by hand: clip 512·512+512 + 2·512 (BN) + 512·256+256 + 2·256; clap 48·512+512 + 2·512 + 512·256+256 + 2·256
    params = (512 * 512 + 512 + 1024 + 512 * 256 + 256 + 512) + (48 * 512 + 512 + 1024 + 512 * 256 + 256 + 512)
    note = training_note({"K": result})
    assert (f"K: projector `paper` (clip 512→512→256, clap 48→512→256; {params / 1e6:.2f}M trainable parameters), "
            "7 epochs, batch 64, lr 0.002") in note

    def m(v):
        return summarize_seeds({"0": v, "1": {k: x + 1 for k, x in v.items()}})

    retrieval = {"demo": {"K": summarize_seeds({"0": {"A2I": {"mAP": 20.0}, "I2A": {"mAP": 19.0}}})}}
    assert "| demo | C-MCR (ours): row K, full |" in benchmark_table("retrieval", retrieval, False, label="row K, full")
    # every dataset's row of ours keeps its label (the second dataset's once took the ceiling's: "C-MCR (ours):
    # Ceiling …"), on each of the four tables
    two = {d: {"K": {"A2I": {"mAP": 20.0}, "I2A": {"mAP": 19.0}}, "ceiling": {"A2I": {"mAP": 90.0}}} for d in ("AVE", "VGGSS")}
    for benchmark in ("retrieval", "localization", "counterfactual", "zeroshot3d"):
        lines = [line for line in benchmark_table(benchmark, two, True, label="row K").splitlines() if "C-MCR (ours)" in line]
        assert [line.split(" | ")[:2] for line in lines] == [["| AVE", "C-MCR (ours): row K"], ["| VGGSS", "C-MCR (ours): row K"]]
    configs = {"K": ConnectionConfig(connection=conn, noise=NoiseConfig(var=0.004)),
               "s1": ConnectionConfig(connection=conn, noise=NoiseConfig(var=0.001))}
    scenes = {"localization": {"demo": {"K": m({"cIoU": 60.0, "AUC": 50.0}), "s1": m({"cIoU": 70.0, "AUC": 55.0}),
                                        "random": {"cIoU": 10.0, "AUC": 11.0}}},
              "counterfactual": {"demo": {"K": m({"AP": 40.0, "Max-F1": 45.0}), "s1": m({"AP": 42.0, "Max-F1": 44.0})}}}
    points = [{"dataset": "demo", "var": 0.001, "A2I": 1.0, "I2A": 2.0, "mean_mAP": 1.5, "variant": "s1"},
              {"dataset": "demo", "var": 0.004, "A2I": 3.0, "I2A": 4.0, "mean_mAP": 3.5, "variant": "K"}]
    text = figure3_table(points, labels={"K": "row K"}, scenes=scenes, configs=configs)
    assert "| demo | 0.001 | 1.00 | 2.00 | 1.50 | s1 |" in text and "| demo | 0.004 | 3.00 | 4.00 | 3.50 | row K |" in text
    assert "## σ² and source localization" in text and "## σ² and counterfactual recognition" in text
    assert "| demo | 0.001 | 70.50 ± 0.71 | 55.50 ± 0.71 | s1 |" in text  # sorted by σ²; mean ± std over 2 seeds
    assert "| demo | 0.004 | 60.50 ± 0.71 | 50.50 ± 0.71 | row K |" in text
    assert "| demo | – | 10.00 | 11.00 | Random proposal and confidence |" in text
    assert "| demo | 0.001 | 42.50 ± 0.71 | 44.50 ± 0.71 | s1 |" in text
