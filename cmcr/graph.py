"""The MCR graph (C-MCR §1): contrastive spaces as nodes, connections through a shared modality as links.

"C-MCR treats each learned MCR space as a node and the overlapping modalities between different MCRs as
links." A graph is declared as data (``graphs.<name>`` in params.yaml)::

    graphs:
      audio_visual_3d: {mode: joint, spaces: [clip, clap, ulip], links: [clip_clap, clip_ulip]}

- ``spaces``: registered encoder spaces (:func:`cmcr.encoders.base.register`); their modalities come from
  the encoder class (``ClipSpace.modalities = ("image", "text")``), so a fourth space registered under a
  name can be linked with no other code.
- ``links``: connections (:class:`cmcr.config.Connection`: two spaces, the shared modality, each space's
  memory modality), the built-in ones by name or declared in params (``connections.<name>.link``).
- ``mode``: ``joint`` — C-MCR generalised: one projector per space, the Eq. 10 loss of every link summed,
  trained together, so every modality lands in one new space (:func:`train_joint`); ``extend`` — Ex-MCR:
  a ``base`` space stays as it is and every other space is extended into it along the links (declared and
  validated here; its trainer is not implemented yet).

:func:`check_graph` refuses a bad definition with one line naming the key: an unknown space, a link
between spaces that do not share its modality, a space no link reaches, in ``extend`` mode two bases, a
cycle, or a leaf without a path to the base.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cmcr.config import CONNECTIONS, ConfigError, Connection, ConnectionConfig, connection_of

GRAPH_MODES = ("joint", "extend")
_GRAPH_KEYS = {"mode", "spaces", "links", "base", "label"}


def space_modalities(space: str) -> tuple[str, ...]:
    """The modalities a registered encoder space embeds (its class's ``modalities``); ConfigError if unknown."""
    import cmcr.encoders  # noqa: F401  (registers the built-in spaces)
    from cmcr.encoders.base import _REGISTRY

    factory = _REGISTRY.get(space)
    modalities = getattr(factory, "modalities", None)
    if not isinstance(modalities, (tuple, list)) or not modalities:
        known = sorted(n for n, f in _REGISTRY.items() if isinstance(getattr(f, "modalities", None), (tuple, list)))
        raise ConfigError(f"unknown space {space!r}: no registered encoder space states its modalities "
                          f"(known: {', '.join(known)})")
    return tuple(modalities)


def connections_of(params: Mapping[str, Any]) -> dict[str, Connection]:
    """The built-in connections and those params declare (``connections.<name>.link``), each declared link
    checked (:func:`check_link`)."""
    out = dict(CONNECTIONS)
    for name, groups in (params.get("connections") or {}).items():
        if isinstance(groups, Mapping) and "link" in groups:
            out[name] = connection_of(params, name)
            check_link(out[name], f"connections.{name}.link")
    return out


def check_link(connection: Connection, key: str) -> None:
    """A link's modalities exist in its spaces: the shared one in both, each memory modality in its own space
    and different from the shared one. ConfigError naming ``key`` otherwise."""
    for space in connection.spaces:
        modalities = space_modalities(space)
        if connection.shared_modality not in modalities:
            raise ConfigError(f"{key}: spaces {list(connection.spaces)} share no {connection.shared_modality!r}: "
                              f"{space} embeds {list(modalities)}")
        memory = connection.memory_modality[space]
        if memory not in modalities or memory == connection.shared_modality:
            raise ConfigError(f"{key}: memory modality {memory!r} of {space} must be one of its other modalities "
                              f"({[m for m in modalities if m != connection.shared_modality]})")


@dataclass(frozen=True)
class Graph:
    """Spaces, the links between them and how they are trained (``joint`` or ``extend`` into ``base``)."""

    name: str
    mode: str
    spaces: tuple[str, ...]
    links: tuple[Connection, ...]
    base: str | None = None

    def modalities(self) -> dict[str, str]:
        """``{modality: the space that embeds it}`` for every modality of the graph (the first space listed
        that has it): what the unified space can embed and compare, including pairs no link trains."""
        out: dict[str, str] = {}
        for space in self.spaces:
            for modality in space_modalities(space):
                out.setdefault(modality, space)
        return out

    def toward_base(self) -> dict[str, tuple[str, Connection]]:
        """``extend`` mode: each leaf's neighbour one link nearer the base, and that link."""
        if self.base is None:
            raise ValueError(f"graph {self.name} has no base (mode {self.mode})")
        out, frontier = {}, [self.base]
        while frontier:
            node = frontier.pop(0)
            for link in self.links:
                if node in link.spaces:
                    other = link.spaces[1] if link.spaces[0] == node else link.spaces[0]
                    if other != self.base and other not in out:
                        out[other] = (node, link)
                        frontier.append(other)
        return out


def check_graph(name: str, entry: Any, connections: Mapping[str, Connection]) -> Graph:
    """``graphs.<name>`` of params as a :class:`Graph`; ConfigError with the key for any bad definition."""
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
        try:
            space_modalities(space)
        except ConfigError as exc:
            raise ConfigError(f"{key}.spaces: {exc}") from None
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
    # every space reached: a space no link touches would stay unaligned
    reached, frontier = {spaces[0]}, [spaces[0]]
    while frontier:
        node = frontier.pop()
        for link in links:
            if node in link.spaces:
                for other in link.spaces:
                    if other not in reached:
                        reached.add(other)
                        frontier.append(other)
    base = entry.get("base")
    if mode == "extend":
        if isinstance(base, list):
            raise ConfigError(f"{key}.base: extend mode has one base space, got {len(base)}: {base!r}")
        if not isinstance(base, str) or base not in spaces:
            raise ConfigError(f"{key}.base must name one of {key}.spaces ({', '.join(spaces)}), got {base!r}")
        unreached = [s for s in spaces if s not in reached]
        if unreached:
            raise ConfigError(f"{key}: leaf space(s) {unreached} have no path to the base {base!r} through {key}.links")
        if len(links) != len(spaces) - 1:  # connected with more links than a tree has: some leaf has two paths
            raise ConfigError(f"{key}.links: extend mode needs a tree (each leaf one path to the base {base!r}); "
                              f"{len(links)} links over {len(spaces)} spaces make a cycle")
    else:
        if base is not None:
            raise ConfigError(f"{key}.base is for mode extend; mode joint trains a projector for every space")
        unreached = [s for s in spaces if s not in reached]
        if unreached:
            raise ConfigError(f"{key}: space(s) {unreached} are not linked to the others through {key}.links")
    return Graph(name, mode, tuple(spaces), tuple(links), base if mode == "extend" else None)


def graphs_of(params: Mapping[str, Any], connections: Mapping[str, Connection] | None = None) -> dict[str, Graph]:
    """Every graph params declare (``graphs``), checked; ``connections``: :func:`connections_of` if already read."""
    graphs = params.get("graphs") or {}
    if not isinstance(graphs, Mapping):
        raise ConfigError(f"graphs must be a mapping name → {{mode, spaces, links}}, got {graphs!r}")
    connections = connections_of(params) if connections is None else connections
    return {name: check_graph(name, entry, connections) for name, entry in graphs.items()}


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
    from cmcr.enhance import semantic_completion
    from cmcr.loss import total_loss
    from cmcr.train import fit_streams

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
    return fit_streams(inputs, sizes, config, graph.spaces, step, progress=progress,
                       label=f"graph {graph.name}" if len(links) > 1 else lead.connection.name)

