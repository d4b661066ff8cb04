"""One trainer entry for every trained unit (issue 31): a variant (a one-link joint graph, or a paired-data
reference, or an imported release) and a graph (joint, extend, paired, linear) are trained from their plan — one format,
:class:`cmcr.plan.UnitPlan` — by :func:`train_unit`, calibrated where their config asks (:mod:`cmcr.norms`), and
returned as :class:`cmcr.graph.GraphResult` per seed — the one result type, saved in the one checkpoint format
(:meth:`GraphResult.checkpoint`) and read by the one loader (:func:`cmcr.graph.load_unit`). The ``train@<variant>``
and ``graph@<name>`` stages are this call and :func:`save_unit`; the kind (:data:`KINDS`) says only where a unit's
plan and files are (:mod:`cmcr.layout`) and a variant's history file format.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cmcr import layout
from cmcr.artifacts import ArtifactError, save_torch, write_json
from cmcr.closed_form import LinearLinkData
from cmcr.graph import (ExtendLinkData, GraphResult, connection_unit, extend_tuples, fit_linear, train_extend,
                        train_joint, train_paired)
from cmcr.layout import checkpoint_path
from cmcr.norms import calibrate_all, link_sets
from cmcr.official import load_official
from cmcr.plan import unit_from_plan
from cmcr.train import ConnectionData, load_true_pairs, train_seeds

log = logging.getLogger(__name__)

#: a unit kind → (where its plan is, by name; its checkpoints' folder; its histories' folder): all that tells a
#: variant's files from a graph's
KINDS = {"variant": (layout.variant_plan, layout.CONNECTIONS, layout.HISTORY),
         "graph": (layout.graph_plan, layout.GRAPHS, layout.GRAPH_HISTORY)}


def train_unit(name: str, plan: Mapping[str, Any], root: str | Path = ".") -> dict[int, GraphResult]:
    """Train (or import, or fit) the unit ``name`` from its plan (:func:`cmcr.plan.unit_from_plan`: a variant's or a
    graph's, one format), every seed; the embeddings and Eq. 2 aggregates are read where :mod:`cmcr.layout` puts them
    under ``root``. A variant is a one-link graph: joint, or paired for a paired-data reference."""
    root = Path(root)
    embeddings, plan = root / layout.EMBEDDINGS, unit_from_plan(plan)
    graph, configs, seeds = plan.graph, plan.configs, plan.seeds
    folders = {link: root / layout.AGGREGATED / folder for link, folder in plan.aggregates.items()}
    log.info("%s (%s): spaces %s, seeds %s, Eq. 2 aggregates %s", graph.label(), graph.mode, list(graph.spaces), seeds,
             ", ".join(plan.aggregates.values()) or "none")
    if plan.official:  # the released projectors, evaluated by the same code as ours (one file: the same for every seed)
        result = connection_unit(*load_official(root / plan.official["checkpoint"], plan.official["release"]), name)
        log.info("imported the official %s release from %s", plan.official["release"], plan.official["checkpoint"])
        return {seed: result for seed in seeds}
    if graph.mode == "joint":
        data = {link: ConnectionData.from_pipeline(embeddings, folders[link], c, plan.exclude_sources)
                for link, c in configs.items()}
        results = train_seeds(lambda seed: train_joint(graph, data, {k: c.with_seed(seed) for k, c in configs.items()},
                                                       progress=False), seeds)
    elif graph.mode == "extend":
        data = {link: ExtendLinkData.from_pipeline(embeddings, folders[link], c) for link, c in configs.items()}
        results = train_extend(graph, extend_tuples(graph, data, configs, plan.extend), configs, plan.extend, seeds=seeds,
                               progress=False)
    elif graph.mode == "linear":  # no training: one fit, deterministic
        fitted = fit_linear(graph, {link.name: LinearLinkData.from_pipeline(embeddings, link) for link in graph.links})
        results = {seed: fitted for seed in seeds}
    else:  # the paired-data reference: the same projectors trained on true pairs (never C-MCR's data)
        try:
            pairs = load_true_pairs(embeddings, graph.pairs["dataset"], plan.true_pairs)
        except (ArtifactError, FileNotFoundError) as exc:
            raise ArtifactError(f"{graph.label()}: its true pairs "
                                f"({', '.join(f'{s}/{f}' for s, f in plan.true_pairs.items())}): {exc}") from None
        (config,) = configs.values()
        results = train_seeds(lambda seed: train_paired(graph, pairs, config.with_seed(seed), progress=False), seeds)
    # cmcr.norms: each modality its own BatchNorm statistics where the config asks (joint: its first link's setting,
    # one optimiser for all; extend: each leaf its link's; paired: its one config), fitted on the training sets: the
    # memory sets as they are, the shared sets (joint) and true pairs (paired) as trained on
    asked = {k for k, c in configs.items() if c.projector.norm_stats == "modality"}
    sets = {}
    if graph.mode == "joint" and next(iter(configs)) in asked:
        sets = link_sets(embeddings, graph.links, {link: d.shared for link, d in data.items()})
    elif graph.mode == "extend" and asked:
        every = link_sets(embeddings, graph.links)
        sets = {leaf: every[leaf] for leaf, (_, link) in graph.toward_base().items() if link.name in asked}
    elif graph.mode == "paired" and asked:
        sets = {s: {m: pairs[s]} for s, m in graph.pairs["modalities"].items()}
    if sets:
        _calibrate(results, sets)
    return results


def _calibrate(results: Mapping[int, Any], sets) -> None:
    for seed, result in results.items():
        log.info("seed %d: BatchNorm statistics per modality from %s", seed, ", ".join(calibrate_all(result.projectors, sets)))


def save_unit(kind: str, name: str, results: Mapping[int, GraphResult], root: str | Path = ".") -> None:
    """Write every seed's checkpoint and history where :mod:`cmcr.layout` puts the ``kind``'s (atomically): a graph's
    history ``{part: per-epoch list}``, a variant's its one part's list (its history files' format)."""
    _, checkpoints, histories = KINDS[kind]
    root = Path(root)
    for seed, result in results.items():
        save_torch(checkpoint_path(root / checkpoints, name, seed), result.checkpoint())
        history = next(iter(result.history.values())) if kind == "variant" else result.history
        write_json(checkpoint_path(root / histories, name, seed, ".json"), history)
        log.info("seed %d: final loss %s", seed, ", ".join(f"{part} {h[-1]['loss']:.4f}" for part, h in result.history.items() if h))
