"""The resolved plan: what each stage does, derived from params once, by the validate stage, and written as
plain JSON under ``data/params`` (:mod:`cmcr.layout`). Every later stage reads its own plan file instead of
params.yaml, so DVC reruns a stage when — and only when — what it does changed: a link declared in params
reruns the Eq. 2 aggregate stage and the units that train on that link, not every other unit.

- :func:`aggregate_plan`: every distinct Eq. 2 job ``(link, memory config)`` the variants and graphs train on,
  each in its own folder ``<link>/<key>`` (:func:`aggregate_key`): a variant that sets its own τ1 trains on
  aggregates at that τ1, never on its link's.
- :func:`variant_plan` / :func:`graph_plan`: a trained unit's plan, one format for both (a variant is the one-link
  graph it is): its graph, each link's resolved config, seeds, aggregate folders, true pairs (:class:`UnitPlan`).
- :func:`space_sets`: the sets a space's ``extract@<space>`` embeds; :func:`stage_plan`: the params a data stage
  (``world``, ``texts``, ``spaces``) reads, and nothing else of them.
- :func:`evaluation_plan` / :func:`graph_evaluation_plan`: what each benchmark of ``evaluate`` / ``evaluate_graph`` scores.
- :func:`overview_plan`: the pipeline at a glance — setup, seeds, datasets, every unit's label, group and config — for
  the ``report`` stage and the API (:class:`Overview` read back).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cmcr.benchmarks import (BENCHMARKS, EVAL_SET_MODALITY, evaluation_sets, graph_paired_sets, graph_tasks, paired_sets,
                             set_modality)
from cmcr.config import (ConfigError, Connection, ConnectionConfig, MemoryConfig, connection_of, extraction_sets,
                         memory_config_from_params)
from cmcr.evaluation import SINGLE_CONNECTION_VARIANTS, metric_options
from cmcr.exmcr import ExtendConfig
from cmcr.experiments import Variant, pipeline_spaces, seeds_of, setup_of
from cmcr.graph import Graph, graph_config, link_graph
from cmcr import layout

PLAN_FORMAT = "cmcr.plan/1"


def aggregate_key(memory: MemoryConfig, own: MemoryConfig) -> str:
    """The folder name of Eq. 2 aggregates computed with ``memory``, under their link's folder: the mode
    (``softmax``, ``argmax``, ``random``) when every other setting is the link's own (``own``: its memory group),
    else ``<mode>-<8 hex digits>`` of the whole config (a variant's own τ1, seed, precision…)."""
    if dataclasses.replace(memory, mode=own.mode) == own:
        return memory.mode
    text = json.dumps(dataclasses.asdict(memory), sort_keys=True)
    return f"{memory.mode}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def aggregate_folder(aggregated: str | Path, link: str, key: str) -> Path:
    """Where the aggregates of ``link`` computed as ``key`` (:func:`aggregate_key`) live: ``<aggregated>/<link>/<key>``
    (e.g. ``data/aggregated/clip_clap/softmax/clip_image_from_text.npy``)."""
    return Path(aggregated) / link / key


def _job(params: Mapping[str, Any], connection: Connection, memory: MemoryConfig, jobs: dict) -> str:
    """Register ``connection``'s Eq. 2 with ``memory`` in ``jobs``; its folder relative to the aggregates'."""
    folder = aggregate_folder("", connection.name, aggregate_key(memory, memory_config_from_params(params, connection.name)))
    jobs.setdefault(folder.as_posix(), {"link": connection.to_link_dict(), "memory": dataclasses.asdict(memory)})
    return folder.as_posix()


def variant_aggregate(params: Mapping[str, Any], variant: Variant, jobs: dict | None = None) -> str | None:
    """The aggregate folder variant ``variant`` trains on (None: imported, or trained on true pairs)."""
    if variant.official or variant.paired:
        return None
    return _job(params, variant.config.connection, variant.config.memory, {} if jobs is None else jobs)


def graph_aggregates(params: Mapping[str, Any], graph: Graph, configs: Mapping[str, ConnectionConfig],
                     jobs: dict | None = None) -> dict[str, str]:
    """``{link: aggregate folder}`` a graph trains on (joint, extend; a closed-form or paired graph: none)."""
    if graph.mode not in ("joint", "extend"):
        return {}
    jobs = {} if jobs is None else jobs
    return {link: _job(params, configs[link].connection, c.memory, jobs) for link, c in configs.items()}


def aggregate_plan(params: Mapping[str, Any], variants: Mapping[str, Variant], graphs: Mapping[str, Graph]
                   ) -> dict[str, dict[str, Any]]:
    """Every Eq. 2 job the variants and graphs need: ``{"<link>/<key>": {"link": {...}, "memory": {...}}}``
    (the aggregate stage's plan), in the order the units name them."""
    jobs: dict[str, dict[str, Any]] = {}
    for variant in variants.values():
        variant_aggregate(params, variant, jobs)
    for graph in graphs.values():
        graph_aggregates(params, graph, graph_config(params, graph), jobs)
    return jobs


def variant_graph(variant: Variant) -> Graph:
    """A variant as the one-link graph it trains as (:func:`cmcr.graph.link_graph`: mode joint, or paired for a
    paired-data reference), named after the variant."""
    return link_graph(variant.config.connection, variant.name, paired=bool(variant.paired), dataset=variant.paired)


def _trained_unit_plan(params: Mapping[str, Any], graph: Graph, configs: Mapping[str, ConnectionConfig],
                       aggregates: Mapping[str, str], true_pairs: Mapping[str, str] | None = None,
                       exclude_sources: tuple[str, ...] = (), official: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A trained unit's plan, the one format of ``train@<variant>`` and ``graph@<name>``: the graph (its links'
    definitions), each link's effective config, Ex-MCR's switches (mode extend), the seeds, the Eq. 2 folders, the
    true pairs' files (mode paired: ``{space: file}``), the text sources left out and the release imported instead."""
    return {"format": PLAN_FORMAT, "graph": graph.to_dict(), "configs": {k: c.to_dict() for k, c in configs.items()},
            "extend": ExtendConfig.from_params(params).to_dict() if graph.mode == "extend" else None,
            "seeds": seeds_of(params), "aggregates": dict(aggregates), "true_pairs": dict(true_pairs or {}) or None,
            "exclude_sources": list(exclude_sources), "official": dict(official) if official else None}


def variant_plan(params: Mapping[str, Any], variant: Variant) -> dict[str, Any]:
    """``train@<variant>``'s plan: the variant as the one-link graph it is (:func:`variant_graph`) with its config,
    Eq. 2 folder, true pairs (a paired-data reference), excluded text sources or imported release."""
    link, folder = variant.config.connection.name, variant_aggregate(params, variant)
    return _trained_unit_plan(params, variant_graph(variant), {link: variant.config}, {link: folder} if folder else {},
                              paired_sets(link, variant.paired) if variant.paired else None, variant.exclude_sources,
                              variant.official)


def graph_plan(params: Mapping[str, Any], graph: Graph) -> dict[str, Any]:
    """``graph@<name>``'s plan: the graph, each link's effective config (training scale applied; paired: its one
    config), Ex-MCR's switches (mode extend), the seeds, the aggregate folders and a paired graph's true pairs."""
    configs = graph_config(params, graph)
    pairs = graph_paired_sets(graph.pairs["modalities"], graph.pairs["dataset"]) if graph.mode == "paired" else None
    return _trained_unit_plan(params, graph, configs, graph_aggregates(params, graph, configs), pairs)


@dataclasses.dataclass(frozen=True)
class UnitPlan:
    """A trained unit's plan read back (:func:`_trained_unit_plan`): what ``train@<variant>`` / ``graph@<name>`` do."""

    graph: Graph
    configs: dict[str, ConnectionConfig]
    extend: ExtendConfig | None
    seeds: list[int]
    aggregates: dict[str, str]
    true_pairs: dict[str, str] | None
    exclude_sources: tuple[str, ...]
    official: dict[str, str] | None


def unit_from_plan(plan: Mapping[str, Any]) -> UnitPlan:
    extend = plan.get("extend")
    return UnitPlan(Graph.from_dict(plan["graph"]), {k: ConnectionConfig.from_dict(c) for k, c in plan["configs"].items()},
                    None if extend is None else ExtendConfig(**extend), [int(s) for s in plan["seeds"]],
                    dict(plan["aggregates"]), plan.get("true_pairs"), tuple(plan.get("exclude_sources") or ()),
                    plan.get("official"))


#: the params each data stage reads, by dotted key: its plan (:func:`stage_plan`) holds exactly these, so the stage
#: can read nothing else and reruns only when one of them changes (``extract@<space>``: :func:`extraction_params`)
STAGE_PARAMS = {"world": ("setup", "demo.world"), "texts": ("setup", "paper.texts"),
                "spaces": ("setup", "spaces", "demo.spaces")}


def extraction_params(space: str) -> tuple[str, ...]:
    """What ``extract@<space>`` reads of params: the setup, the failure limit, the space's own encoder and sets
    (setup paper; another space's encoder changed does not re-extract this one) and the extraction settings."""
    return ("setup", "extraction", f"paper.encoders.{space}", f"paper.sets.{space}", "paper.extraction")


def params_subset(params: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The part of ``params`` at the dotted ``keys``, nested as in params (``demo.world`` → ``{"demo": {"world":
    …}}``); a key params lacks is left out."""
    out: dict[str, Any] = {}
    for key in keys:
        *parents, last = key.split(".")
        source: Any = params
        for part in parents:
            source = source.get(part) if isinstance(source, Mapping) else None
        if not isinstance(source, Mapping) or last not in source:
            continue
        target = out
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = source[last]
    return out


def stage_plan(params: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """A data stage's plan (``world``, ``texts``, ``spaces``): :func:`params_subset` of :data:`STAGE_PARAMS`."""
    return {"format": PLAN_FORMAT, "stage": stage, "params": params_subset(params, STAGE_PARAMS[stage])}


def space_sets(params: Mapping[str, Any], space: str, variants: Mapping[str, Variant],
               graphs: Mapping[str, Graph]) -> dict[str, tuple[str, bool]]:
    """``{file name: (modality, required)}`` a space contributes: the training sets of the links the variants and
    graphs train on and the true pairs of the paired-data references (required), then the configured evaluation
    sets (optional). What ``extract@<space>`` embeds (or copies from ``byo/``)."""
    links = {v.config.connection.name: v.config.connection for v in variants.values()}
    for graph in graphs.values():
        links.update({link.name: link for link in graph.links})
    sets = {modality: (modality, True) for modality in extraction_sets(list(links.values())).get(space, {})}
    for graph in graphs.values():  # a paired graph's true pairs (the audio–3D reference)
        if graph.mode == "paired":
            file = graph_paired_sets(graph.pairs["modalities"], graph.pairs["dataset"]).get(space)
            if file:
                sets[file] = (set_modality(file.split("@")[0]), True)
    for name, variant in variants.items():
        if variant.paired:
            file = paired_sets(variant.config.connection.name, variant.paired).get(space)
            if file:
                sets[file] = (EVAL_SET_MODALITY[file.split("@")[0]], True)
    tasks = graph_tasks(params) if params.get("graph_tasks") else None  # tasks of your own add their sets
    for file_name, set_name in evaluation_sets(params["benchmarks"], space, tasks).items():
        sets[file_name] = (set_modality(set_name), False)
    return sets


def space_plan(params: Mapping[str, Any], space: str, variants: Mapping[str, Variant], graphs: Mapping[str, Graph]
               ) -> dict[str, Any]:
    """``extract@<space>``'s plan: :func:`space_sets` as JSON and the params it reads (:func:`extraction_params`)."""
    return {"format": PLAN_FORMAT, "space": space,
            "sets": {f: [m, required] for f, (m, required) in space_sets(params, space, variants, graphs).items()},
            "params": params_subset(params, extraction_params(space))}


def sets_from_plan(plan: Mapping[str, Any]) -> dict[str, tuple[str, bool]]:
    return {f: (str(m), bool(required)) for f, (m, required) in plan["sets"].items()}


def evaluation_plan(params: Mapping[str, Any], benchmark: str, variants: Mapping[str, Variant]) -> dict[str, Any]:
    """One benchmark's plan (the ``evaluate`` stage): the link it evaluates (None when params neither declare it nor list a dataset),
    its datasets and metric options, and the variants of that link with the seeds each is scored for (an imported
    release: once, its first seed's file)."""
    seeds = seeds_of(params)
    name = BENCHMARKS[benchmark]
    try:
        link = connection_of(params, name).to_link_dict()
    except ConfigError:
        link = None
    units = [{"name": n, "seeds": seeds[:1] if v.official else seeds, "once": bool(v.official)}
             for n, v in variants.items() if v.config.connection.name == name]
    return {"format": PLAN_FORMAT, "benchmark": benchmark, "link": link,
            "datasets": [str(d) for d in (params["benchmarks"].get(benchmark) or [])],
            "options": metric_options(benchmark, (params.get("evaluation") or {}).get(benchmark)), "variants": units}


def graph_evaluation_plan(params: Mapping[str, Any], variants: Mapping[str, Variant], graphs: Mapping[str, Graph]
                          ) -> dict[str, Any]:
    """``evaluate_graph``'s plan: its datasets and tasks (the built-in four and those params declare), the spaces of
    the no-connection row, each single connection's main variant that can score a task alone, every graph, the seeds."""
    seeds = seeds_of(params)
    single = [{"name": v, "seeds": seeds, "once": False} for c, v in SINGLE_CONNECTION_VARIANTS.items()
              if v in variants and variants[v].config.connection.name == c]
    return {"format": PLAN_FORMAT, "datasets": [str(d) for d in (params["benchmarks"].get("graph") or [])],
            "tasks": graph_tasks(params), "spaces": list(pipeline_spaces(params)), "variants": single,
            "graphs": list(graphs), "seeds": seeds}


def overview_plan(params: Mapping[str, Any], variants: Mapping[str, Variant], graphs: Mapping[str, Graph]) -> dict[str, Any]:
    """The overview plan, read by the ``report`` stage and :meth:`cmcr.api.ConnectedModel.from_pipeline`: the setup
    (the paper's numbers sit beside ours unless demo), the seeds, each benchmark's datasets in params' order; per
    variant its label, group, whether imported or trained on true pairs, its text sources and config (Table 5 and
    Figure 3 describe their rows by it); per graph its definition and label; setup paper's encoder declarations (a
    plugin space registers from them, as at validation; the API builds the encoders from them)."""
    paper = params.get("paper") or {}
    return {"format": PLAN_FORMAT, "setup": setup_of(params), "seeds": seeds_of(params),
            "benchmarks": {b: [str(d) for d in (v or [])] for b, v in params["benchmarks"].items()},
            "variants": {n: {"label": v.label, "group": v.group, "official": v.official, "paired": v.paired,
                             "exclude_sources": list(v.exclude_sources), "config": v.config.to_dict()}
                         for n, v in variants.items()},
            "graphs": {n: {"label": str((params["graphs"][n] or {}).get("label", n)), "graph": g.to_dict()}
                       for n, g in graphs.items()},
            "encoders": dict(paper.get("encoders") or {}) if setup_of(params) == "paper" else {},
            "trust_pickled_points": bool(((paper.get("encoders") or {}).get("ulip") or {}).get("trust_pickled_points", False))}


@dataclasses.dataclass(frozen=True)
class Overview:
    """The overview plan read back (:func:`overview_plan`)."""

    setup: str
    seeds: list[int]
    benchmarks: dict[str, list[str]]
    variants: dict[str, Variant]
    graphs: dict[str, Graph]
    graph_labels: dict[str, str]
    encoders: dict[str, Any]
    trust_pickled_points: bool


def overview_from_plan(plan: Mapping[str, Any]) -> Overview:
    """:func:`overview_plan`'s JSON read back into variants and graphs."""
    variants = {n: Variant(n, v["group"], v["label"], ConnectionConfig.from_dict(v["config"]),
                           tuple(v["exclude_sources"]), v["official"], v["paired"]) for n, v in plan["variants"].items()}
    return Overview(plan["setup"], [int(s) for s in plan["seeds"]], dict(plan["benchmarks"]), variants,
                    {n: Graph.from_dict(g["graph"]) for n, g in plan["graphs"].items()},
                    {n: g["label"] for n, g in plan["graphs"].items()}, dict(plan["encoders"]),
                    bool(plan["trust_pickled_points"]))


def pipeline_plans(params: Mapping[str, Any], variants: Mapping[str, Variant], graphs: Mapping[str, Graph]
                   ) -> dict[Path, dict[str, Any]]:
    """Every plan file the validate stage writes (paths relative to the project root, :mod:`cmcr.layout`): the
    aggregate stage's, one per variant, graph, data stage, space and evaluation family, and the overview."""
    out: dict[Path, dict[str, Any]] = {layout.AGGREGATE_PLAN: {"format": PLAN_FORMAT,
                                                               "jobs": aggregate_plan(params, variants, graphs)}}
    out |= {layout.variant_plan(n): variant_plan(params, v) for n, v in variants.items()}
    out |= {layout.graph_plan(n): graph_plan(params, g) for n, g in graphs.items()}
    out |= {layout.stage_plan(s): stage_plan(params, s) for s in STAGE_PARAMS}
    out |= {layout.space_plan(s): space_plan(params, s, variants, graphs) for s in pipeline_spaces(params)}
    out |= {layout.evaluation_plan(b): evaluation_plan(params, b, variants) for b in BENCHMARKS}
    out[layout.evaluation_plan("graph")] = graph_evaluation_plan(params, variants, graphs)
    out[layout.OVERVIEW_PLAN] = overview_plan(params, variants, graphs)
    return out


def unit_plans(plans: Mapping[Path, dict[str, Any]], variants: Mapping[str, Variant], graphs: Mapping[str, Graph]
               ) -> dict[str, dict[str, Any]]:
    """The trained units' plans among ``plans`` (:func:`pipeline_plans`), by how messages name them: a variant by its
    name, a graph as ``graph <name>``."""
    return ({n: plans[layout.variant_plan(n)] for n in variants}
            | {f"graph {n}": plans[layout.graph_plan(n)] for n in graphs})


def plan_text(plan: Mapping[str, Any]) -> str:
    """A plan file's text: one line per value, keys in the order they were resolved (the sets in the order
    extraction runs them), so an unchanged plan is unchanged bytes."""
    return json.dumps(plan, indent=1) + "\n"


def unit_plan_file(path: str | Path, kind: str, name: str) -> Path:
    """``path`` — the plan of the ``kind`` (variant, graph) called ``name`` — if the validate stage wrote it; else a
    ConfigError in one line naming the known ones (the plans beside it), before a stage logs anything."""
    path = Path(path)
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.json"))
        raise ConfigError(f"unknown {kind} {name!r}; params.yaml {kind}s are: {', '.join(known) or 'none'} ({path} "
                          "is missing; the validate stage writes it)")
    return path


def read_plan(path: str | Path) -> dict[str, Any]:
    """A plan file the validate stage wrote; ConfigError naming it when it is missing or of another format."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such plan (run the validate stage first: `dvc repro validate`)")
    plan = json.loads(path.read_text())
    if plan.get("format") != PLAN_FORMAT:
        raise ConfigError(f"{path}: not a {PLAN_FORMAT} plan (format {plan.get('format')!r}); rerun the validate stage")
    return plan
