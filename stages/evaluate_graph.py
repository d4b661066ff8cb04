"""Stage `evaluate_graph`: the MCR graph's benchmark family (``benchmarks.graph``) — every pair of modalities of
the unified spaces: audio↔3D (emergent: no link trains it), audio↔text, audio↔image (Table 1's protocol), 3D→text
zero-shot (Table 4's). Rows: chance, the no-connection baseline, each single connection's main variant where it
can embed both modalities (K, clip_ulip), every graph of params (each seed; mean ± std), the exact ceiling.
Reads its plan ``data/params/evaluate/graph.json`` (:func:`cmcr.plan.graph_evaluation_plan`), not params.yaml; every
row goes through the one driver, :func:`cmcr.evaluation.score_rows`.
Writes ``metrics/graph.json`` and per-item ranks ``data/eval/graph_items.parquet``.
"""

from common import CONNECTIONS, EMBEDDINGS, GRAPHS, METRICS, ROOT, run, setup_logging

import pandas as pd

from cmcr import layout
from cmcr.artifacts import ArtifactError, write_json, write_parquet
from cmcr.layout import checkpoint_path
from cmcr.plan import read_plan
from cmcr.closed_form import LinearLinkData
from cmcr.graph import closed_form_rows, fit_linear, load_unit
from cmcr.evaluation import Row, ceiling, load_task, no_connection, random_baseline, score_rows


def main() -> None:
    """The graph family: every task on every listed dataset that has its sets, for the no-connection baseline,
    each single connection's main variant where it applies, and every graph of params (each seed)."""
    log = setup_logging("evaluate_graph")
    plan = read_plan(ROOT / layout.evaluation_plan("graph"))
    rows = [Row("no_connection", None, no_connection(tuple(plan["spaces"])))]
    for unit in plan["variants"]:  # each single connection's main variant that can score a task alone
        for seed in unit["seeds"]:
            projectors = load_unit(checkpoint_path(CONNECTIONS, unit["name"], seed)).projectors
            rows.append(Row(unit["name"], seed, {s: m.embed for s, m in projectors.items()}))
    graphs = {}
    for name in plan["graphs"]:  # each checkpoint holds its graph (spaces, links, which space embeds each modality)
        for seed in plan["seeds"]:
            result = load_unit(checkpoint_path(GRAPHS, name, seed))
            graphs[name] = result.graph
            linear = result.graph.mode == "linear"  # closed form: the same fit for every seed, scored once
            rows.append(Row(name, None if linear else seed, result.embedders(), result.graph.modalities()))
            if linear:
                break
    link_data: dict[str, LinearLinkData] = {}
    for row, graph in closed_form_rows(graphs).items():  # the closed-form context rows: no training, seconds
        try:
            for link in graph.links:
                if link.name not in link_data:
                    link_data[link.name] = LinearLinkData.from_pipeline(EMBEDDINGS, link)
        except ArtifactError as exc:
            log.warning("closed-form row %s skipped: %s", row, exc)
            continue
        rows.append(Row(row, None, fit_linear(graph, link_data).embedders(), graph.modalities()))
    metrics, items, tasks = {}, [], plan["tasks"]  # the built-in four and any of your own (graph_tasks)
    for dataset in plan["datasets"]:
        metrics[dataset] = {}
        for task, spec in tasks.items():
            try:
                data, coverage = load_task(EMBEDDINGS, task, dataset, spec)
            except ArtifactError as exc:  # e.g. a paper dataset that has only some tasks' sets
                log.warning("graph %s on %s skipped: %s", task, dataset, exc)
                metrics[dataset][task] = {"skipped": str(exc)}
                continue
            scores, skipped, scored_items = score_rows(rows, data, {"dataset": dataset})
            out = ({"random": random_baseline(data), "ceiling": ceiling(data)}
                   | ({"pairs": coverage} if coverage else {}) | scores)
            log.info("%s / %s: %s", dataset, task, out)
            metrics[dataset][task] = out | ({"not_applicable": skipped} if skipped else {})
            items += scored_items
    write_json(METRICS / "graph.json", metrics)
    write_parquet(ROOT / layout.EVAL / "graph_items.parquet",
                  pd.concat(items, ignore_index=True) if items else pd.DataFrame())


if __name__ == "__main__":
    run(main)
