"""What each term of the learned graph does to the emergent pair (issue 30, point 3): the demo's joint and extend
graphs retrained with one switch changed at a time (from the committed defaults, ``graph_training`` included),
scored on audio→3D (which no link trains), 3D→text and audio→image, mean ± std over seeds, beside the closed-form
rows.

    python benchmarks/graph_ablations.py                                  # the demo (after dvc repro)
    python benchmarks/graph_ablations.py --root /tmp/lw --dataset linear  # the linear world (benchmarks/linear_world.py --keep /tmp/lw)
    python benchmarks/graph_ablations.py --only extend --only "extend, scale auto" -S scale.mode=small

Reads ``<root>/params.yaml`` and the pipeline's ``data/embeddings`` / ``data/aggregated`` there; trains in this
process (the stages' pinned kernels, one thread per training, seeds side by side as the stages do); where a graph's
config asks for per-modality BatchNorm statistics (``graph_training.projector.norm_stats``, the default) they are
fitted as the graph stage fits them.
"""

from __future__ import annotations

from cmcr.reproducibility import pin_process

pin_process()

import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import typer  # noqa: E402

app = typer.Typer(add_completion=False)
ROOT = Path(__file__).resolve().parents[1]

#: row → (graph, params overrides)
PAPER_TAU = ["graph_training.loss.shared_temperature=0.01", "graph_training.loss.pseudo_temperature=0.01"]
SHARED_NORMS = ["graph_training.projector.norm_stats=shared"]
WARMER = ["graph_training.loss.shared_temperature=0.1", "graph_training.loss.pseudo_temperature=0.1"]
ROWS = {
    "joint": ("joint", []),
    "joint, the paper's τ2 = τ3 = 0.01": ("joint", PAPER_TAU),
    "joint, τ2 = τ3 = 0.1": ("joint", WARMER),
    "joint, shared BatchNorm statistics": ("joint", SHARED_NORMS),
    "joint, the paper's settings (τ 0.01, shared statistics)": ("joint", PAPER_TAU + SHARED_NORMS),
    "joint, scale auto": ("joint", ["scale.mode=auto"]),
    "joint, no Eq. 3 noise": ("joint", ["noise.enabled=false", "noise.renorm=false",
                                        "connections.clip_ulip.noise.enabled=false", "connections.clip_ulip.noise.renorm=false"]),
    "joint, no Eq. 9 (λ = 0)": ("joint", ["loss.lambda_intra=0.0", "connections.clip_ulip.loss.lambda_intra=0.0"]),
    "extend": ("extend", []),
    "extend, the paper's τ2 = τ3 = 0.01": ("extend", PAPER_TAU),
    "extend, τ2 = τ3 = 0.1": ("extend", WARMER),
    "extend, shared BatchNorm statistics": ("extend", SHARED_NORMS),
    "extend, the paper's settings (τ 0.01, shared statistics)": ("extend", PAPER_TAU + SHARED_NORMS),
    "extend, scale auto": ("extend", ["scale.mode=auto"]),
    "extend, not dense": ("extend", ["extend.dense=false"]),
    "extend, text/image-centric only": ("extend", ["extend.centres=[shared]"]),
    "extend, no Eq. 3 noise": ("extend", ["noise.enabled=false", "noise.renorm=false",
                                          "connections.clip_ulip.noise.enabled=false", "connections.clip_ulip.noise.renorm=false"]),
    "extend, no Eq. 9 on the linear layer": ("extend", ["loss.intra_spaces=[]", "connections.clip_ulip.loss.intra_spaces=[]"]),
    "extend, lr 1e-3 for CLIP-ULIP": ("extend", ["connections.clip_ulip.train.lr=0.001"]),
}
TASKS = (("audio_points", "A2P", "mAP", "A→3D mAP"), ("points_text", None, "top1", "3D→T top1"),
         ("audio_image", "A2I", "mAP", "A→I mAP"))


@app.command()
def main(root: Path = ROOT, dataset: str = "demo", seeds: list[int] = typer.Option([0, 1, 2]),
         only: list[str] = typer.Option(None, help="rows to run (default: all)"),
         set_: list[str] = typer.Option(None, "--set", "-S", help="params overrides for every row, e.g. scale.mode=small")) -> None:
    import torch

    from cmcr.closed_form import LinearLinkData
    from cmcr.exmcr import ExtendConfig
    from cmcr.plan import aggregate_folder
    from cmcr.graph import (ExtendLinkData, closed_form_rows, extend_tuples, fit_linear, graph_config, graphs_of,
                            train_extend, train_joint)
    from cmcr.evaluation import load_task, score_model
    from cmcr.norms import calibrate_all, link_sets
    from cmcr.params import deep_merge, load_params, parse_overrides
    from cmcr.train import ConnectionData, train_seeds

    torch.set_num_threads(1)
    embeddings, aggregated = root / "data" / "embeddings", root / "data" / "aggregated"
    base = deep_merge(load_params(root / "params.yaml"), parse_overrides(list(set_ or [])))
    tasks = {t: load_task(embeddings, t, dataset)[0] for t, *_ in TASKS}

    def scores(result) -> dict[str, float]:
        out = {}
        for task, direction, metric, label in TASKS:
            m = score_model(tasks[task], result.embedders(), "x")[0]
            out[label] = m[direction][metric] if direction else m[metric]
        return out

    print(f"{root} ({dataset}), seeds {seeds}, 1 thread per training")
    print("| row | " + " | ".join(t[3] for t in TASKS) + " | s / seed |")
    print("| --- |" + " --- |" * (len(TASKS) + 1))
    graphs = graphs_of(base)
    link_data = {link.name: LinearLinkData.from_pipeline(embeddings, link) for g in graphs.values()
                 if g.mode in ("joint", "extend") for link in g.links}
    for row, graph in closed_form_rows(graphs).items():
        s = scores(fit_linear(graph, link_data))
        print(f"| closed form {row} | " + " | ".join(f"{s[t[3]]:.2f}" for t in TASKS) + " | – |", flush=True)
    for row, (name, overrides) in ROWS.items():
        if only and row not in only:
            continue
        p = deep_merge(base, parse_overrides(overrides))
        graph = graphs_of(p)[name]
        configs = graph_config(p, graph)
        started = time.perf_counter()
        if graph.mode == "joint":
            data = {k: ConnectionData.from_pipeline(embeddings, aggregate_folder(aggregated, k, c.memory.mode), c)
                    for k, c in configs.items()}

            results = train_seeds(lambda seed: train_joint(graph, data, {k: c.with_seed(seed) for k, c in configs.items()},
                                                           progress=False), seeds)
        else:
            extend = ExtendConfig.from_params(p)
            data = {k: ExtendLinkData.from_pipeline(embeddings, aggregate_folder(aggregated, k, c.memory.mode), c)
                    for k, c in configs.items()}
            results = train_extend(graph, extend_tuples(graph, data, configs, extend), configs, extend, seeds=seeds,
                                   progress=False)
        if graph_config(p, graph)[graph.links[0].name].projector.norm_stats == "modality":  # as stages/graph.py
            sets = link_sets(embeddings, graph.links)
            if graph.mode == "extend":
                sets = {leaf: sets[leaf] for leaf in graph.toward_base()}
            for r in results.values():
                calibrate_all(r.projectors, sets)
        seconds = (time.perf_counter() - started) / len(seeds)
        per_seed = [scores(r) for r in results.values()]
        cells = []
        for task in TASKS:
            values = [s[task[3]] for s in per_seed]
            cells.append(f"{statistics.mean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}")
        print(f"| {row} | " + " | ".join(cells) + f" | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    app()
