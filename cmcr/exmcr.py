"""``extend`` mode of the MCR graph: Ex-MCR (Zhang, Wang et al., NeurIPS 2024, arXiv 2310.08884).

C-MCR projects both spaces into a *new* space; Ex-MCR keeps one *base* space as it is (CLIP) and extends each
leaf space (CLAP, ULIP-2) into it through the modality they overlap in, so the base's own image–text
alignment is untouched. What this module implements, and where each piece comes from:

- **Decoupled projector** (:class:`ExtendProjector`) — from the released inference code (MCR-PEFT/Ex-MCR,
  read, not copied): a linear layer (width → base width) initialised to the identity, then two MLP blocks
  (Linear → BN → ReLU → Linear → BN, hidden width ``projector.hidden_dim``; Xavier-initialised), output
  L2-normalised. The base space's embeddings are only normalised (no weights).
- **Various modality-centric data** (:func:`modality_centric_data`) — the paper's (and the issue's) "every
  modality used as a query": C-MCR takes only the overlapping modality (texts) as queries; here the leaf's
  memory items (sounds) and the parent's memory items (images) are queries as well. Each query yields one
  tuple of four embeddings ``(m_leaf, s_leaf, s_parent, m_parent)`` — e.g. (audio, text) in CLAP and (text,
  image) in CLIP. A sound's texts in CLAP are Eq. 2 over CLAP's text set; *the same weights* over the same
  texts embedded by CLIP give its texts in CLIP (:func:`cmcr.memory.aggregate_memory` with ``values``: the
  overlapping items are the bridge); CLIP's images follow by Eq. 2 from those texts. Text-centric tuples are
  C-MCR's own data (the shared set and its Eq. 2 aggregates).
- **Losses** (:func:`dense_alignment` and :func:`extend_loss`): every leaf embedding of a tuple against every
  parent embedding — ``InfoNCE(g(m_L), m_P) + InfoNCE(g(s_L), s_P)`` (C-MCR's two pair types, at τ3 and τ2)
  ``+ InfoNCE(g(m_L), s_P) + InfoNCE(g(s_L), m_P)`` (at τ3; ``extend.dense: false`` drops them) — plus
  λ × Eq. 9 on the *linear layer's* outputs ``f_l(s_L), f_l(m_L)`` (the intra-space alignment the decoupled
  design gives the linear layer; on for the leaf when ``loss.intra_spaces`` names it).

The paper's full text could not be read in this environment. A public summary of its figures and tables
(``deep-diver/neurips2024``, poster PquRXu9pQ6) confirms the modality-centric aggregating (audio, text, images
each as queries, the tuples pooled; ablated per centre), the dense A–T, T–T, A–V, T–V objective (ablated per
pair), ``f_l`` for intra- and ``f_m`` for inter-space alignment and λ balancing the two losses. Our choices,
stated in README "The MCR graph": the intra term's form (Eq. 9's distance on ``f_l``'s outputs), τ2 for T–T and
τ3 for the other pairs, Eq. 3 noise on the leaf's inputs, each link's own training scale. A leaf further from
the base trains against its parent's *frozen, already trained* projection (base-outwards,
:func:`cmcr.graph.train_extend`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cmcr.checks import EmbeddingError, as_tensor
from cmcr.config import ConfigError, Connection, ConnectionConfig, MemoryConfig
from cmcr.enhance import semantic_completion
from cmcr.loss import intra_mcr_alignment, symmetric_info_nce
from cmcr.memory import aggregate_memory
from cmcr.norms import ModalityNorms
from cmcr.train import fit_streams

log = logging.getLogger(__name__)

#: the four embeddings of a modality-centric tuple: (which side, which modality role)
ROLES = ("leaf_memory", "leaf_shared", "parent_shared", "parent_memory")
#: params ``extend`` (graph mode extend): defaults
EXTEND_DEFAULTS = {"dense": True, "centres": ["shared", "leaf", "parent"]}


@dataclass(frozen=True)
class ExtendConfig:
    """Ex-MCR's switches (params ``extend``): ``dense`` — the two cross terms of :func:`dense_alignment`;
    ``centres`` — which queries make tuples: ``shared`` (the overlapping modality, C-MCR's data), ``leaf``
    (the leaf's memory modality, e.g. sounds), ``parent`` (the parent's memory modality, e.g. images)."""

    dense: bool = True
    centres: tuple[str, ...] = ("shared", "leaf", "parent")

    def __post_init__(self) -> None:
        if not isinstance(self.dense, bool):
            raise ConfigError(f"extend.dense must be true or false, got {self.dense!r}")
        centres = tuple(self.centres) if isinstance(self.centres, (list, tuple)) else self.centres
        if not isinstance(centres, tuple) or not centres or set(centres) - {"shared", "leaf", "parent"} \
                or len(set(centres)) != len(centres):
            raise ConfigError(f"extend.centres must be a non-empty list of shared, leaf, parent; got {self.centres!r}")
        object.__setattr__(self, "centres", centres)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "ExtendConfig":
        entry = params.get("extend") or {}
        if not isinstance(entry, Mapping):
            raise ConfigError(f"extend must be a mapping {{dense, centres}}, got {entry!r}")
        unknown = set(entry) - set(EXTEND_DEFAULTS)
        if unknown:
            raise ConfigError(f"extend: unknown key(s) {sorted(unknown)}; known: {sorted(EXTEND_DEFAULTS)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in entry.items()})

    def to_dict(self) -> dict[str, Any]:
        return {"dense": self.dense, "centres": list(self.centres)}


class ExtendProjector(ModalityNorms, nn.Module):
    """A leaf space's projector into its parent (Ex-MCR's decoupled design): ``linear`` (in → out, the identity
    at initialisation when the widths agree) for the intra-space alignment, then ``mlp`` — two blocks Linear →
    BN → ReLU → Linear → BN (hidden width ``hidden_dim``, Xavier-initialised weights) — for the inter-space
    one. :meth:`embed` L2-normalises the output."""

    kind = "extend"

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim
        self.linear = nn.Linear(in_dim, out_dim)
        blocks = []
        for _ in range(2):
            blocks += [nn.Linear(out_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(),
                       nn.Linear(hidden_dim, out_dim), nn.BatchNorm1d(out_dim)]
        self.mlp = nn.Sequential(*blocks)
        with torch.no_grad():
            if in_dim == out_dim:
                nn.init.eye_(self.linear.weight)
            for module in self.mlp:
                if isinstance(module, nn.Linear):
                    nn.init.xavier_uniform_(module.weight)

    def intra(self, x: torch.Tensor) -> torch.Tensor:
        """The linear layer's output (where the intra-space alignment acts)."""
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise EmbeddingError(f"projector (extend) expects N×{self.in_dim} embeddings, got shape {tuple(x.shape)}")
        return self.linear(x)

    def norm_sequence(self) -> nn.Sequential:
        return self.mlp

    def norm_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.intra(x)

    def forward(self, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        return self.run_sequence(self.intra(x), modality)

    def embed(self, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        """Project and L2-normalise (``modality``: as :meth:`cmcr.projector.Projector.embed`)."""
        return F.normalize(self(x, modality), dim=-1)


class Identity(nn.Module):
    """The base space in ``extend`` mode: its embeddings as they are, L2-normalised (no weights)."""

    kind = "identity"

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.in_dim = self.out_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def embed(self, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        return F.normalize(x.float(), dim=-1)


# ------------------------------------------------------------------------------------- modality-centric data

def _norm(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(as_tensor(x).float(), dim=-1)


def modality_centric_data(link: Connection, leaf: str, shared: Mapping[str, Any], memory_sets: Mapping[str, Any],
                          aggregates: Mapping[str, Any], memory: MemoryConfig, centres: tuple[str, ...] = ("shared", "leaf", "parent"),
                          *, device: str | torch.device = "cpu") -> dict[str, dict[str, torch.Tensor]]:
    """Ex-MCR's pseudo tuples of one link, every modality used as a query.

    ``shared[space]``: the overlapping modality's set embedded in both spaces, row k the same item (e.g. the
    text corpus in CLAP and in CLIP); ``memory_sets[space]``: each space's memory (CLAP audio, CLIP images);
    ``aggregates[space]``: Eq. 2 of the shared set over that space's memory (C-MCR's data, row k of
    ``shared``). ``leaf`` is the space being extended; the link's other space is its parent.

    Returns ``{centre: {role: N×d tensor}}`` with :data:`ROLES` ``leaf_memory, leaf_shared, parent_shared,
    parent_memory``; row i of the four is one tuple. With Eq. 2 ``A(q; K→V) = softmax(q·Kᵀ/τ1)·V``:

    - ``shared`` (C-MCR's tuples): ``(agg_L, S_L, S_P, agg_P)``;
    - ``leaf`` (queries ``q`` = the leaf's memory, e.g. sounds): ``(q, A(q; S_L→S_L), s_P = A(q; S_L→S_P),
      A(ŝ_P; M_P→M_P))``;
    - ``parent`` (queries = the parent's memory, e.g. images): ``(A(ŝ_L; M_L→M_L), s_L = A(q; S_P→S_L),
      A(q; S_P→S_P), q)``; ``ŝ`` is ``s`` L2-normalised (a query of Eq. 2).
    """
    parent = link.spaces[1] if link.spaces[0] == leaf else link.spaces[0]
    if leaf not in link.spaces:
        raise ValueError(f"{leaf} is not a space of link {link.name} ({list(link.spaces)})")
    s_leaf, s_parent = as_tensor(shared[leaf]), as_tensor(shared[parent])
    if s_leaf.shape[0] != s_parent.shape[0]:
        raise EmbeddingError(f"{link.name}: the shared {link.shared_modality} set has {s_leaf.shape[0]} rows in "
                             f"{leaf} but {s_parent.shape[0]} in {parent}: row k of both must be the same item")
    m_leaf, m_parent = as_tensor(memory_sets[leaf]), as_tensor(memory_sets[parent])

    def eq2(queries, keys, values=None):
        return aggregate_memory(queries, keys, memory, device=device, values=values)

    out: dict[str, dict[str, torch.Tensor]] = {}
    for centre in centres:
        if centre == "shared":
            out[centre] = {"leaf_memory": as_tensor(aggregates[leaf]).float(), "leaf_shared": s_leaf.float(),
                           "parent_shared": s_parent.float(), "parent_memory": as_tensor(aggregates[parent]).float()}
        elif centre == "leaf":
            q = m_leaf.float()
            to_parent = eq2(q, s_leaf, s_parent)
            out[centre] = {"leaf_memory": q, "leaf_shared": eq2(q, s_leaf), "parent_shared": to_parent,
                           "parent_memory": eq2(_norm(to_parent), m_parent)}
        elif centre == "parent":
            q = m_parent.float()
            to_leaf = eq2(q, s_parent, s_leaf)
            out[centre] = {"leaf_memory": eq2(_norm(to_leaf), m_leaf), "leaf_shared": to_leaf,
                           "parent_shared": eq2(q, s_parent), "parent_memory": q}
        else:
            raise ValueError(f"unknown centre {centre!r}")
    return out


def stack_centres(tuples: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The centres' tuples as one training set (``{role: rows of every centre, in centre order}``)."""
    return {role: torch.cat([as_tensor(t[role]).float() for t in tuples.values()]) for role in ROLES}


# ------------------------------------------------------------------------------------------------- losses

def dense_alignment(leaf_memory: torch.Tensor, leaf_shared: torch.Tensor, parent_shared: torch.Tensor,
                    parent_memory: torch.Tensor, config: ConnectionConfig, dense: bool = True) -> dict[str, torch.Tensor]:
    """Ex-MCR's inter-space alignment of one batch of tuples (leaf side already projected): C-MCR's two pair
    types — ``shared_pair`` ``InfoNCE(g(s_L), s_P)`` at τ2 (Eq. 5's form) and ``pseudo_pair``
    ``InfoNCE(g(m_L), m_P)`` at τ3 (Eq. 6's form), each switched by ``loss.shared_pair`` / ``loss.pseudo_pair``
    — and, when ``dense``, the cross pairs ``InfoNCE(g(m_L), s_P)`` and ``InfoNCE(g(s_L), m_P)`` at τ3.
    Every term is Eq. 1's symmetric InfoNCE. Returns the active terms by name."""
    lc = config.loss
    parts: dict[str, torch.Tensor] = {}
    if lc.shared_pair:
        parts["shared_pair"] = symmetric_info_nce(leaf_shared, parent_shared, lc.shared_temperature)
    if lc.pseudo_pair:
        parts["pseudo_pair"] = symmetric_info_nce(leaf_memory, parent_memory, lc.pseudo_temperature)
    if dense:
        parts["memory_shared"] = symmetric_info_nce(leaf_memory, parent_shared, lc.pseudo_temperature)
        parts["shared_memory"] = symmetric_info_nce(leaf_shared, parent_memory, lc.pseudo_temperature)
    return parts


def extend_loss(projector: ExtendProjector, leaf: str, batch: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor],
                config: ConnectionConfig, dense: bool, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The loss of one leaf on one batch: Eq. 3 noise on the leaf's two inputs, the projector, then
    :func:`dense_alignment` against the parent's ``targets`` (``parent_shared``, ``parent_memory``: fixed
    embeddings, the base's own or a trained parent's projection) ``+ λ · Eq. 9`` between the linear layer's
    outputs of ``s_L`` and ``m_L`` when ``loss.intra_spaces`` names ``leaf``."""
    noisy = {r: semantic_completion(batch[r], config.noise, generator) for r in ("leaf_memory", "leaf_shared")}
    intra = {r: projector.intra(x) for r, x in noisy.items()}
    projected = {r: projector.mlp(x) for r, x in intra.items()}
    parts = dense_alignment(projected["leaf_memory"], projected["leaf_shared"], targets["parent_shared"],
                            targets["parent_memory"], config, dense)
    if not parts:
        raise ConfigError(f"extend {leaf}: every inter-space term is off (loss.shared_pair, loss.pseudo_pair, extend.dense)")
    loss = torch.stack(list(parts.values())).sum()
    if leaf in config.loss.intra_spaces and config.loss.lambda_intra > 0:
        parts["intra"] = intra_mcr_alignment({leaf: (intra["leaf_shared"], intra["leaf_memory"])},
                                             config.loss.intra_distance)
        loss = loss + config.loss.lambda_intra * parts["intra"]
    parts["loss"] = loss
    return parts


# ---------------------------------------------------------------------------------------------- training

def train_leaf(leaf: str, tuples: Mapping[str, torch.Tensor], parent_embed, config: ConnectionConfig,
               extend: ExtendConfig = ExtendConfig(), *, progress: bool = True):
    """Train ``leaf``'s :class:`ExtendProjector` on stacked tuples (:func:`stack_centres`); the parent side is
    ``parent_embed`` of the parent's two roles (computed once: the parent is frozen). Optimisation (epochs,
    batch size, AdamW, cosine schedule, seed) as every trainer (:func:`cmcr.train.fit_streams`). Returns a
    :class:`cmcr.train.Fitted` whose projectors hold ``{leaf: ExtendProjector}``."""
    n = int(tuples["leaf_memory"].shape[0])
    for role in ROLES:
        if tuples[role].shape[0] != n:
            raise EmbeddingError(f"extend {leaf}: {role} has {tuples[role].shape[0]} rows, leaf_memory {n}")
    widths = {role: int(tuples[role].shape[1]) for role in ROLES}
    if widths["leaf_memory"] != widths["leaf_shared"]:
        raise EmbeddingError(f"extend {leaf}: its two modalities have widths {widths['leaf_memory']} and {widths['leaf_shared']}")
    with torch.no_grad():
        targets = {r: F.normalize(parent_embed(as_tensor(tuples[r]).float()), dim=-1) for r in ("parent_shared", "parent_memory")}
    out_dim = int(targets["parent_shared"].shape[1])
    in_dim = widths["leaf_memory"]
    hidden = config.projector.hidden_dim

    def build() -> nn.ModuleDict:
        return nn.ModuleDict({leaf: ExtendProjector(in_dim, hidden, out_dim)})

    def step(projectors, tensors, idx, generator):
        i = idx[""]
        batch = {r: tensors[r][i] for r in ("leaf_memory", "leaf_shared")}
        return extend_loss(projectors[leaf], leaf, batch, {r: tensors[r][i] for r in ("parent_shared", "parent_memory")},
                           config, extend.dense, generator)

    inputs = {"leaf_memory": tuples["leaf_memory"], "leaf_shared": tuples["leaf_shared"]} | targets
    config = dataclasses.replace(config, projector=dataclasses.replace(config.projector, in_dims={leaf: in_dim},
                                                                       out_dim=out_dim))
    return fit_streams(inputs, {"": n}, config, (leaf,), step, progress=progress, label=f"extend {leaf}", build=build)
