"""Stage `report`: result tables like the paper's (results/*.md), plots (results/*.png, results/plots.html)
and qualitative examples (results/examples.html).

Reads its plan ``data/params/overview.json`` (the setup, seeds, datasets, the units' labels, groups and configs:
:func:`cmcr.plan.overview_plan`, written by the validate stage; the API reads it too), the metrics and the checkpoints — not params.yaml."""

from common import CONNECTIONS, EMBEDDINGS, GRAPH_HISTORY, GRAPHS, HISTORY, METRICS, RESULTS, ROOT, WORLD, setup_logging, run

import json
from pathlib import Path

import pandas as pd

from cmcr import report
from cmcr.closed_form import CONTEXT_ROWS, LinearConfig
from cmcr.graph import closed_form_label, closed_form_rows, load_unit
from cmcr.report import ours
from cmcr.examples import write_examples
from cmcr.world import class_names
from cmcr.artifacts import atomic_path, write_json
from cmcr.benchmarks import BENCHMARKS
from cmcr.encoders.base import register_paper_encoders
from cmcr import layout
from cmcr.experiments import checkpoint_path
from cmcr.plan import read_plan, overview_from_plan


def write_text(path, text: str) -> None:
    with atomic_path(path, ".md") as tmp:
        tmp.write_text(text)


