"""Typed, validated configuration objects.

The library never reads ``params.yaml`` itself: stages and the CLI turn a params mapping into these
objects (:func:`connection_config_from_params`) and pass them in. Every value is checked here, so a
bad temperature or a negative variance fails before any data is read or any compute starts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A configuration value is invalid (the message names the key and the problem)."""


def _positive(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")


def _positive_int(name: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _number(name: str, value: Any, minimum: float | None = None) -> None:
    """A finite real number (not a bool, not a string such as '5e-4' read by a YAML 1.1 parser)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or (
            minimum is not None and value < minimum):
        bound = f" >= {minimum:g}" if minimum is not None else ""
        raise ConfigError(f"{name} must be a finite number{bound}, got {value!r}")


def _bool(name: str, value: Any) -> None:
    """true or false exactly (YAML 1.2: not yes/no/on/off, not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")


def _name_list(name: str, value: Any, choices: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """A list of names (a bare string such as 'clip' is refused: it is not a list of one)."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{name} must be a list of names, e.g. [clip], got {value!r}")
    if choices is not None:
        bad = [v for v in value if v not in choices]
        if bad:
            raise ConfigError(f"{name} names {bad}; allowed: {', '.join(choices)}")
    return tuple(value)


DEVICES = ("auto", "cpu", "cuda", "mps")


def _device(name: str, value: Any) -> None:
    """``auto``, ``cpu``, ``cuda``, ``cuda:<index>`` or ``mps``."""
    ok = isinstance(value, str) and (value in DEVICES or (value.startswith("cuda:") and value[5:].isdigit()))
    if not ok:
        raise ConfigError(f"{name} must be one of {', '.join(DEVICES)} or cuda:<index>; got {value!r}")


MEMORY_MODES = ("softmax", "argmax", "random")
MEMORY_KERNELS = ("auto", "sdpa", "streamed")
PRECISIONS = ("fp32", "bf16", "fp16")
PROJECTOR_KINDS = ("paper", "official_clap_clip", "official_ulip_clip")
#: the projectors' BatchNorm inference statistics (cmcr.norms): one shared running average, or one per modality
NORM_STATS = ("shared", "modality")
INTRA_DISTANCES = ("l2", "squared_l2")
LR_SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class Connection:
    """Which two contrastive spaces are connected, and through which modality.

    ``spaces`` are the two MCR spaces (e.g. ``("clip", "clap")``); ``shared_modality`` is the
    overlapping modality whose embeddings exist in both (``"text"`` for CLIP–CLAP, ``"image"`` for
    CLIP–ULIP); ``memory_modality[space]`` is the non-overlapping modality whose memory is aggregated
    by Eq. 2 in that space (``{"clip": "image", "clap": "audio"}``).
    """

    name: str
    spaces: tuple[str, str]
    shared_modality: str
    memory_modality: Mapping[str, str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "spaces", tuple(self.spaces))
        object.__setattr__(self, "memory_modality", dict(self.memory_modality))
        if len(self.spaces) != 2 or self.spaces[0] == self.spaces[1]:
            raise ConfigError(f"connection {self.name!r}: spaces must be two different names, got {self.spaces!r}")
        if set(self.memory_modality) != set(self.spaces):
            raise ConfigError(
                f"connection {self.name!r}: memory_modality must name exactly the spaces {list(self.spaces)}, "
                f"got {sorted(self.memory_modality)}"
            )

    def to_link_dict(self) -> dict[str, Any]:
        """The link in plain form, as graph checkpoints and plans state it: ``{name, spaces, shared, memory}``."""
        return {"name": self.name, "spaces": list(self.spaces), "shared": self.shared_modality,
                "memory": dict(self.memory_modality)}

    @classmethod
    def from_link_dict(cls, data: Mapping[str, Any]) -> "Connection":
        """Inverse of :meth:`to_link_dict`."""
        return cls(str(data["name"]), tuple(data["spaces"]), str(data["shared"]), dict(data["memory"]))

    def embedding_name(self, space: str, modality: str) -> str:
        """``clip_text``, ``clap_audio``…: the name of a space's embedding of a modality."""
        return f"{space}_{modality}"

    # -- the wiring of the pipeline, derived from the definition (one place; a new connection needs no more)
    def set_path(self, space: str, modality: str) -> str:
        """The embedding set of ``space``'s ``modality`` in the pipeline: ``<space>/<modality>`` (e.g. ``clip/text``)."""
        return f"{space}/{modality}"

    def aggregate_name(self, space: str) -> str:
        """File name of ``space``'s Eq. 2 aggregate: its memory modality gathered for each shared item,
        e.g. ``clip_image_from_text`` (CLIP–CLAP) or ``ulip_points_from_image`` (CLIP–ULIP)."""
        return f"{self.embedding_name(space, self.memory_modality[space])}_from_{self.shared_modality}"

    def aggregate_jobs(self) -> list[tuple[str, str, str]]:
        """Eq. 2 per space: ``(aggregate name, query set, memory set)`` — queries are the shared modality's
        embeddings in that space, the memory is its other modality."""
        return [(self.aggregate_name(s), self.set_path(s, self.shared_modality),
                 self.set_path(s, self.memory_modality[s])) for s in self.spaces]

    def training_inputs(self) -> dict[str, tuple[str, str]]:
        """Per space: ``(shared-modality set, Eq. 2 aggregate name)`` — the four matrices training reads."""
        return {s: (self.set_path(s, self.shared_modality), self.aggregate_name(s)) for s in self.spaces}

    def extraction_sets(self) -> dict[str, dict[str, str]]:
        """``{space: {modality: source}}`` a space must extract for this connection; ``source`` is ``texts``
        (the C-MCR text corpus, §4.1) for text and ``memory`` (unpaired files, e.g. ImageNet) otherwise."""
        out: dict[str, dict[str, str]] = {}
        for s in self.spaces:
            for modality in (self.shared_modality, self.memory_modality[s]):
                out.setdefault(s, {})[modality] = "texts" if modality == "text" else "memory"
        return out


def extraction_sets(connections) -> dict[str, dict[str, str]]:
    """``{space: {modality: source}}`` every space extracts for training, over ``connections``.
    Two connections needing the same set (``clip/image``: CLIP–CLAP's memory, CLIP–ULIP's shared images)
    share one extraction."""
    out: dict[str, dict[str, str]] = {}
    for connection in connections:
        for space, sets in connection.extraction_sets().items():
            out.setdefault(space, {}).update(sets)
    return out


@dataclass(frozen=True)
class MemoryConfig:
    """Eq. 2 (inter-modality semantic consistency): memory aggregation.

    ``mode``: ``softmax`` (the paper), ``argmax`` (Table 5 row I), ``random`` (row J, seeded by ``seed``).
    ``temperature`` is τ1. Chunk sizes bound peak memory (``query_chunk × memory_chunk`` logits);
    ``auto`` (default) picks per device (:func:`cmcr.memory.resolve_chunks`, from measured sweeps).
    ``precision`` other than ``fp32`` runs the two matrix products in reduced precision (meant for GPUs);
    softmax statistics and the accumulator stay in fp32. ``kernel`` (softmax mode): ``sdpa`` runs each
    query chunk through PyTorch's fused ``scaled_dot_product_attention`` over the whole memory (its CPU
    kernel streams over keys with a per-block max: exact, and the fastest on the CPU, measured in
    ``benchmarks/RESULTS.md``); ``streamed`` is this project's own online softmax over memory chunks
    (needed for memories staged chunk by chunk on a GPU, and for reduced precision); ``auto`` picks
    ``sdpa`` for fp32 on the CPU and ``streamed`` elsewhere.
    """

    mode: str = "softmax"
    temperature: float = 0.01
    query_chunk: int | str = "auto"
    memory_chunk: int | str = "auto"
    precision: str = "fp32"
    seed: int = 0
    kernel: str = "auto"

    def __post_init__(self) -> None:
        _choice("memory.mode", self.mode, MEMORY_MODES)
        _choice("memory.kernel", self.kernel, MEMORY_KERNELS)
        _positive("memory.temperature (tau1)", self.temperature)
        for key in ("query_chunk", "memory_chunk"):
            value = getattr(self, key)
            if value != "auto":
                _positive_int(f"memory.{key} (an integer > 0 or 'auto')", value)
        _choice("memory.precision", self.precision, PRECISIONS)
        _positive_int("memory.seed", self.seed, minimum=0)


@dataclass(frozen=True)
class NoiseConfig:
    """Eq. 3 (intra-modality semantic completion): Gaussian noise of *variance* ``var`` (σ²), then re-norm.

    ``enabled=False`` is Table 5 row H (together with ``renorm=False``); ``renorm=False`` alone is row G.
    """

    var: float = 0.004
    enabled: bool = True
    renorm: bool = True

    def __post_init__(self) -> None:
        _number("noise.var (sigma^2, a variance)", self.var, minimum=0)
        _bool("noise.enabled", self.enabled)
        _bool("noise.renorm", self.renorm)


@dataclass(frozen=True)
class ProjectorConfig:
    """Projector architecture (appendix C, Table 6, or one of the released variants).

    ``kind``: ``paper`` (Table 6: Linear→BN→ReLU→Linear→BN→ReLU), ``official_clap_clip`` (released
    CLAP–CLIP heads: no final ReLU), ``official_ulip_clip`` (released ULIP–CLIP heads: Linear→BN→ReLU).
    ``in_dims[space]`` is the embedding dimension of each space; a space left out takes the width of its
    data when training starts (:meth:`cmcr.train.ConnectionData.resolve_dims`); a stated width that the
    data does not have is refused. ``norm_stats``: the BatchNorm layers' inference statistics — ``shared`` (the
    paper's and the release's: one running average over every modality's batches) or ``modality`` (each modality
    its own, fitted on its training set after training: :mod:`cmcr.norms`).
    """

    kind: str = "paper"
    in_dims: Mapping[str, int] = field(default_factory=dict)
    hidden_dim: int = 1024
    out_dim: int = 512
    norm_stats: str = "shared"

    def __post_init__(self) -> None:
        _choice("projector.kind", self.kind, PROJECTOR_KINDS)
        _choice("projector.norm_stats", self.norm_stats, NORM_STATS)
        object.__setattr__(self, "in_dims", dict(self.in_dims))
        for space, dim in self.in_dims.items():
            _positive_int(f"projector.in_dims.{space}", dim)
        _positive_int("projector.hidden_dim", self.hidden_dim)
        _positive_int("projector.out_dim", self.out_dim)


@dataclass(frozen=True)
class LossConfig:
    """Eq. 5–10: which terms are on, their temperatures and the weight λ.

    ``shared_pair`` is L_ttc (Eq. 5; for CLIP–ULIP the image–image term), ``pseudo_pair`` is L_avc
    (Eq. 6; for CLIP–ULIP the text–3D term). ``intra_spaces`` lists the spaces whose Eq. 9 term is on
    (Table 5 rows A–C switch them off). ``intra_distance``: ``l2`` is Eq. 9 as printed (non-squared
    norm, the default); ``squared_l2`` follows the derivation above Eq. 9 ((x−y)ᵀ(x−y) = 2(1−xᵀy)).
    """

    shared_temperature: float = 0.01
    pseudo_temperature: float = 0.01
    lambda_intra: float = 0.1
    shared_pair: bool = True
    pseudo_pair: bool = True
    intra_spaces: tuple[str, ...] = ("clip", "clap")
    intra_distance: str = "l2"

    def __post_init__(self) -> None:
        _positive("loss.shared_temperature (tau2)", self.shared_temperature)
        _positive("loss.pseudo_temperature (tau3)", self.pseudo_temperature)
        _number("loss.lambda_intra (lambda)", self.lambda_intra, minimum=0)
        _bool("loss.shared_pair", self.shared_pair)
        _bool("loss.pseudo_pair", self.pseudo_pair)
        object.__setattr__(self, "intra_spaces", _name_list("loss.intra_spaces", self.intra_spaces))
        _choice("loss.intra_distance", self.intra_distance, INTRA_DISTANCES)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation (section 4.1/4.2): AdamW, initial ``lr``, per-step cosine decay to ``min_lr``.

    ``auto_steps`` > 0 is the training scale ``auto`` (params ``scale``, README "Training scale"): ``epochs`` and
    ``batch_size`` are then where :func:`cmcr.train.auto_scale` starts from, given the training set's size, to
    reach at least that many optimiser steps with batches of no fewer than ``auto_min_batch``; a trained
    checkpoint holds the values it ran with. 0: ``epochs`` × ``batch_size`` exactly as given."""

    epochs: int = 36
    batch_size: int = 10240
    lr: float = 1e-3
    min_lr: float = 0.0
    weight_decay: float = 0.01
    lr_schedule: str = "cosine"
    seed: int = 0
    device: str = "auto"
    auto_steps: int = 0
    auto_min_batch: int = 128

    def __post_init__(self) -> None:
        _positive_int("train.epochs", self.epochs)
        _positive_int("train.batch_size", self.batch_size, minimum=2)
        _positive("train.lr", self.lr)
        _number("train.min_lr", self.min_lr, minimum=0)
        if self.min_lr > self.lr:
            raise ConfigError(f"train.min_lr must be in [0, train.lr = {self.lr:g}], got {self.min_lr!r}")
        _number("train.weight_decay", self.weight_decay, minimum=0)
        _choice("train.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _positive_int("train.seed", self.seed, minimum=0)
        _device("train.device", self.device)
        _positive_int("train.auto_steps", self.auto_steps, minimum=0)
        _positive_int("train.auto_min_batch", self.auto_min_batch, minimum=2)


@dataclass(frozen=True)
class ConnectionConfig:
    """Everything needed to train one connection, as one object (stored verbatim in checkpoints)."""

    connection: Connection
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        spaces = set(self.connection.spaces)
        unknown = set(self.loss.intra_spaces) - spaces
        if unknown:
            raise ConfigError(
                f"loss.intra_spaces names {sorted(unknown)}, which are not spaces of connection "
                f"{self.connection.name!r} ({sorted(spaces)})"
            )
        if not (self.loss.shared_pair or self.loss.pseudo_pair or (self.loss.intra_spaces and self.loss.lambda_intra > 0)):
            raise ConfigError("loss: every term is switched off (shared_pair, pseudo_pair and intra); nothing to train")

    def with_seed(self, seed: int) -> "ConnectionConfig":
        """The same config trained from ``seed`` (``train.seed``: initialisation, shuffling, Eq. 3 noise)."""
        return dataclasses.replace(self, train=dataclasses.replace(self.train, seed=seed))

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (str/int/float/bool/list/dict only): safe for ``torch.load(weights_only=True)``."""

        def plain(value: Any) -> Any:
            if isinstance(value, Mapping):
                return {str(k): plain(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            return value

        return plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ConnectionConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error (a typo must not pass silently)."""
        parts: dict[str, Any] = {}
        types = {"connection": Connection, "memory": MemoryConfig, "noise": NoiseConfig,
                 "projector": ProjectorConfig, "loss": LossConfig, "train": TrainConfig}
        unknown = set(data) - set(types)
        if unknown:
            raise ConfigError(f"unknown config group(s): {sorted(unknown)}")
        for key, typ in types.items():
            if key in data:
                parts[key] = _build(typ, data[key], key)
        return cls(**parts)


def paired_objective(config: ConnectionConfig, connection: Connection | None = None) -> ConnectionConfig:
    """The paired-data reference's config (variants with ``paired``, graphs of mode ``paired``): ``config``'s projector,
    optimisation and τ3 with the pair term only — no Eq. 2 (the default memory group), no Eq. 3 noise, no L_ttc, no
    Eq. 9 — so its effective config changes only when those settings do. ``connection``: the true pairs of another
    pair of spaces (a paired graph), whose widths come from its data (``in_dims`` cleared)."""
    changes: dict[str, Any] = {}
    if connection is not None:
        changes = {"connection": connection, "projector": dataclasses.replace(config.projector, in_dims={})}
    return dataclasses.replace(
        config, memory=MemoryConfig(), noise=NoiseConfig(enabled=False, renorm=False),
        loss=LossConfig(pseudo_temperature=config.loss.pseudo_temperature, shared_pair=False, pseudo_pair=True,
                        intra_spaces=(), lambda_intra=0.0), **changes)


def _build(typ: type, values: Any, where: str) -> Any:
    if isinstance(values, typ):
        return values
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(typ)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown key(s) in {where}: {sorted(unknown)} (known: {sorted(names)})")
    kwargs = dict(values)
    if typ is Connection and "spaces" in kwargs:
        kwargs["spaces"] = tuple(kwargs["spaces"])
    if typ is LossConfig and kwargs.get("intra_spaces") is None and "intra_spaces" in kwargs:
        kwargs["intra_spaces"] = ()  # `intra_spaces:` left empty in YAML
    return typ(**kwargs)


GROUPS = ("memory", "noise", "projector", "loss", "train")


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


#: the shape of a link's declaration, as error messages state it
LINK_SHAPE = "{spaces: [a, b], shared: <modality>, memory: {a: <modality>, b: <modality>}}"


def link_declaration(name: str) -> str:
    """What to add to params to declare link ``name`` (error messages name it): ``connections.<name>.link: {…}``."""
    return f"connections.{name}.link: {LINK_SHAPE}"


def connection_from_params(name: str, entry: Any, key: str) -> Connection:
    """A connection declared in params (``connections.<name>.link``): ``{spaces: [a, b], shared: <modality>,
    memory: {a: <modality>, b: <modality>}}`` — a link of the MCR graph between spaces the project has."""
    if not isinstance(entry, Mapping) or set(entry) != {"spaces", "shared", "memory"}:
        raise ConfigError(f"{key} must be {LINK_SHAPE}, got {entry!r}")
    spaces, shared, memory = entry["spaces"], entry["shared"], entry["memory"]
    if not isinstance(spaces, list) or not all(isinstance(s, str) for s in spaces):
        raise ConfigError(f"{key}.spaces must be a list of two space names, got {spaces!r}")
    if not isinstance(shared, str) or not isinstance(memory, Mapping):
        raise ConfigError(f"{key}: shared must be a modality name and memory a mapping space → modality")
    return Connection(name, tuple(spaces), shared, dict(memory))


def connection_of(params: Mapping[str, Any], name: str) -> Connection:
    """The link params declare as ``connections.<name>.link`` — the paper's ``clip_clap`` and ``clip_ulip`` too:
    every link is data, none is a Python constant."""
    connections = params.get("connections") or {}
    declared = connections.get(name) if isinstance(connections, Mapping) else None
    if isinstance(declared, Mapping) and "link" in declared:
        return connection_from_params(name, declared["link"], f"connections.{name}.link")
    known = sorted(n for n, g in connections.items() if isinstance(g, Mapping) and "link" in g) \
        if isinstance(connections, Mapping) else []
    raise ConfigError(f"unknown connection {name!r}: params declare the links {known}; declare it as "
                      f"{link_declaration(name)} (README \"The MCR graph\")")


def group_from_params(params: Mapping[str, Any], connection: str, group: str,
                      overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One group's values for a connection: the base group, then ``connections.<name>.<group>``, then
    ``overrides``. Reads nothing else from ``params`` (stages declare exactly what they read)."""
    connection_of(params, connection)
    if group not in GROUPS:
        raise ConfigError(f"unknown config group {group!r}; known: {list(GROUPS)}")
    values = dict(params.get(group) or {})
    per_connection = (params.get("connections") or {}).get(connection) or {}
    unknown = set(per_connection) - set(GROUPS) - {"link"}
    if unknown:
        raise ConfigError(f"connections.{connection}: unknown group(s) {sorted(unknown)}; known: {list(GROUPS)}")
    values = deep_merge(values, per_connection.get(group) or {})
    return deep_merge(values, overrides or {})


def memory_config_from_params(params: Mapping[str, Any], connection: str, mode: str | None = None) -> MemoryConfig:
    """Eq. 2 settings of a connection (optionally with another ``mode``), reading only the memory groups."""
    values = group_from_params(params, connection, "memory", {"mode": mode} if mode else None)
    return _build(MemoryConfig, values, f"memory ({connection})")


def connection_config_from_params(params: Mapping[str, Any], connection: str,
                                  overrides: Mapping[str, Any] | None = None) -> ConnectionConfig:
    """Build the config of one connection from a params mapping (the layout of ``params.yaml``).

    The top-level groups ``memory``, ``noise``, ``projector``, ``loss``, ``train`` are the audio–visual
    connection (CLIP–CLAP via text, the paper's running example) and the base of every connection;
    ``connections.<name>`` lists only what another connection changes (e.g. ``clip_ulip``: σ² = 0.002,
    λ = 0.4, 24 epochs...). ``overrides`` (e.g. a Table 5 row) are merged last.
    """
    overrides = overrides or {}
    bad = set(overrides) - set(GROUPS)
    if bad:
        raise ConfigError(f"override names unknown group(s) {sorted(bad)}; known: {list(GROUPS)}")
    merged = {g: group_from_params(params, connection, g, overrides.get(g)) for g in GROUPS}
    conn = connection_of(params, connection)
    if "in_dims" in merged["projector"]:
        merged["projector"]["in_dims"] = {s: d for s, d in dict(merged["projector"]["in_dims"]).items() if s in conn.spaces}
    return ConnectionConfig.from_dict({"connection": conn, **merged})
