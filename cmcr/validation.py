"""Checking the whole of ``params.yaml`` before any stage runs.

:func:`validate_params` checks the resolved configuration — every connection, every variant with the
demo scale applied, the Eq. 2 settings each aggregate needs, evaluation options, benchmarks, extraction,
the demo world and the paper setup's settings — and raises :class:`~cmcr.config.ConfigError` with one
line naming the key, its value and what is allowed. The ``validate`` stage runs it first, so a bad
``-S`` value stops ``dvc repro`` / ``dvc exp run`` before any stage deletes its outputs.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from cmcr.artifacts import ArtifactError
from cmcr.benchmarks import BENCHMARKS, GRAPH_SIDE_KEYS, GRAPH_TASK_KEYS, GRAPH_TASKS, graph_paired_sets
from cmcr.config import (PRECISIONS, ConfigError, _bool, _choice, _device, _positive, _positive_int,
                         connection_config_from_params, link_declaration)
from cmcr.encoders.base import encoder_source, register_paper_encoders, registered
from cmcr.encoders.demo import DEMO_SPACES
from cmcr.evaluation import METRIC_OPTIONS, metric_options
from cmcr.exmcr import ExtendConfig
from cmcr.experiments import (connections_used, pipeline_spaces, require_manifests, resolve_variant, scale_of, seeds_of,
                              setup_of, variant_connection, variant_names)
from cmcr.extraction import resolve_devices
from cmcr.graph import connections_of, graph_config, graph_training, graphs_of, stated_modalities
from cmcr.plan import space_sets, unit_from_plan
from cmcr.train import FEW_STEPS, planned_steps
from cmcr.world import WorldConfig

#: every top-level group params.yaml may have (README "Parameters")
TOP_LEVEL = ("setup", "seeds", "scale", "spaces", "graph_tasks", "memory", "noise", "projector", "loss", "train", "connections", "graphs", "graph_training", "extend", "demo", "extraction",
             "paper", "benchmarks", "evaluation", "variants")


def _mapping(name: str, value: Any, keys: tuple[str, ...] | None = None) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a mapping, got {value!r}")
    if keys is not None:
        unknown = sorted(set(value) - set(keys))
        if unknown:
            raise ConfigError(f"{name}: unknown key(s) {unknown}; known: {', '.join(keys)}")
    return value


def _check_demo(demo: Mapping[str, Any]) -> None:
    if isinstance(demo, Mapping) and "overrides" in demo:
        raise ConfigError("demo.overrides: the demo's training scale is now scale.small (scale.mode: setup trains the "
                          "demo small); move its train values there (README \"Training scale\")")
    demo = _mapping("demo", demo, ("world", "spaces"))
    world = _mapping("demo.world", demo.get("world"), tuple(f.name for f in dataclasses.fields(WorldConfig)))
    for key, value in world.items():
        _positive_int(f"demo.world.{key}", value, minimum=0 if key == "seed" else 1)
    spaces = _mapping("demo.spaces", demo.get("spaces"), ("dim", "epochs", "batch_size", "lr", "seed", "geometry"))
    for key in ("dim", "epochs", "batch_size"):
        if key in spaces:
            _positive_int(f"demo.spaces.{key}", spaces[key], minimum=1)
    if "seed" in spaces:
        _positive_int("demo.spaces.seed", spaces["seed"], minimum=0)
    if "lr" in spaces:
        _positive("demo.spaces.lr", spaces["lr"])
    if "geometry" in spaces:
        _choice("demo.spaces.geometry", spaces["geometry"], ("published", "learned"))


def _check_paper(paper: Mapping[str, Any], spaces: tuple[str, ...]) -> None:
    paper = _mapping("paper", paper, ("encoders", "texts", "sets", "extraction"))
    encoders = _mapping("paper.encoders", paper.get("encoders"), spaces)
    for space, kwargs in encoders.items():
        kwargs = _mapping(f"paper.encoders.{space}", kwargs)
        encoder_source(space, kwargs)
        if "precision" in kwargs:
            _choice(f"paper.encoders.{space}.precision", kwargs["precision"], PRECISIONS)
        if "device" in kwargs:
            _device(f"paper.encoders.{space}.device", kwargs["device"])
        for flag in ("trust_checkpoint", "trust_pickled_points", "enable_fusion", "quantize"):
            if flag in kwargs:
                _bool(f"paper.encoders.{space}.{flag}", kwargs[flag])
        for key in ("weights", "tokenizer"):
            if kwargs.get(key) is not None and not isinstance(kwargs[key], str):
                raise ConfigError(f"paper.encoders.{space}.{key} must be a path (or null), got {kwargs[key]!r}")
    texts = _mapping("paper.texts", paper.get("texts"), ("files", "cc3m_subset", "seed"))
    _mapping("paper.texts.files", texts.get("files"))
    for key in ("cc3m_subset", "seed"):
        if key in texts:
            _positive_int(f"paper.texts.{key}", texts[key], minimum=0)
    sets = _mapping("paper.sets", paper.get("sets"), spaces)
    for space, entries in sets.items():
        for name, entry in _mapping(f"paper.sets.{space}", entries).items():
            entry = _mapping(f"paper.sets.{space}.{name}", entry, ("manifest", "column"))
            if not isinstance(entry.get("manifest"), str):
                raise ConfigError(f"paper.sets.{space}.{name}.manifest must be a path, got {entry.get('manifest')!r}")
    extraction = _mapping("paper.extraction", paper.get("extraction"),
                          ("batch_size", "num_workers", "shard_size", "devices"))
    for key, value in extraction.items():
        if key == "devices":
            resolve_devices(value)  # auto | N | [GPU ids], checked against the GPUs visible here
            continue
        _positive_int(f"paper.extraction.{key}", value, minimum=0 if key == "num_workers" else 1)


#: a space's name is a folder name and a dvc.yaml stage key (``extract@<space>``)
_SPACE_NAME = r"[a-z][a-z0-9_]*"


def _check_spaces(params: Mapping[str, Any], links: Mapping[str, Any], graphs: Mapping[str, Any]) -> tuple[str, ...]:
    """``spaces``: the contrastive spaces the pipeline embeds (dvc.yaml's ``extract@`` run over it, ``spaces`` reads it).
    Setup demo: each has a stand-in; setup paper: each has an encoder (built in, or ``paper.encoders.<space>``'s
    ``plugin`` / ``encoder``, imported here so a missing class stops the pipeline before anything runs); every
    connection a variant uses and every graph stays among them. Returns the list."""

    spaces = pipeline_spaces(params)
    if not spaces or not all(isinstance(s, str) and re.fullmatch(_SPACE_NAME, s) for s in spaces):
        raise ConfigError(f"spaces must be a non-empty list of names (lower case, digits, _), e.g. [clip, clap, ulip]; "
                          f"got {params.get('spaces')!r}")
    if len(set(spaces)) != len(spaces):
        raise ConfigError(f"spaces lists a space twice: {list(spaces)}")
    setup = setup_of(params)
    if setup == "demo":
        missing = [s for s in spaces if s not in DEMO_SPACES]
        if missing:
            raise ConfigError(f"spaces: {missing} has no demo stand-in (the demo world's spaces are "
                              f"{', '.join(DEMO_SPACES)}); a space of your own runs in setup paper (its encoder: "
                              "paper.encoders) or byo (its embeddings) — README \"Adding a space of your own\"")
    if setup == "paper":  # its plugins were imported at the start (register_paper_encoders)
        for space in spaces:
            _check_encoder(space)
    for name in connections_used(params):
        if name not in links:
            users = [v for v in variant_names(params) if variant_connection(params, v) == name]
            raise ConfigError(f"variants {users} train the link {name!r}, which params do not declare: "
                              f"{link_declaration(name)}")
        outside = [s for s in links[name].spaces if s not in spaces]
        if outside:
            raise ConfigError(f"spaces: {outside} not listed, but the variants use connection {name} "
                              f"({' + '.join(links[name].spaces)}); add it to spaces or drop those variants")
    for name, graph in graphs.items():
        outside = [s for s in graph.spaces if s not in spaces]
        if outside:
            raise ConfigError(f"graphs.{name}.spaces: {outside} not in spaces ({', '.join(spaces)}), so the pipeline "
                              "embeds nothing for it; add it to spaces (setup paper: its encoder in paper.encoders)")
    return spaces


def _check_graph_tasks(params: Mapping[str, Any], spaces: tuple[str, ...], links: Mapping[str, Any]) -> None:
    """``graph_tasks``: retrieval tasks of your own for the graph family — each side a listed space and a modality
    it embeds (registered, or stated by its links), two different modalities, ``classes`` a list of column names.
    The demo world has sets for the built-in tasks only."""

    tasks = _mapping("graph_tasks", params.get("graph_tasks"))
    if tasks and setup_of(params) == "demo":
        raise ConfigError(f"graph_tasks: {sorted(tasks)} read sets of your own (<space>/graph_<modality>@<dataset>); "
                          "the demo world has sets for the built-in tasks only — use setup paper or byo")
    for name, entry in tasks.items():
        key = f"graph_tasks.{name}"
        if not re.fullmatch(_SPACE_NAME, str(name)) or name in GRAPH_TASKS:
            raise ConfigError(f"{key}: a task name is lower case, digits and _, and not a built-in one "
                              f"({', '.join(GRAPH_TASKS)})")
        entry = _mapping(key, entry, GRAPH_TASK_KEYS)
        chosen = []
        for side in ("query", "gallery"):
            value = _mapping(f"{key}.{side}", entry.get(side), GRAPH_SIDE_KEYS)
            space, modality = value.get("space"), value.get("modality")
            if space not in spaces:
                raise ConfigError(f"{key}.{side}.space must be one of spaces ({', '.join(spaces)}), got {space!r}")
            if not isinstance(modality, str) or not re.fullmatch(r"[a-z]+(_[a-z]+)*", modality):
                raise ConfigError(f"{key}.{side}.modality must be a modality name (lower case letters and _), "
                                  f"got {modality!r}")
            embeds = stated_modalities(space, links.values())
            if modality not in embeds:
                raise ConfigError(f"{key}.{side}.modality: {space} embeds {list(embeds)}, not {modality!r}")
            chosen.append(modality)
        if chosen[0] == chosen[1]:
            raise ConfigError(f"{key}: query and gallery are both {chosen[0]}; a task retrieves one modality with another")
        classes = entry.get("classes", [])
        if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes):
            raise ConfigError(f"{key}.classes must be a list of column names of the query set (the ceiling's "
                              f"classes), got {classes!r}")


def _check_encoder(space: str) -> None:
    """Setup paper: ``space`` has an encoder — built in, or registered by its ``paper.encoders.<space>.plugin``
    (imported by :func:`cmcr.encoders.base.register_paper_encoders` at the start of :func:`check_params`)."""

    try:
        registered(space)
    except KeyError:
        raise ConfigError(f"paper.encoders.{space}: no encoder registered as {space!r} — a space of your own names the "
                          f"file that registers it (plugin: plugins/<file>.py) or a registered encoder (encoder: clip); "
                          "README \"Adding a space of your own\"") from None


def _check_benchmarks(benchmarks: Any, links: Mapping[str, Any]) -> None:
    """Each listed benchmark's datasets; a benchmark with datasets evaluates its link (``BENCHMARKS``), which params
    must declare (``connections.<link>.link``)."""
    benchmarks = _mapping("benchmarks", benchmarks, tuple(BENCHMARKS) + ("graph",))
    for name, datasets in benchmarks.items():
        if datasets is None:
            continue
        if name in BENCHMARKS and datasets and BENCHMARKS[name] not in links:
            raise ConfigError(f"benchmarks.{name} evaluates the link {BENCHMARKS[name]!r}, which params do not declare: "
                              f"{link_declaration(BENCHMARKS[name])}")
        if not isinstance(datasets, list) or not all(isinstance(d, str) and d for d in datasets):
            raise ConfigError(f"benchmarks.{name} must be a list of dataset names, e.g. [demo], got {datasets!r}")
        if len(set(datasets)) != len(datasets):
            raise ConfigError(f"benchmarks.{name} lists a dataset twice: {datasets}")


def _check_no_train_seed(params: Mapping[str, Any]) -> None:
    """The pipeline's training seeds are ``seeds`` (one run per entry); a ``train.seed`` anywhere in params
    would be silently replaced, so it is an error naming where it is. Likewise ``train.auto_steps`` /
    ``auto_min_batch``: the training scale is params' ``scale``."""
    places = [("train", params.get("train"))]
    places += [(f"connections.{c}.train", (g or {}).get("train")) for c, g in (params.get("connections") or {}).items()
               if isinstance(g, Mapping)]
    places += [(f"variants.{v}.overrides.train", ((e or {}).get("overrides") or {}).get("train"))
               for v, e in (params.get("variants") or {}).items() if isinstance(e, Mapping)
               and isinstance(e.get("overrides") or {}, Mapping)]
    for where, group in places:
        if isinstance(group, Mapping) and "seed" in group:
            raise ConfigError(f"{where}.seed: the pipeline trains every variant once per entry of `seeds` "
                              f"(e.g. seeds: [0, 1, 2]); remove {where}.seed = {group['seed']!r} and list it in seeds")
        for key in ("auto_steps", "auto_min_batch"):  # one way to ask for scale auto: params' scale
            if isinstance(group, Mapping) and key in group:
                raise ConfigError(f"{where}.{key}: set the training scale with scale.mode: auto and scale.auto "
                                  "(steps, min_batch), not in a train group (README \"Training scale\")")


def validate_params(params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Check everything a ``dvc repro`` would use; return ``{variant: effective config as a dict}``.

    Raises ConfigError (one line: key, value, what is allowed) at the first problem.
    """
    return {name: {"group": v.group, "label": v.label, **v.config.to_dict()}
            for name, v in check_params(params).items()}


def check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`validate_params`'s checks; returns every variant resolved (``{name: Variant}``)."""

    if not isinstance(params, Mapping):
        raise ConfigError(f"params must be a mapping, got {type(params).__name__}")
    unknown = sorted(set(params) - set(TOP_LEVEL))
    if unknown:
        raise ConfigError(f"params: unknown top-level key(s) {unknown}; known: {', '.join(TOP_LEVEL)}")
    setup_of(params)
    seeds_of(params)
    scale_of(params)
    _check_no_train_seed(params)
    register_paper_encoders(params)  # setup paper: plugins imported, aliases made — once, before any link is checked

    connections = _mapping("connections", params.get("connections"))
    for name, groups in connections.items():
        groups = _mapping(f"connections.{name}", groups)
        if "link" not in groups:
            raise ConfigError(f"connections.{name}: no link declared — every connection states its link, the "
                              f"paper's too: {link_declaration(name)} (README \"The MCR graph\")")

    links = connections_of(params)  # declared links parsed and their modalities checked
    trained_by_variants = set(connections_used(params))  # their configs are checked per variant (names the variant)
    for name in [n for n in links if n not in trained_by_variants]:
        try:  # a declared link's whole config (base groups + its own), as a graph trains it
            connection_config_from_params(params, name)
        except ConfigError as exc:  # named once: a message that already starts with the key keeps it as it is
            message = str(exc)
            raise ConfigError(message if message.startswith(f"connections.{name}") else
                              f"connections.{name}: {message}") from None
    graphs = graphs_of(params, links)  # the MCR graphs: spaces, links, mode (cmcr/graph.py)
    _check_demo(params.get("demo"))
    spaces = _check_spaces(params, links, graphs)
    _check_graph_tasks(params, spaces, links)
    _check_paper(params.get("paper"), spaces)
    _check_benchmarks(params.get("benchmarks"), links)
    extraction = _mapping("extraction", params.get("extraction"), ("max_failure_rate",))
    if "max_failure_rate" in extraction:
        rate = extraction["max_failure_rate"]
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 <= rate <= 1:
            raise ConfigError(f"extraction.max_failure_rate must be a number in [0, 1], got {rate!r}")
    evaluation = _mapping("evaluation", params.get("evaluation"), tuple(METRIC_OPTIONS) or None)
    for benchmark, options in evaluation.items():
        try:
            metric_options(benchmark, _mapping(f"evaluation.{benchmark}", options))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    variants = _mapping("variants", params.get("variants"))
    if not variants:
        raise ConfigError("variants: none listed; the pipeline trains and evaluates the variants (at least K)")
    resolved = {}
    for name in variant_names(params):
        try:
            variant = resolve_variant(params, name)
        except ConfigError as exc:
            message = str(exc)
            if message.startswith(f"variants.{name}") or message.startswith("unknown variant"):
                raise
            connection = (variants.get(name) or {}).get("connection", "clip_clap") if isinstance(
                variants.get(name), Mapping) else "?"
            raise ConfigError(f"variant {name} (connection {connection}): {message}") from None
        resolved[name] = variant
    _check_graphs(params, graphs)  # what the pipeline needs of each graph (after the variants: their messages first)
    return resolved


def _check_graphs(params: Mapping[str, Any], graphs: Mapping[str, Any]) -> None:
    """What the pipeline needs of each checked graph: its links' effective configs, ``extend``'s switches, a
    paired graph's true pairs (the demo world has audio–3D pairs; setup paper lists their manifests), and links
    whose data the pipeline's stages compute (the built-in connections')."""

    ExtendConfig.from_params(params)
    graph_training(params)
    if not graphs:
        raise ConfigError("graphs: none declared; the pipeline's graph@<name>, evaluate_graph and report stages need "
                          "at least one (README \"The MCR graph\")")
    for name, graph in graphs.items():
        try:
            graph_config(params, graph)
        except ConfigError as exc:
            raise ConfigError(f"graphs.{name}: {exc}") from None
        if graph.mode != "paired":
            continue
        dataset, modalities = graph.pairs["dataset"], graph.pairs["modalities"]
        if setup_of(params) == "demo" and (dataset != "demo" or sorted(modalities.values()) != ["audio", "points"]):
            raise ConfigError(f"graphs.{name}.pairs: the demo world's true pairs of modalities no link connects are "
                              f"audio-points, dataset demo; got {dict(modalities)} @ {dataset!r}")
        if setup_of(params) == "paper":
            require_manifests(params, graph_paired_sets(modalities, dataset), f"graphs.{name}.pairs: {dataset!r}",
                              "The MCR graph")


def check_byo_layout(sets: Mapping[str, Mapping[str, tuple[str, bool]]], folder: Any, temp_workspace: bool = False
                     ) -> dict[tuple[str, str], int]:
    """``setup: byo``: every required set of every space (``sets``: ``{space: {file: (modality, required)}}``, the
    spaces' plans, :func:`cmcr.plan.space_sets`) is in ``folder``
    as ``<space>/<set>.npy`` + ``.parquet`` with the same number of rows, and so is every optional set that is
    there at all. Reads only the NPY headers and Parquet footers, so it runs before any stage has replaced an
    output. ``temp_workspace``: the check runs in a copy DVC made (``dvc exp run --temp`` or a queued
    experiment), which holds git- and DVC-tracked files only — the error then says so. Returns ``{(space, set):
    rows}`` of the sets checked; raises :class:`~cmcr.artifacts.ArtifactError` naming the first file at fault."""

    folder = Path(folder)
    hint = (" — this is a temporary copy made by `dvc exp run --temp` or the experiment queue, which holds only "
            "git- and DVC-tracked files: track the embeddings (`dvc add byo/embeddings`, then commit) or run "
            "`dvc exp run` without --temp" if temp_workspace else "")
    checked: dict[tuple[str, str], int] = {}
    for space, files in sets.items():
        for name, (_, required) in files.items():
            npy, table = folder / space / f"{name}.npy", folder / space / f"{name}.parquet"
            if not npy.exists() and not required:
                continue
            for path in (npy, table):
                if not path.is_file():
                    raise ArtifactError(f"setup byo: {path} is missing ({'required' if required else 'its pair is there'}"
                                        f"); layout in byo/embeddings/README.md{hint}")
            try:
                rows = np.load(npy, mmap_mode="r").shape[0]
            except (ValueError, OSError) as exc:
                raise ArtifactError(f"setup byo: {npy}: not a readable .npy matrix ({exc})") from None
            try:
                listed = pq.ParquetFile(table).metadata.num_rows
            except Exception as exc:  # noqa: BLE001 — any pyarrow error is an unreadable file
                raise ArtifactError(f"setup byo: {table}: not a readable Parquet table ({exc})") from None
            if rows != listed:
                raise ArtifactError(f"setup byo: {npy} has {rows} rows but {table} lists {listed}")
            checked[space, name] = int(rows)
    return checked


def pipeline_sets(params: Mapping[str, Any]) -> dict[str, dict[str, tuple[str, bool]]]:
    """``{space: {file: (modality, required)}}`` every pipeline space embeds under ``params`` (checked first):
    what the validate stage writes into the spaces' plans (:func:`cmcr.plan.space_sets`)."""
    variants, graphs = check_params(params), graphs_of(params)
    return {space: space_sets(params, space, variants, graphs) for space in pipeline_spaces(params)}


def few_steps(plans: Mapping[str, Mapping[str, Any]], rows) -> list[tuple[str, str, str]]:
    """Every trained unit of ``plans`` (``{unit: its plan}``, :func:`cmcr.plan.unit_plans`: a variant, a graph; an
    extend graph per leaf) that will run fewer than
    :data:`cmcr.train.FEW_STEPS` optimiser steps: ``(unit, steps, what gives them)`` (steps as text: ``"80"``, or
    ``"≤ 80"`` for a bound). ``rows(space, set)`` is the
    number of items of an embedding set (None: not known yet, the unit is skipped); the steps follow from the
    training scale as the trainer applies it (:func:`cmcr.train.planned_steps`), read from each unit's plan (one
    format: :class:`cmcr.plan.UnitPlan`). A variant that excludes text sources trains on fewer texts: its count is an
    upper bound."""
    units: list[tuple[str, Any, list[tuple[str, str]], bool]] = []  # (unit, train, its sets, n an upper bound)
    for name, plan in plans.items():
        plan = unit_from_plan(plan)
        graph, configs = plan.graph, plan.configs
        if plan.official or graph.mode == "linear":
            continue  # imported, or fitted in closed form: no optimiser steps
        lead = next(iter(configs.values()))  # joint: one optimiser, the first link's settings
        if graph.mode == "paired":
            first = graph.spaces[0]
            units.append((name, lead.train, [(first, plan.true_pairs[first])], False))
        elif graph.mode == "joint":
            link = graph.links[0]
            units.append((name, lead.train, [(link.spaces[0], link.shared_modality)], bool(plan.exclude_sources)))
        else:
            for leaf, (parent, link) in graph.toward_base().items():
                sets = {"shared": (leaf, link.shared_modality), "leaf": (leaf, link.memory_modality[leaf]),
                        "parent": (parent, link.memory_modality[parent])}
                units.append((f"{name} leaf {leaf}", configs[link.name].train, [sets[c] for c in plan.extend.centres],
                              False))
    out = []
    for unit, train, sets, bound in units:
        counts = [rows(space, name) for space, name in sets]
        if any(c is None for c in counts) or sum(counts) < 2:
            continue
        n = sum(counts)
        ran, steps = planned_steps(train, n)
        if steps < FEW_STEPS:
            at_most = "≤ " if bound else ""
            out.append((unit, f"{at_most}{steps}", f"{ran.epochs} epochs × {at_most}{steps // ran.epochs} batches of "
                                                   f"{min(ran.batch_size, n):,} from {at_most}{n:,} items"))
    return out