def main() -> None:
    log = setup_logging("report")
    plan = overview_from_plan(read_plan(ROOT / layout.OVERVIEW_PLAN))
    setup, seeds, variants, graphs = plan.setup, plan.seeds, plan.variants, plan.graphs
    register_paper_encoders({"setup": setup, "paper": {"encoders": plan.encoders}})  # a plugin space's modalities
    paper = setup != "demo"  # the paper's numbers sit beside ours when the data is real
    configs = {n: v.config for n, v in variants.items()}
    scores = {b: json.loads((METRICS / f"{b}.json").read_text())
              for b in ("retrieval", "localization", "counterfactual", "zeroshot3d")}
    # metrics JSON has sorted keys; the tables show the datasets in the order params.yaml lists them
    scores = {b: report.in_order(m, plan.benchmarks.get(b, [])) for b, m in scores.items()}
    RESULTS.mkdir(exist_ok=True)
    # variants of group table1 / table4 other than ours (e.g. the official release) become extra rows
    extra = {"no_connection": "No connection (original spaces, no training)"} | {
        n: v.label for n, v in variants.items() if v.group in ("table1", "table4", "reference") and n not in ("K", "clip_ulip")}
    extra |= {row: f"Closed form (no training): {LinearConfig(map_name, centre).label()}, into CLIP through the shared "
                   "modality" for row, map_name, centre in CONTEXT_ROWS}
    # the headline metrics (the pipeline's only DVC metrics file): the first trained variant of each connection
    main_variants: dict[str, str] = {}
    for n, v in variants.items():
        if not v.official and not v.paired:
            main_variants.setdefault(v.config.connection.name, n)
    # what produced the tables' trained rows, from their first seed's checkpoint (projector sizes, epochs, batch)
    notes = {c: report.training_note({n: load_unit(checkpoint_path(CONNECTIONS, n, seeds[0]))})
             for c, n in main_variants.items()}
    labels = {n: v.label for n, v in variants.items() if v.label != n}  # the labels params.yaml gives
    retrieval = scores["retrieval"]
    if report.datasets_of(retrieval):
        write_text(RESULTS / "table1_retrieval.md", report.benchmark_table("retrieval", retrieval, paper, extra=extra,
                                                                   label=labels.get("K")) + notes.get("clip_clap", ""))
        references = {n: v.label for n, v in variants.items()
                      if v.group == "reference" and v.config.connection.name == "clip_clap"}
        write_text(RESULTS / "table5_ablations.md", report.table5(
            retrieval, configs, paper, [n for n, v in variants.items() if v.group == "table5"], references=references,
            labels=labels) + notes.get("clip_clap", ""))
        sweep = [n for n, v in variants.items() if v.group == "figure3"] + ["K"]
        points = report.figure3_points(retrieval, configs, sweep)
        write_json(RESULTS / "figure3.json", points)
        write_text(RESULTS / "figure3_noise.md", report.figure3_table(
            points, retrieval, references, labels=labels, configs=configs,
            scenes={b: scores[b] for b in ("localization", "counterfactual")}) + notes.get("clip_clap", ""))
        report.plot_figure3(points, RESULTS / "figure3.png")
        sources = {"K": "Full"} | {n: v.label for n, v in variants.items() if v.group == "text_sources"}
        write_text(RESULTS / "appendix_text_sources.md", report.text_sources_table(retrieval, sources, paper, references)
                   + notes.get("clip_clap", ""))
    for benchmark, out, main in (("localization", "table2_localization.md", "K"),
                                 ("counterfactual", "table3_counterfactual.md", "K"), ("zeroshot3d", "table4_zeroshot3d.md", "clip_ulip")):
        if report.datasets_of(scores[benchmark]):
            write_text(RESULTS / out, report.benchmark_table(benchmark, scores[benchmark], paper, main, extra=extra,
                                                             label=labels.get(main))
                       + notes.get(BENCHMARKS[benchmark], ""))
    graph_metrics = METRICS / "graph.json"
    if graphs and graph_metrics.is_file():
        rows = {"random": "Random (expected)", "no_connection": "No connection (original spaces, no training)"}
        rows |= {n: f"{ours(labels.get(n))} (single connection)" for n in ("K", "clip_ulip") if n in variants}
        rows |= {n: plan.graph_labels[n] for n in graphs}
        rows |= {n: closed_form_label(g) for n, g in closed_form_rows(graphs).items()}
        rows["ceiling"] = "Ceiling (best possible on this benchmark)"
        write_text(RESULTS / "graph.md", report.graph_table(json.loads(graph_metrics.read_text()), rows)
                   + report.graph_note({n: load_unit(checkpoint_path(GRAPHS, n, seeds[0])) for n in graphs}))
    # the headline means are the DVC metrics (what `dvc exp show` lists); their std and every seed's value sit
    # beside them in a plain git-tracked file (`dvc metrics diff --targets metrics/summary_seeds.json`,
    # `cmcr experiments`), so DVC's table keeps 14 metric columns (7 of the connections, 7 of the graphs) rather than 70
    summary = report.headline(scores, main_variants)
    if graphs and graph_metrics.is_file():  # each graph's emergent pair and trained pairs beside K's
        summary |= report.graph_headline(json.loads(graph_metrics.read_text()), list(graphs))
    write_json(METRICS / "summary.json", report.headline_means(summary))
    write_json(METRICS / "summary_seeds.json", summary)
    histories = {n: {s: json.loads(checkpoint_path(HISTORY, n, s, ".json").read_text()) for s in seeds}
                 for n in variants if not variants[n].official}
    report.plot_losses(histories, RESULTS / "training_losses.png")
    if graphs:  # one line per graph and trained part (joint: the summed links; extend: each leaf; paired)
        by_part: dict[str, dict[int, list]] = {}
        for n in graphs:
            for s in seeds:
                for part, h in json.loads(checkpoint_path(GRAPH_HISTORY, n, s, ".json").read_text()).items():
                    by_part.setdefault(f"{n}/{part}", {})[s] = h
        report.plot_losses(by_part, RESULTS / "graph_losses.png", "training loss, mean over seeds")
    images = {name: caption for name, caption in (("figure3.png", "Figure 3: retrieval mAP against σ²"),
                                                  ("training_losses.png", "Training loss per variant"),
                                                  ("graph_losses.png", "Training loss per graph (extend: per leaf)"))
              if (RESULTS / name).is_file()}
    tables = sorted(p.name for p in RESULTS.glob("*.md"))
    write_text(RESULTS / "plots.html", report.plots_page(summary, images, tables))

    def resolve(path):  # demo tables list world-relative paths; the paper's manifests absolute or repo-relative
        path = Path(str(path))
        if path.is_absolute():
            return path
        return WORLD / path if setup == "demo" else ROOT / path

    def scene_images(dataset):
        scenes = WORLD / "scenes" / "scenes.parquet"
        if setup != "demo" or dataset != "demo" or not scenes.is_file():
            return None
        table = pd.read_parquet(scenes, columns=["scene_id", "image"])
        return {str(s): WORLD / str(i) for s, i in zip(table["scene_id"], table["image"])}

    checkpoints = {c: checkpoint_path(CONNECTIONS, n, seeds[0]) for c, n in main_variants.items()}  # first seed
    write_examples(RESULTS / "examples.html", EMBEDDINGS, checkpoints,
                   {b: plan.benchmarks.get(b, []) for b in ("retrieval", "localization", "zeroshot3d", "graph")},
                   resolve, scene_images, seed=0, trust_pickle=plan.trust_pickled_points,
                   names=class_names() if setup == "demo" else None,
                   graphs={n: checkpoint_path(GRAPHS, n, seeds[0]) for n, g in graphs.items() if g.mode != "paired"})
    log.info("wrote tables and plots to %s", RESULTS)


if __name__ == "__main__":
    run(main)
