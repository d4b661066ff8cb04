"""Stage `graph@<name>`: train one MCR graph of params.yaml (``graphs.<name>``) once per seed.

``joint`` — C-MCR generalised (:func:`cmcr.graph.train_joint`): one projector per space, every link's Eq. 10
loss summed; ``extend`` — Ex-MCR (:func:`cmcr.graph.train_extend`): the leaves extended into the frozen base
on modality-centric tuples (computed once, shared by the seeds); ``paired`` — the paired-data reference of a
modality pair no link connects (true pairs, e.g. the demo world's audio–3D reference split). The seeds (and in
``extend`` the leaves at one distance from the base) train side by side in threads of this one process.
Writes ``models/graphs/<name>/seed<seed>.pt`` (:meth:`cmcr.graph.GraphResult.checkpoint`) and
``models/graph_history/<name>/seed<seed>.json``. ``linear`` — the closed-form baseline
(:func:`cmcr.graph.fit_linear`): fitted once, deterministic, the same file for every seed (so every loader finds it).
"""

from common import AGGREGATED, EMBEDDINGS, GRAPH_HISTORY, GRAPHS, ROOT, run, setup_logging
from cmcr import layout
from cmcr.artifacts import ArtifactError, save_torch, write_json
from cmcr.benchmarks import graph_paired_sets
from cmcr.closed_form import LinearLinkData
from cmcr.graph import ExtendLinkData, extend_tuples, fit_linear, graph_result_from_training, train_extend, train_joint
from cmcr.layout import checkpoint_path
from cmcr.norms import calibrate_all, link_sets
from cmcr.plan import graph_from_plan, read_plan, unit_plan
from cmcr.train import ConnectionData, load_true_pairs, train_paired, train_seeds


def main(name: str) -> None:
    plan_file = unit_plan(ROOT / layout.graph_plan(name), "graph", name)  # before any log line
    log = setup_logging(f"graph@{name}")
    plan = graph_from_plan(read_plan(plan_file))
    graph, configs, seeds = plan.graph, plan.configs, plan.seeds
    folders = {link: AGGREGATED / folder for link, folder in plan.aggregates.items()}
    log.info("plan %s: graph %s (%s), spaces %s, links %s, seeds %s", plan_file, name, graph.mode, list(graph.spaces),
             [link.name for link in graph.links] or graph.pairs, seeds)

    if graph.mode == "joint":
        data = {link: ConnectionData.from_pipeline(EMBEDDINGS, folders[link], c) for link, c in configs.items()}

        def joint(seed):
            links = {k: c.with_seed(seed) for k, c in configs.items()}
            return graph_result_from_training(graph, train_joint(graph, data, links, progress=False), links)

        results = train_seeds(joint, seeds)
    elif graph.mode == "extend":
        data = {link: ExtendLinkData.from_pipeline(EMBEDDINGS, folders[link], c) for link, c in configs.items()}
        results = train_extend(graph, extend_tuples(graph, data, configs, plan.extend), configs, plan.extend, seeds=seeds,
                               progress=False)
    elif graph.mode == "linear":  # no training: one fit, deterministic
        fitted = fit_linear(graph, {link.name: LinearLinkData.from_pipeline(EMBEDDINGS, link) for link in graph.links})
        results = {seed: fitted for seed in seeds}
    else:
        dataset = graph.pairs["dataset"]
        files = graph_paired_sets(graph.pairs["modalities"], dataset)
        try:
            pairs = load_true_pairs(EMBEDDINGS, None, dataset, files)
        except (ArtifactError, FileNotFoundError) as exc:
            raise ArtifactError(f"graph {name}: its true pairs ({', '.join(f'{s}/{f}' for s, f in files.items())}): {exc}") from None
        (config,) = configs.values()
        results = train_seeds(lambda seed: graph_result_from_training(
            graph, train_paired(pairs, config.with_seed(seed), progress=False), {name: config.with_seed(seed)}), seeds)
    # cmcr.norms: each modality its own BatchNorm statistics where the config asks (joint: its first link's setting,
    # one optimiser for all; extend: each leaf its link's; paired: its one config), fitted on the raw training sets
    asked = {k for k, c in configs.items() if c.projector.norm_stats == "modality"}
    sets = {}
    if graph.mode == "joint" and next(iter(configs)) in asked:
        sets = link_sets(EMBEDDINGS, graph.links)
    elif graph.mode == "extend" and asked:
        every = link_sets(EMBEDDINGS, graph.links)
        sets = {leaf: every[leaf] for leaf, (_, link) in graph.toward_base().items() if link.name in asked}
    elif graph.mode == "paired" and asked:
        sets = {s: {m: pairs[s]} for s, m in graph.pairs["modalities"].items()}
    for seed, result in results.items() if sets else ():
        log.info("seed %d: BatchNorm statistics per modality from %s", seed, ", ".join(calibrate_all(result.projectors, sets)))
    for seed, result in results.items():
        save_torch(checkpoint_path(GRAPHS, name, seed), result.checkpoint())
        write_json(checkpoint_path(GRAPH_HISTORY, name, seed, ".json"), result.history)
        log.info("seed %d: final loss %s", seed, ", ".join(f"{part} {h[-1]['loss']:.4f}" for part, h in result.history.items() if h))


if __name__ == "__main__":
    run(main)
