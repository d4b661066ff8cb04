"""The MCR graph (C-MCR §1): contrastive spaces as nodes, connections through a shared modality as links.

"C-MCR treats each learned MCR space as a node and the overlapping modalities between different MCRs as
links." A graph is declared as data (``graphs.<name>`` in params.yaml)::

    graphs:
      audio_visual_3d: {mode: joint, spaces: [clip, clap, ulip], links: [clip_clap, clip_ulip]}

- ``spaces``: registered encoder spaces (:func:`cmcr.encoders.base.register`); their modalities come from
  the encoder class (``ClipSpace.modalities = ("image", "text")``), so a fourth space registered under a
  name can be linked with no other code.
- ``links``: connections (:class:`cmcr.config.Connection`: two spaces, the shared modality, each space's
  memory modality), each declared in params (``connections.<name>.link``), the paper's two included.
- ``mode``: ``joint`` — C-MCR generalised: one projector per space, the Eq. 10 loss of every link summed,
  trained together, so every modality lands in one new space (:func:`train_joint`); ``extend`` — Ex-MCR:
  a ``base`` space stays as it is and every other space is extended into it along the links
  (:func:`train_extend`, :mod:`cmcr.exmcr`); ``paired`` — the paired-data reference of a modality pair no
  link connects (e.g. audio–3D): two spaces' projectors trained on *true* pairs (``pairs: {dataset,
  modalities: {space: modality}}``), never C-MCR's data.

:func:`check_graph` refuses a bad definition with one line naming the key: an unknown space, a link
between spaces that do not share its modality, a space no link reaches, in ``extend`` mode two bases, a
cycle, or a leaf without a path to the base.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cmcr.artifacts import load_npy, load_torch
from cmcr.checks import EmbeddingError, check_matrix, check_same_rows
from cmcr.closed_form import CONTEXT_ROWS, LinearConfig, LinearLinkData, LinearMap, fit_link
from cmcr.config import (GROUPS, ConfigError, Connection, ConnectionConfig, connection_config_from_params,
                         connection_of, deep_merge, paired_objective)
from cmcr.encoders.base import _REGISTRY
from cmcr.enhance import semantic_completion
from cmcr.exmcr import ExtendConfig, ExtendProjector, Identity, modality_centric_data, stack_centres, train_leaf
from cmcr.experiments import pipeline_spaces, training_scale
from cmcr.loss import symmetric_info_nce, total_loss
from cmcr.projector import Projector, build_projectors
from cmcr.train import ConnectionData, Fitted, fit_streams, train_seeds

log = logging.getLogger(__name__)

GRAPH_MODES = ("joint", "extend", "paired", "linear")
_GRAPH_KEYS = {"mode", "spaces", "links", "base", "label", "pairs", "map", "centre", "alpha"}
#: a graph entry's keys of mode linear (cmcr.closed_form.LinearConfig)
_LINEAR_KEYS = ("map", "centre", "alpha")
GRAPH_FORMAT = "cmcr.graph/1"


def is_registered(space: str) -> bool:
    """Whether an encoder space registered under ``space`` states its modalities."""
    modalities = getattr(_REGISTRY.get(space), "modalities", None)
    return isinstance(modalities, (tuple, list)) and len(modalities) > 0


def space_modalities(space: str) -> tuple[str, ...]:
    """The modalities a registered encoder space embeds (its class's ``modalities``); ConfigError if unknown."""

    if not is_registered(space):
        known = sorted(n for n in _REGISTRY if is_registered(n))
        raise ConfigError(f"unknown space {space!r}: no registered encoder space states its modalities "
                          f"(known: {', '.join(known)})")
    return tuple(_REGISTRY[space].modalities)


def stated_modalities(space: str, links: Any) -> tuple[str, ...]:
    """What ``space`` embeds: its registered encoder's modalities, or — a space of your own whose encoder is not
    imported here (setup byo; a checkpoint read without its plugin) — those the ``links`` through it state."""
    if is_registered(space):
        return space_modalities(space)
    return tuple(dict.fromkeys(m for link in links if space in link.spaces
                               for m in (link.shared_modality, link.memory_modality[space])))


def declared_spaces(params: Mapping[str, Any], spaces: Any = ()) -> tuple[str, ...]:
    """Those of ``spaces`` that no registered encoder describes but params lists (``spaces``) — setup byo's spaces
    of your own, whose embeddings you bring: their modalities are those their links state. Setup paper registers
    its encoders first (:func:`connections_of` does). Reads ``spaces`` only when one of ``spaces`` is unregistered
    (a stage over the built-in spaces does not depend on the list)."""

    missing = [s for s in (spaces if isinstance(spaces, (list, tuple)) else ()) if isinstance(s, str)
               and not is_registered(s)]
    if not missing:
        return ()
    listed = pipeline_spaces(params)
    return tuple(s for s in missing if s in listed)


def connections_of(params: Mapping[str, Any]) -> dict[str, Connection]:
    """The links params declare (``connections.<name>.link``, the paper's ``clip_clap`` and ``clip_ulip`` as any
    other), in their order, each checked (:func:`check_link`). Setup paper: the encoders of ``paper.encoders`` must
    be registered before (:func:`cmcr.encoders.base.register_paper_encoders`, called once at start-up by
    :func:`cmcr.validation.validate_params` and the report stage), so the checks know a plugin space's modalities."""
    out: dict[str, Connection] = {}
    for name, groups in (params.get("connections") or {}).items():
        if isinstance(groups, Mapping) and "link" in groups:
            out[name] = connection_of(params, name)
            check_link(out[name], f"connections.{name}.link", declared_spaces(params, out[name].spaces))
    return out


def check_link(connection: Connection, key: str, declared: tuple[str, ...] = ()) -> None:
    """A link's modalities exist in its spaces: the shared one in both, each memory modality in its own space
    and different from the shared one. ConfigError naming ``key`` otherwise. A ``declared`` space (listed in
    params, no encoder registered: setup byo) has the modalities the link states (its files are checked later)."""
    for space in connection.spaces:
        if space in declared:
            if connection.memory_modality[space] == connection.shared_modality:
                raise ConfigError(f"{key}: memory modality of {space} must differ from the shared "
                                  f"{connection.shared_modality!r}")
            continue
        try:
            modalities = space_modalities(space)
        except ConfigError as exc:
            raise ConfigError(f"{key}: {exc}; a space of your own is listed in spaces (setup paper: with its "
                              "encoder, paper.encoders.<space>.plugin)") from None
        if connection.shared_modality not in modalities:
            raise ConfigError(f"{key}: spaces {list(connection.spaces)} share no {connection.shared_modality!r}: "
                              f"{space} embeds {list(modalities)}")
        memory = connection.memory_modality[space]
        if memory not in modalities or memory == connection.shared_modality:
            raise ConfigError(f"{key}: memory modality {memory!r} of {space} must be one of its other modalities "
                              f"({[m for m in modalities if m != connection.shared_modality]})")


@dataclass(frozen=True)
class Graph:
    """Spaces, the links between them and how they are trained (``joint``, ``extend`` into ``base``, ``paired``
    on true pairs, or fitted in closed form into ``base``: ``linear``, its fit in ``closed_form``)."""

    name: str
    mode: str
    spaces: tuple[str, ...]
    links: tuple[Connection, ...]
    base: str | None = None
    #: mode paired: ``{"dataset": name, "modalities": {space: modality}}``
    pairs: Mapping[str, Any] | None = None
    #: mode linear: :class:`cmcr.closed_form.LinearConfig` as a dict (map, centre, alpha)
    closed_form: Mapping[str, Any] | None = None

    def modalities(self) -> dict[str, str]:
        """``{modality: the space that embeds it}`` for every modality of the graph: what the unified space can
        embed and compare, including pairs no link trains. A modality several spaces embed comes from the base
        (``extend``: its own alignment is what Ex-MCR keeps), else from the first space listed; mode ``paired``
        has only its two paired modalities."""
        if self.mode == "paired":
            return {m: s for s, m in (self.pairs or {})["modalities"].items()}
        out: dict[str, str] = {}
        for space in ((self.base,) if self.base else ()) + self.spaces:
            for modality in stated_modalities(space, self.links):
                out.setdefault(modality, space)
        return out

    def owners(self, modality: str) -> list[str]:
        """The spaces whose modules embed ``modality`` into the unified space: for a one-link graph of mode joint (a
        C-MCR connection, a variant) its shared modality is embedded by both spaces (CLIP's and CLAP's texts — the
        API averages them by default); otherwise the one space :meth:`modalities` names. ValueError naming what the
        graph embeds for another modality."""
        owners = self.modalities()
        if modality not in owners:
            raise ValueError(f"{self.label()} embeds {', '.join(owners)}, not {modality}")
        if self.mode == "joint" and len(self.links) == 1 and modality == self.links[0].shared_modality:
            return list(self.links[0].spaces)
        return [owners[modality]]

    def label(self) -> str:
        """How messages name it: ``the clip_clap connection (K)`` for a one-link joint or paired graph (a variant),
        else ``graph <name>``."""
        if len(self.links) == 1 and self.mode in ("joint", "paired"):
            return f"the {self.links[0].name} connection ({self.name})"
        return f"graph {self.name}"

    def to_dict(self) -> dict[str, Any]:
        """Plain form (checkpoints): the links with their definitions, so a checkpoint needs no params."""
        return {"name": self.name, "mode": self.mode, "spaces": list(self.spaces), "base": self.base,
                "links": [c.to_link_dict() for c in self.links],
                "pairs": None if self.pairs is None else {"dataset": self.pairs["dataset"],
                                                          "modalities": dict(self.pairs["modalities"])},
                "closed_form": None if self.closed_form is None else dict(self.closed_form)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Graph":
        links = tuple(Connection.from_link_dict(link) for link in data["links"])
        return cls(str(data["name"]), str(data["mode"]), tuple(data["spaces"]), links, data.get("base"),
                   data.get("pairs"), data.get("closed_form"))

    def toward_base(self) -> dict[str, tuple[str, Connection]]:
        """``extend`` mode: each leaf's neighbour one link nearer the base, and that link."""
        if self.base is None:
            raise ValueError(f"graph {self.name} has no base (mode {self.mode})")
        return _reach(self.base, self.links)


def _reach(start: str, links: Sequence[Connection]) -> dict[str, tuple[str, Connection]]:
    """Breadth-first from ``start`` over ``links``: every other space reached, with its neighbour one link nearer
    ``start`` and that link."""
    out, frontier = {}, [start]
    while frontier:
        node = frontier.pop(0)
        for link in links:
            if node in link.spaces:
                other = link.spaces[1] if link.spaces[0] == node else link.spaces[0]
                if other != start and other not in out:
                    out[other] = (node, link)
                    frontier.append(other)
    return out


def check_graph(name: str, entry: Any, connections: Mapping[str, Connection], declared: tuple[str, ...] = ()) -> Graph:
    """``graphs.<name>`` of params as a :class:`Graph`; ConfigError with the key for any bad definition (a
    ``declared`` space: see :func:`check_link`)."""
    key = f"graphs.{name}"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{key} must be a mapping {{mode, spaces, links[, base]}}, got {entry!r}")
    unknown = sorted(set(entry) - _GRAPH_KEYS)
    if unknown:
        raise ConfigError(f"{key}: unknown key(s) {unknown}; known: {', '.join(sorted(_GRAPH_KEYS))}")
    mode = entry.get("mode", "joint")
    if mode not in GRAPH_MODES:
        raise ConfigError(f"{key}.mode must be one of {', '.join(GRAPH_MODES)}; got {mode!r}")
    spaces = entry.get("spaces")
    if not isinstance(spaces, list) or len(spaces) < 2 or not all(isinstance(s, str) for s in spaces) \
            or len(set(spaces)) != len(spaces):
        raise ConfigError(f"{key}.spaces must be a list of two or more distinct space names, got {spaces!r}")
    for space in spaces:
        if space in declared:
            continue
        try:
            space_modalities(space)
        except ConfigError as exc:
            raise ConfigError(f"{key}.spaces: {exc}") from None
    if mode == "paired":
        return _check_paired(name, key, entry, spaces, declared)
    if "pairs" in entry:
        raise ConfigError(f"{key}.pairs is for mode paired (the paired-data reference); mode {mode} trains on links")
    closed_form = None
    if mode == "linear":
        try:
            closed_form = LinearConfig(**{k: entry[k] for k in _LINEAR_KEYS if k in entry}).to_dict()
        except ConfigError as exc:
            raise ConfigError(f"{key}.{exc}") from None
    elif any(k in entry for k in _LINEAR_KEYS):
        raise ConfigError(f"{key}: {', '.join(k for k in _LINEAR_KEYS if k in entry)} are for mode linear (a closed-form "
                          f"map); mode {mode} trains")
    names = entry.get("links")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{key}.links must be a list of connection names, got {names!r}")
    links = []
    for link_name in names:
        if link_name not in connections:
            raise ConfigError(f"{key}.links: unknown connection {link_name!r}; known: {', '.join(sorted(connections))} "
                              "(declare others as connections.<name>.link)")
        link = connections[link_name]
        outside = [s for s in link.spaces if s not in spaces]
        if outside:
            raise ConfigError(f"{key}.links: {link_name} links {list(link.spaces)}, but {outside} is not in {key}.spaces")
        links.append(link)  # its modalities were checked where it was declared (connections_of)
    reached = {spaces[0], *_reach(spaces[0], links)}  # every space reached: one no link touches would stay unaligned
    base = entry.get("base")
    if mode in ("extend", "linear"):
        if isinstance(base, list):
            raise ConfigError(f"{key}.base: {mode} mode has one base space, got {len(base)}: {base!r}")
        if not isinstance(base, str) or base not in spaces:
            raise ConfigError(f"{key}.base must name one of {key}.spaces ({', '.join(spaces)}), got {base!r}")
        unreached = [s for s in spaces if s not in reached]
        if unreached:
            raise ConfigError(f"{key}: leaf space(s) {unreached} have no path to the base {base!r} through {key}.links")
        if len(links) != len(spaces) - 1:  # connected with more links than a tree has: some leaf has two paths
            raise ConfigError(f"{key}.links: {mode} mode needs a tree (each leaf one path to the base {base!r}); "
                              f"{len(links)} links over {len(spaces)} spaces make a cycle")
    else:
        if base is not None:
            raise ConfigError(f"{key}.base is for modes extend and linear; mode joint trains a projector for every space")
        unreached = [s for s in spaces if s not in reached]
        if unreached:
            raise ConfigError(f"{key}: space(s) {unreached} are not linked to the others through {key}.links")
    return Graph(name, mode, tuple(spaces), tuple(links), base if mode in ("extend", "linear") else None,
                 closed_form=closed_form)


def _check_paired(name: str, key: str, entry: Mapping[str, Any], spaces: list[str], declared: tuple[str, ...] = ()
                  ) -> "Graph":
    """Mode ``paired``: two spaces, no links, ``pairs: {dataset: <name>, modalities: {space: modality}}``."""
    if len(spaces) != 2:
        raise ConfigError(f"{key}.spaces: mode paired trains two spaces on true pairs, got {len(spaces)}")
    if entry.get("links") or entry.get("base") is not None:
        raise ConfigError(f"{key}: mode paired trains on true pairs, not on links or into a base (remove links/base)")
    pairs = entry.get("pairs")
    if not isinstance(pairs, Mapping) or set(pairs) != {"dataset", "modalities"} or not isinstance(pairs["dataset"], str) \
            or not isinstance(pairs["modalities"], Mapping) or set(pairs["modalities"]) != set(spaces):
        raise ConfigError(f"{key}.pairs must be {{dataset: <name>, modalities: {{{spaces[0]}: <modality>, "
                          f"{spaces[1]}: <modality>}}}}, got {pairs!r}")
    for space, modality in pairs["modalities"].items():
        if space not in declared and modality not in space_modalities(space):
            raise ConfigError(f"{key}.pairs.modalities.{space}: {space} embeds {list(space_modalities(space))}, "
                              f"not {modality!r}")
    return Graph(name, "paired", tuple(spaces), (), None,
                 {"dataset": pairs["dataset"], "modalities": {s: pairs["modalities"][s] for s in spaces}})


def graph_training(params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """params' ``graph_training``, checked: groups (``loss``, ``projector``…) every link trained *inside a graph*
    (modes joint, extend, paired) takes on top of the base groups — below ``connections.<link>``, so a link's own
    setting wins. The default (params.yaml) is τ2 = τ3 = 0.05 and per-modality BatchNorm statistics: on both public
    worlds they raise the emergent audio↔3D pair (README "What the graph's training settings do"); ``{}`` trains
    a graph's links at the paper's settings. The variants (the paper's tables) never read it."""
    block = params.get("graph_training") or {}
    if not isinstance(block, Mapping):
        raise ConfigError(f"graph_training must be a mapping of config groups, got {block!r}")
    unknown = sorted(set(block) - set(GROUPS))
    if unknown:
        raise ConfigError(f"graph_training: unknown group(s) {unknown}; known: {', '.join(GROUPS)}")
    for group, values in block.items():
        if not isinstance(values, Mapping):
            raise ConfigError(f"graph_training.{group} must be a mapping, got {values!r}")
    return {g: dict(v) for g, v in block.items()}


def with_graph_training(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with :func:`graph_training` merged into its base groups (what :func:`graph_config` resolves)."""
    block = graph_training(params)
    return {**params, **{g: deep_merge(params.get(g) or {}, v) for g, v in block.items()}}


def graph_config(params: Mapping[str, Any], graph: "Graph") -> dict[str, ConnectionConfig]:
    """Each link's effective config (base groups → :func:`graph_training` → ``connections.<link>`` → the training
    scale), as the variants resolve theirs; mode ``paired``: one config named after the graph, the audio–visual
    connection's projector and optimisation with the pair term only (as a paired-data reference variant)."""

    if graph.mode == "linear":
        return {}  # fitted in closed form: no training config
    params = with_graph_training(params)
    if graph.mode != "paired":
        return {link.name: connection_config_from_params(params, link.name, training_scale(params, link.name)[0])
                for link in graph.links}
    base = connection_config_from_params(params, "clip_clap", training_scale(params, "clip_clap")[0])
    pair = Connection(graph.name, graph.spaces, "true pairs", dict(graph.pairs["modalities"]))
    return {graph.name: paired_objective(base, pair)}


def graphs_of(params: Mapping[str, Any], connections: Mapping[str, Connection] | None = None) -> dict[str, Graph]:
    """Every graph params declare (``graphs``), checked; ``connections``: :func:`connections_of` if already read."""
    graphs = params.get("graphs") or {}
    if not isinstance(graphs, Mapping):
        raise ConfigError(f"graphs must be a mapping name → {{mode, spaces, links}}, got {graphs!r}")
    connections = connections_of(params) if connections is None else connections
    return {name: check_graph(name, entry, connections, declared_spaces(params, (entry or {}).get("spaces")
                                                                         if isinstance(entry, Mapping) else ()))
            for name, entry in graphs.items()}


# ----------------------------------------------------------------------------------------- closed-form fitting

def fit_linear(graph: Graph, data: Mapping[str, LinearLinkData]) -> "GraphResult":
    """``linear`` mode (:mod:`cmcr.closed_form`): the base's map is the identity, each leaf's the product of the
    maps along its path to the base (base-outwards), each fitted on its link's shared set
    (``data[link]``, :class:`cmcr.closed_form.LinearLinkData`) as ``graph.closed_form`` says; with ``centre``
    every space's map subtracts its modalities' means first. Deterministic: no seed, no training history."""
    if graph.mode != "linear":
        raise ValueError(f"fit_linear fits mode linear, graph {graph.name} is {graph.mode}")
    config = LinearConfig(**(graph.closed_form or {}))
    toward = graph.toward_base()
    means: dict[str, dict[str, np.ndarray]] = {}
    for link in graph.links:
        for space in link.spaces:
            for modality, mean in data[link.name].means[space].items():
                means.setdefault(space, {}).setdefault(modality, mean)
    width = int(np.asarray(data[next(link for link in graph.links if graph.base in link.spaces).name].shared[graph.base]).shape[1])
    to_base = {graph.base: np.eye(width)}
    for level in _levels(graph, toward):
        for leaf in level:
            parent, link = toward[leaf]
            to_base[leaf] = fit_link(data[link.name], leaf, parent, config) @ to_base[parent]
            log.info("graph %s: %s → %s through %s (%s, %s map, %d items)%s", graph.name, leaf, parent, link.name,
                     link.shared_modality, config.label(), len(data[link.name].shared[leaf]),
                     "" if parent == graph.base else f", composed into {graph.base}")
    modules = {s: LinearMap(to_base[s], means[s] if config.centre else None) for s in graph.spaces}
    return GraphResult(graph, nn.ModuleDict(modules), {}, {})


def hub(graph: Graph) -> str | None:
    """The space a closed-form comparison maps the others into: the base, or (``joint``) the first space every
    link touches (CLIP in the demo's graphs); None when there is none."""
    if graph.base:
        return graph.base
    return next((s for s in graph.spaces if all(s in link.spaces for link in graph.links)), None)


def closed_form_rows(graphs: Mapping[str, Graph]) -> dict[str, Graph]:
    """The closed-form context rows of the graph table (:data:`cmcr.closed_form.CONTEXT_ROWS`: ridge and
    Procrustes, each without and with centring), one set per distinct (hub, links) among the trained graphs (the
    demo's joint and extend share theirs: four rows; links compared by their spaces and modalities, as the map
    uses nothing else); row keys gain ``@<graph>`` only when there are several."""
    distinct: dict[tuple, Graph] = {}
    for g in graphs.values():  # links compared by what they connect (a link differing only in τ1 fits the same map)
        if g.mode in ("joint", "extend") and hub(g) is not None:
            links = tuple(sorted((link.spaces, link.shared_modality, tuple(sorted(link.memory_modality.items())))
                                 for link in g.links))
            distinct.setdefault((hub(g), links), g)
    out = {}
    for (base, _), g in distinct.items():
        suffix = "" if len(distinct) == 1 else f"@{g.name}"
        for row, map_name, centre in CONTEXT_ROWS:
            out[row + suffix] = Graph(row + suffix, "linear", (base,) + tuple(s for s in g.spaces if s != base), g.links,
                                      base, closed_form=LinearConfig(map_name, centre).to_dict())
    return out


def closed_form_connection(embeddings, link: Connection) -> dict[str, "GraphResult"]:
    """The closed-form context rows of a single connection's tables (Tables 1–4): its second space mapped into its
    first (CLAP, ULIP-2 into CLIP) through the shared modality, each of :data:`cmcr.closed_form.CONTEXT_ROWS`, fitted on
    the pipeline's embeddings (read once)."""
    data = {link.name: LinearLinkData.from_pipeline(embeddings, link)}
    return {row: fit_linear(Graph(row, "linear", link.spaces, (link,), link.spaces[0],
                                  closed_form=LinearConfig(map_name, centre).to_dict()), data)
            for row, map_name, centre in CONTEXT_ROWS}


def closed_form_label(graph: Graph) -> str:
    """A closed-form row's label: ``Closed form (no training): ridge, centred; clap, ulip into clip``."""
    leaves = ", ".join(s for s in graph.spaces if s != graph.base)
    return f"Closed form (no training): {LinearConfig(**(graph.closed_form or {})).label()}; {leaves} into {graph.base}"


# ---------------------------------------------------------------------------------------------- joint training

def train_joint(graph: Graph, data: Mapping[str, Any], configs: Mapping[str, ConnectionConfig], *,
                progress: bool = True):
    """``joint`` mode: one projector per space of ``graph``, trained together on the sum over its links of each
    link's Eq. 10 loss (Eq. 3 noise, Eq. 2 aggregates and τ2, τ3, σ², λ of the link's own config,
    ``configs[link]``; its data ``data[link]``, a :class:`cmcr.train.ConnectionData`).

    Projector sizes and the optimisation (epochs, batch size, learning rate, schedule, seed) are those of the
    first link's config. Every epoch each link is shuffled (in link order, from one seeded generator); a step
    takes the next batch of every link; an epoch has as many steps as the first link has batches, and a link
    with fewer batches starts over within the epoch. With one link this is :func:`cmcr.train.train_connection`
    step for step (the same initialisation, batches and noise: tested to give the same bytes)."""

    if graph.mode != "joint":
        raise ValueError(f"train_joint trains mode joint, graph {graph.name} is {graph.mode}")
    links = [link.name for link in graph.links]
    missing = [n for n in links if n not in data or n not in configs]
    if missing:
        raise ValueError(f"graph {graph.name}: no data or config for link(s) {missing}")
    resolved = {}
    for name in links:
        resolved[name] = data[name].resolve_dims(configs[name])
        data[name].validate(resolved[name])
    lead = resolved[links[0]]
    in_dims: dict[str, int] = {}
    for name in links:
        for space, width in resolved[name].projector.in_dims.items():
            if in_dims.setdefault(space, width) != width:
                raise ValueError(f"graph {graph.name}: space {space} has width {in_dims[space]} in one link and "
                                 f"{width} in {name}")
    projector = dataclasses.replace(lead.projector, in_dims=in_dims)

    def step(projectors: nn.ModuleDict, tensors: Mapping[str, torch.Tensor], idx: Mapping[str, torch.Tensor],
             generator: torch.Generator) -> dict[str, torch.Tensor]:
        parts: dict[str, torch.Tensor] = {}
        loss = None
        for name in links:
            c = resolved[name]
            spaces = c.connection.spaces
            shared = {s: projectors[s](semantic_completion(tensors[f"{name}/shared/{s}"][idx[name]], c.noise, generator))
                      for s in spaces}
            memory = {s: projectors[s](semantic_completion(tensors[f"{name}/memory/{s}"][idx[name]], c.noise, generator))
                      for s in spaces}
            link_parts = total_loss(shared, memory, spaces, c.loss)
            parts |= {(k if len(links) == 1 else f"{name}/{k}"): v for k, v in link_parts.items() if k != "loss"}
            if len(links) > 1:
                parts[f"{name}/loss"] = link_parts["loss"]
            loss = link_parts["loss"] if loss is None else loss + link_parts["loss"]
        parts["loss"] = loss
        return parts

    inputs = {f"{name}/{role}/{s}": getattr(data[name], role)[s] for name in links for role in ("shared", "memory")
              for s in resolved[name].connection.spaces}
    sizes = {name: int(data[name].shared[resolved[name].connection.spaces[0]].shape[0]) for name in links}
    config = dataclasses.replace(lead, projector=projector)
    return trained_unit(graph, configs, fit_streams(inputs, sizes, config, graph.spaces, step, progress=progress,
                                                    label=f"graph {graph.name}" if len(links) > 1 else lead.connection.name))


def train_connection(data: ConnectionData, config: ConnectionConfig, *, name: str | None = None,
                     progress: bool = True) -> "GraphResult":
    """Train the two projectors of ``config.connection`` on ``data`` (Eq. 3, 4, 10; AdamW + cosine): the connection
    as the one-link graph it is (:func:`link_graph`, named ``name``), trained by :func:`train_joint`. Input widths
    missing from ``config.projector.in_dims`` are read from the data (:meth:`ConnectionData.resolve_dims`)."""
    link = config.connection.name
    return train_joint(link_graph(config.connection, name), {link: data}, {link: config}, progress=progress)


def train_paired(graph: Graph, pairs: Mapping[str, torch.Tensor | np.ndarray], config: ConnectionConfig, *,
                 progress: bool = True) -> "GraphResult":
    """The paired-data reference (a variant's, :func:`link_graph` with ``paired``, or a graph of mode ``paired``): the
    same two projectors, optimiser, schedule, epochs and batch size as C-MCR, trained directly on *true* pairs of two
    modalities (row i of ``pairs[space]`` for each of ``config.connection.spaces``, e.g. an image in CLIP and its own
    sound in CLAP) with the symmetric InfoNCE of Eq. 1 at τ3 (``loss.pseudo_temperature``, the temperature C-MCR uses
    for its pseudo audio–image pairs). No Eq. 3 noise and no Eq. 9 term: this is what supervision by paired data
    reaches, the role the paper's Table 1 gives to methods trained on audio–visual pairs. C-MCR never sees these pairs."""
    spaces = config.connection.spaces
    if set(pairs) != set(spaces):
        raise EmbeddingError(f"paired data must be given for spaces {list(spaces)}, got {sorted(pairs)}")
    first_space, second_space = spaces
    names = {s: config.connection.embedding_name(s, config.connection.memory_modality[s]) + " (true pairs)"
             for s in spaces}
    dims = dict(config.projector.in_dims)
    for space in spaces:
        check_matrix(pairs[space], names[space], dim=dims.get(space))
        dims[space] = int(pairs[space].shape[1])
    check_same_rows(pairs[first_space], names[first_space], pairs[second_space], names[second_space])
    run = dataclasses.replace(config, projector=dataclasses.replace(config.projector, in_dims=dims))

    def step(projectors: nn.ModuleDict, tensors: Mapping[str, torch.Tensor], idx: Mapping[str, torch.Tensor],
             generator: torch.Generator) -> dict[str, torch.Tensor]:
        i = idx[""]
        pair = symmetric_info_nce(projectors[first_space](tensors[first_space][i]),
                                  projectors[second_space](tensors[second_space][i]), config.loss.pseudo_temperature)
        return {"paired": pair, "loss": pair}

    fitted = fit_streams(dict(pairs), {"": int(pairs[first_space].shape[0])}, run, spaces, step, progress=progress,
                         label=config.connection.name)
    return trained_unit(graph, {config.connection.name: config}, fitted)



# ------------------------------------------------------------------------------------------- extend training

@dataclass
class ExtendLinkData:
    """What one ``extend`` link trains on, row-aligned: the shared set in both spaces, each space's memory and
    the shared set's Eq. 2 aggregates (C-MCR's data of the link)."""

    shared: Mapping[str, Any]
    memory_sets: Mapping[str, Any]
    aggregates: Mapping[str, Any]

    @classmethod
    def from_pipeline(cls, embeddings, aggregated, config: ConnectionConfig) -> "ExtendLinkData":
        """``<embeddings>/<space>/<modality>.npy`` and ``<aggregated>/<aggregate>.npy`` as the pipeline lays
        them out (the shared set paired by id across the spaces: :meth:`cmcr.train.ConnectionData.from_pipeline`)."""
        data = ConnectionData.from_pipeline(embeddings, aggregated, config)
        conn = config.connection
        memory_sets = {s: load_npy(Path(embeddings) / f"{conn.set_path(s, conn.memory_modality[s])}.npy") for s in conn.spaces}
        return cls(data.shared, memory_sets, data.memory)


def extend_tuples(graph: Graph, data: Mapping[str, ExtendLinkData], configs: Mapping[str, ConnectionConfig],
                  extend=None) -> dict[str, dict[str, torch.Tensor]]:
    """Every leaf's training tuples (:func:`cmcr.exmcr.modality_centric_data` of its link toward the base, the
    centres stacked): computed once, shared by every seed."""

    extend = extend or ExtendConfig()
    out = {}
    for leaf, (parent, link) in graph.toward_base().items():
        d, config = data[link.name], configs[link.name]
        device = "cpu" if config.train.device == "auto" else config.train.device
        out[leaf] = stack_centres(modality_centric_data(link, leaf, d.shared, d.memory_sets, d.aggregates,
                                                        config.memory, extend.centres, device=device))
        log.info("extend %s into %s through %s (%s): %d tuples (%s-centric)", leaf, parent, link.name,
                 link.shared_modality, out[leaf]["leaf_memory"].shape[0], ", ".join(extend.centres))
    return out


def train_extend(graph: Graph, tuples: Mapping[str, Mapping[str, torch.Tensor]], configs: Mapping[str, ConnectionConfig],
                 extend=None, *, seeds: Sequence[int] = (0,), workers: int | None = None,
                 progress: bool = True) -> dict[int, "GraphResult"]:
    """``extend`` mode (Ex-MCR, :mod:`cmcr.exmcr`) for every seed: the base stays as it is (L2 normalisation);
    the leaves are trained base-outwards, each leaf's :class:`cmcr.exmcr.ExtendProjector` on its tuples
    (:func:`extend_tuples`) against its parent's frozen embedding — the base's own, or the same seed's trained
    projection of a nearer leaf. Each link with its own config (τ, σ², λ, epochs, batch size, learning rate);
    ``train.seed`` is the seed. Leaves at one distance from the base train side by side with the seeds
    (threads, one intra-op thread each, as :func:`cmcr.train.train_seeds`: the bytes do not depend on it)."""

    if graph.mode != "extend":
        raise ValueError(f"train_extend trains mode extend, graph {graph.name} is {graph.mode}")
    extend = extend or ExtendConfig()
    toward = graph.toward_base()
    base_width = int(next(t["parent_shared"].shape[1] for leaf, t in tuples.items() if toward[leaf][0] == graph.base))
    modules = {seed: {graph.base: Identity(base_width)} for seed in seeds}
    history: dict[int, dict[str, list]] = {seed: {} for seed in seeds}
    ran: dict[int, dict[str, Any]] = {seed: {} for seed in seeds}
    for level in _levels(graph, toward):
        jobs = [(seed, leaf) for seed in seeds for leaf in level]

        def one(index: int, jobs=jobs):
            seed, leaf = jobs[index]
            parent, link = toward[leaf]
            return train_leaf(leaf, tuples[leaf], modules[seed][parent].eval().embed, configs[link.name].with_seed(seed),
                              extend, progress=progress)

        done = train_seeds(one, list(range(len(jobs))), workers,
                           names=[f"leaf {leaf} seed {seed}" for seed, leaf in jobs])
        for index, (seed, leaf) in enumerate(jobs):
            modules[seed][leaf] = done[index].projectors[leaf]
            history[seed][leaf] = done[index].history
            ran[seed][toward[leaf][1].name] = done[index].config.train  # epochs / batch as run (scale auto)
    return {seed: GraphResult(graph, nn.ModuleDict({s: modules[seed][s] for s in graph.spaces}),
                              {k: dataclasses.replace(c, train=ran[seed].get(k, c.with_seed(seed).train))
                               for k, c in configs.items()}, history[seed], extend.to_dict())
            for seed in seeds}


def _levels(graph: Graph, toward: Mapping[str, tuple[str, Connection]]) -> list[list[str]]:
    """The leaves by distance from the base (each level's parents are in earlier levels)."""
    levels, placed = [], {graph.base}
    while len(placed) < len(toward) + 1:
        level = [leaf for leaf in graph.spaces if leaf in toward and leaf not in placed and toward[leaf][0] in placed]
        levels.append(level)
        placed.update(level)
    return levels


# ----------------------------------------------------------------------------------- results and checkpoints

@dataclass
class GraphResult:
    """A trained graph: one module per space (``joint``/``paired``: :class:`cmcr.projector.Projector`;
    ``extend``: the base's :class:`cmcr.exmcr.Identity` and the leaves' :class:`cmcr.exmcr.ExtendProjector`),
    each link's config, the training histories (``{part: per-epoch records}``) and, for ``extend``, its switches."""

    graph: Graph
    projectors: nn.ModuleDict
    configs: Mapping[str, ConnectionConfig]
    history: Mapping[str, list]
    extend: Mapping[str, Any] | None = None

    def embedders(self) -> dict[str, Any]:
        """``{space: embed function}`` (L2-normalised outputs) of every space the graph trains."""
        return {s: m.embed for s, m in self.projectors.items()}

    def checkpoint(self) -> dict[str, Any]:
        """Plain payload (loadable with ``weights_only=True``): graph definition with its links, per space the
        module's kind, widths and weights, every link config, histories."""
        modules = {}
        for space, m in self.projectors.items():
            modules[space] = {"kind": m.kind, "in_dim": m.in_dim, "out_dim": m.out_dim,
                              "hidden_dim": getattr(m, "hidden_dim", None),
                              "state": {k: v.detach().cpu() for k, v in m.state_dict().items()}}
        return {"format": GRAPH_FORMAT, "graph": self.graph.to_dict(), "projectors": modules,
                "configs": {k: c.to_dict() for k, c in self.configs.items()},
                "history": {k: list(v) for k, v in self.history.items()}, "extend": self.extend}


def trained_unit(graph: Graph, configs: Mapping[str, ConnectionConfig], fitted: Fitted) -> GraphResult:
    """What a trainer of :func:`train_joint` / :func:`train_paired` returns: ``fitted``'s projectors and history (one
    part, named by the graph's mode) with each link's config as it ran — its spaces' input widths as read from the
    data; the first link's (whose optimisation ran) with the epochs and batch size as run (scale ``auto``)."""
    widths = fitted.config.projector.in_dims
    configs = {k: dataclasses.replace(c, projector=dataclasses.replace(
        c.projector, in_dims={s: widths[s] for s in c.connection.spaces})) for k, c in configs.items()}
    lead = next(iter(configs))
    configs[lead] = dataclasses.replace(configs[lead], train=fitted.config.train)
    return GraphResult(graph, fitted.projectors, configs, {graph.mode: fitted.history})


def link_graph(link: Connection, name: str | None = None, *, paired: bool = False, dataset: str | None = None) -> Graph:
    """A connection as what it is, a one-link graph named ``name`` (default: the link's): mode ``joint`` (C-MCR), or
    ``paired`` for its paired-data reference — its true pairs of ``dataset`` being the two memory modalities. What a
    variant, ``cmcr train`` and an imported release train or load as."""
    if not paired:
        return Graph(name or link.name, "joint", link.spaces, (link,))
    return Graph(name or link.name, "paired", link.spaces, (link,),
                 pairs={"dataset": dataset, "modalities": {s: link.memory_modality[s] for s in link.spaces}})


def connection_unit(projectors: nn.ModuleDict, config: ConnectionConfig, name: str | None = None, *, paired: bool = False,
                    history: Sequence[dict] = ()) -> GraphResult:
    """A connection's projectors and config that no trainer here produced — an imported release
    (:func:`cmcr.official.load_official`), an older cmcr's checkpoint (:func:`load_unit`) — as the one-link graph they
    are (:func:`link_graph`, named ``name``), with their history if any."""
    graph = link_graph(config.connection, name, paired=paired)
    return GraphResult(graph, projectors, {config.connection.name: config}, {graph.mode: list(history)})


#: connection checkpoints of older cmcr versions (read by :func:`load_unit`, converted, not written)
CONNECTION_FORMAT = "cmcr.projectors/1"


def load_unit(path, map_location="cpu") -> GraphResult:
    """The one loader of a trained unit's checkpoint — a variant's, a graph's, ``cmcr train``'s or ``cmcr
    import-official``'s (:meth:`GraphResult.checkpoint`, ``weights_only=True``); a connection checkpoint of an
    older cmcr (format ``cmcr.projectors/1``) is converted (:func:`connection_unit`, named by its link).
    FileNotFoundError / ValueError naming the file when it is neither."""
    path = Path(path)
    payload = torch.load(path, map_location=map_location, weights_only=True) if path.is_file() else None
    if isinstance(payload, dict) and payload.get("format") == CONNECTION_FORMAT:  # its config, states, history
        try:
            config = ConnectionConfig.from_dict(payload["config"])
            projectors = build_projectors(config.projector, config.connection.spaces)
            for space, state in payload["projectors"].items():
                projectors[space].load_state_dict(state)
        except (KeyError, TypeError, RuntimeError, ConfigError) as exc:  # RuntimeError: states of other shapes
            raise ValueError(f"{path}: a {CONNECTION_FORMAT} checkpoint without a readable config and projectors "
                             f"({type(exc).__name__}: {exc})") from None
        return connection_unit(projectors.eval(), config, paired=payload.get("objective") == "paired",
                               history=payload.get("history", []))
    if not (isinstance(payload, dict) and payload.get("format") == GRAPH_FORMAT):
        payload = load_torch(path, GRAPH_FORMAT, "trained unit checkpoint", map_location)  # its error, named
    return graph_from_payload(payload)


def graph_from_payload(payload: Mapping[str, Any]) -> GraphResult:
    """A :class:`GraphResult` from a checkpoint payload already read (:meth:`GraphResult.checkpoint`'s dict)."""
    if any(spec["kind"] == "linear" for spec in payload["projectors"].values()):
        modules = {s: LinearMap.from_state(spec["state"]) for s, spec in payload["projectors"].items()}
        return GraphResult(Graph.from_dict(payload["graph"]), nn.ModuleDict(modules), {}, {})

    modules = {}
    for space, spec in payload["projectors"].items():
        if spec["kind"] == "identity":
            module = Identity(spec["in_dim"])
        elif spec["kind"] == "extend":
            module = ExtendProjector(spec["in_dim"], spec["hidden_dim"], spec["out_dim"])
        else:
            module = Projector(spec["kind"], spec["in_dim"], spec["hidden_dim"], spec["out_dim"])
        module.load_state_dict(spec["state"])
        modules[space] = module.eval()
    configs = {k: ConnectionConfig.from_dict(c) for k, c in payload["configs"].items()}
    return GraphResult(Graph.from_dict(payload["graph"]), nn.ModuleDict(modules), configs,
                       dict(payload.get("history") or {}), payload.get("extend"))
