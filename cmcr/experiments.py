"""Experiment variants: the paper's connections, Table 5 rows, the Figure 3 σ² sweep, the appendix-A
text-source ablation — each a named set of overrides in ``params.yaml`` (``variants``) resolved here
into a :class:`~cmcr.config.ConnectionConfig`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmcr.benchmarks import BENCHMARKS, paired_sets
from cmcr.config import (ConfigError, ConnectionConfig, _choice, _positive_int,
                         connection_config_from_params, deep_merge, group_from_params, paired_objective)
from cmcr.layout import CONNECTIONS as CHECKPOINTS, GRAPH_HISTORY, GRAPHS, HISTORY, checkpoint_path
from cmcr.official import RELEASES
from cmcr.sources.texts import SOURCES

SETUPS = ("demo", "byo", "paper")
GROUPS = ("table5", "figure3", "text_sources", "table4", "table1", "reference")
_VARIANT_KEYS = {"group", "connection", "overrides", "exclude_sources", "label", "official", "paired"}


@dataclass(frozen=True)
class Variant:
    name: str
    group: str
    label: str
    config: ConnectionConfig
    exclude_sources: tuple[str, ...] = ()
    official: Mapping[str, str] | None = None  # {release, checkpoint}: import instead of training
    paired: str | None = None  # a dataset of true pairs: the paired-data reference (train on them, not C-MCR)


def setup_of(params: Mapping[str, Any]) -> str:
    setup = params.get("setup", "demo")
    if setup not in SETUPS:
        raise ConfigError(f"setup must be one of {SETUPS}, got {setup!r}")
    return setup


def seeds_of(params: Mapping[str, Any]) -> list[int]:
    """The training seeds (``seeds`` in params.yaml, default ``[0]``): every variant trains once per seed.
    ConfigError unless a non-empty list of distinct integers ≥ 0."""
    seeds = params.get("seeds", [0])
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise ConfigError(f"seeds must be a non-empty list of integers >= 0, e.g. [0, 1, 2], got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds lists a seed twice: {seeds}")
    return list(seeds)


#: params ``spaces`` when a params file has none: the paper's three
DEFAULT_SPACES = ("clip", "clap", "ulip")


def pipeline_spaces(params: Mapping[str, Any]) -> tuple[str, ...]:
    """params ``spaces``: the contrastive spaces the pipeline embeds — dvc.yaml's ``extract@<space>`` stages run over
    this list (``foreach: ${spaces}``) and the ``spaces`` stage trains each one's stand-in (setup demo), every stage that
    reads embeddings depends on their common folder, so a space added here needs no dvc.yaml edit."""
    spaces = params.get("spaces", DEFAULT_SPACES)
    return tuple(spaces) if isinstance(spaces, (list, tuple)) else ()


#: where the training stages write: (folder under the project root, file suffix) — variants, then graphs
TRAINING_OUTPUTS = ((CHECKPOINTS, ".pt"), (HISTORY, ".json"))
GRAPH_OUTPUTS = ((GRAPHS, ".pt"), (GRAPH_HISTORY, ".json"))


def stale_outputs(root: str | Path, variants: list[str], seeds: list[int], graphs: list[str] = ()) -> list[Path]:
    """Checkpoints and training histories under ``root`` that no ``train@<variant>`` or ``graph@<name>`` of params
    writes any more (DVC keeps the outputs of a stage that left dvc.yaml's matrix; nothing reads them: evaluation
    and report go by params). Sorted paths relative to ``root``."""
    root = Path(root)
    out = []
    for names, outputs in ((variants, TRAINING_OUTPUTS), (graphs, GRAPH_OUTPUTS)):
        expected = {checkpoint_path(folder, name, seed, suffix) for name in names for seed in seeds
                    for folder, suffix in outputs}
        out += [f.relative_to(root) for folder, suffix in outputs for f in (root / folder).rglob(f"*{suffix}")
                if f.relative_to(root) not in expected]
    return sorted(out)


def describe_stale(stale: list[Path], units: list[str], limit: int = 12) -> str:
    """One short line saying how many stale files of which trained units (variants, graphs: removed ones, and seeds
    no longer trained of kept ones), for the validate stage's log and ``cmcr clean --stale``."""
    by_unit: dict[str, set[str]] = {}
    for path in stale:
        by_unit.setdefault(path.parent.name, set()).add(path.stem.removeprefix("seed"))
    def part(names: list[str]) -> str:
        shown = [f"{n} ({len(by_unit[n])} seed{'s' if len(by_unit[n]) != 1 else ''})" for n in names[:limit]]
        return ", ".join(shown) + (f", … {len(names) - limit} more" if len(names) > limit else "")
    removed = sorted(n for n in by_unit if n not in units)
    kept = sorted(n for n in by_unit if n in units)
    parts = []
    if removed:
        parts.append(f"{len(removed)} trained unit(s) no longer in params.yaml: {part(removed)}")
    if kept:
        parts.append(f"seeds no longer trained of {len(kept)} unit(s): {part(kept)}")
    return f"{len(stale)} checkpoint/history file(s) of " + "; ".join(parts)


def variant_names(params: Mapping[str, Any]) -> list[str]:
    return list((params.get("variants") or {}).keys())


def _variant_entry(params: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """``variants.<name>`` of params (``{}`` when empty); ConfigError naming the known ones if absent."""
    variants = params.get("variants") or {}
    if name not in variants:
        raise ConfigError(f"unknown variant {name!r}; params.yaml variants are: {', '.join(variants) or 'none'}")
    entry = variants[name] or {}
    if not isinstance(entry, Mapping):
        raise ConfigError(f"variants.{name} must be a mapping such as {{group: table5, overrides: {{...}}}}, got {entry!r}")
    return entry


def variant_connection(params: Mapping[str, Any], name: str) -> str:
    """Which connection a variant trains, reading only ``variants.<name>.connection``."""
    entry = _variant_entry(params, name)
    if entry.get("official"):
        return RELEASES[entry["official"]["release"]]["link"]["name"]
    return entry.get("connection", "clip_clap")


def connections_used(params: Mapping[str, Any]) -> list[str]:
    """The connections the variants train (or import), in the order params declare them: only their training
    sets are required (e.g. the audio–visual connection alone needs no ULIP-2 embeddings)."""

    used = {variant_connection(params, name) for name in variant_names(params)}
    declared = list(params.get("connections") or {})
    return [name for name in declared if name in used] + sorted(used - set(declared))  # undeclared: refused by validate


#: The paper's training scale per connection (section 4.1: 36 epochs at batch 10240 for CLIP–CLAP;
#: section 4.2: 24 epochs at batch 8192 for CLIP–ULIP). Scale ``small`` replaces a value only while it still is
#: the paper's: a value you set yourself (``dvc exp run -S train.epochs=5``) wins.
PAPER_SCALE = {"clip_clap": {"train": {"epochs": 36, "batch_size": 10240}},
               "clip_ulip": {"train": {"epochs": 24, "batch_size": 8192}}}

#: ``scale.mode`` (README "Training scale"): ``setup`` picks by setup (:data:`SETUP_SCALE`).
SCALE_MODES = ("setup", "paper", "small", "auto")
#: The scale ``scale.mode: setup`` gives each setup: the demo world is small (2,000 texts, 63 trainings within
#: 10 minutes), your own embeddings are as large as they are, the paper's data is the paper's.
SETUP_SCALE = {"demo": "small", "byo": "auto", "paper": "paper"}
#: ``scale.small`` and ``scale.auto`` when params leave them out.
SCALE_DEFAULTS = {"small": {"epochs": 5, "batch_size": 128}, "auto": {"steps": 500, "min_batch": 128}}


def training_scale_block(params: Mapping[str, Any]) -> dict[str, Any]:
    """params' ``scale`` with its defaults, checked: ``{mode, small: {epochs, batch_size}, auto: {steps, min_batch}}``."""

    scale = params.get("scale") or {}
    if not isinstance(scale, Mapping):
        raise ConfigError(f"scale must be a mapping {{mode, small, auto}}, got {scale!r}")
    unknown = sorted(set(scale) - {"mode", *SCALE_DEFAULTS})
    if unknown:
        raise ConfigError(f"scale: unknown key(s) {unknown}; known: mode, small, auto")
    mode = scale.get("mode", "setup")
    _choice("scale.mode", mode, SCALE_MODES)
    block: dict[str, Any] = {"mode": mode}
    for name, defaults in SCALE_DEFAULTS.items():
        values = scale.get(name) or {}
        if not isinstance(values, Mapping):
            raise ConfigError(f"scale.{name} must be a mapping, got {values!r}")
        unknown = sorted(set(values) - set(defaults))
        if unknown:
            raise ConfigError(f"scale.{name}: unknown key(s) {unknown}; known: {', '.join(defaults)}")
        block[name] = {**defaults, **values}
        for key, value in block[name].items():
            _positive_int(f"scale.{name}.{key}", value, minimum=2 if key in ("batch_size", "min_batch") else 1)
    return block


def scale_of(params: Mapping[str, Any]) -> str:
    """The training scale every unit runs at: ``paper``, ``small`` or ``auto`` (``scale.mode``, ``setup``
    resolved by :data:`SETUP_SCALE`)."""
    mode = training_scale_block(params)["mode"]
    return SETUP_SCALE[setup_of(params)] if mode == "setup" else mode


def training_scale(params: Mapping[str, Any], connection: str) -> tuple[dict[str, Any], list[str]]:
    """The ``train`` overrides the training scale (:func:`scale_of`) gives ``connection``, and a note per value
    not applied. ``paper``: none (``train.epochs`` / ``batch_size`` as set). ``small``: ``scale.small``'s epochs
    and batch size, each only where the connection's value (base, then ``connections.<name>``) is the paper's
    (:data:`PAPER_SCALE`) or the paper states none — a value set to anything else was set on purpose and is kept.
    ``auto``: ``train.auto_steps`` / ``auto_min_batch`` from ``scale.auto`` (resolved against the training set's
    size when it trains: :func:`cmcr.train.auto_scale`)."""

    block, mode = training_scale_block(params), scale_of(params)
    if mode == "paper":
        return {}, []
    if mode == "auto":
        return {"train": {"auto_steps": block["auto"]["steps"], "auto_min_batch": block["auto"]["min_batch"]}}, []
    current = group_from_params(params, connection, "train")
    paper = PAPER_SCALE.get(connection, {}).get("train", {})
    applied: dict[str, Any] = {}
    notes: list[str] = []
    for key, value in block["small"].items():
        if key in paper and key in current and current[key] != paper[key]:
            notes.append(f"train.{key}={current[key]!r} kept (set explicitly; scale.small.{key}={value!r} applies "
                         f"only to the paper's {paper[key]!r})")
            continue
        applied[key] = value
    return {"train": applied}, notes


def resolve_variant(params: Mapping[str, Any], name: str) -> Variant:
    """The config of variant ``name``: base groups → connection overrides → (training scale) → variant overrides."""
    entry = _variant_entry(params, name)
    unknown = set(entry) - _VARIANT_KEYS
    if unknown:
        raise ConfigError(f"variants.{name}: unknown key(s) {sorted(unknown)}; known: {sorted(_VARIANT_KEYS)}")
    group = entry.get("group", "table5")
    if group not in GROUPS:
        raise ConfigError(f"variants.{name}.group must be one of {GROUPS}, got {group!r}")
    official = entry.get("official")
    if official:
        if set(official) != {"release", "checkpoint"} or official["release"] not in RELEASES:
            raise ConfigError(f"variants.{name}.official must be {{release: {'|'.join(RELEASES)}, checkpoint: <path>}}, "
                              f"got {dict(official)}")
        official = {"release": str(official["release"]), "checkpoint": str(official["checkpoint"])}
    connection = variant_connection(params, name)

    if connection not in BENCHMARKS.values():
        raise ConfigError(f"variants.{name}.connection: {connection!r} is not a link a benchmark evaluates "
                          f"({', '.join(sorted(set(BENCHMARKS.values())))}); other links declared in params "
                          "(connections.<name>.link) are trained through graphs (cmcr.graph)")
    entry_overrides = entry.get("overrides") or {}
    if not isinstance(entry_overrides, Mapping):
        raise ConfigError(f"variants.{name}.overrides must be a mapping of groups, got {entry_overrides!r}")
    overrides = deep_merge(training_scale(params, connection)[0], entry_overrides)
    config = connection_config_from_params(params, connection, overrides)
    if official and config.connection.to_link_dict() != RELEASES[official["release"]]["link"]:
        raise ConfigError(f"variants.{name}.official: the {official['release']} release was trained on the link "
                          f"{RELEASES[official['release']]['link']}; params declare connections.{connection}.link as "
                          f"{config.connection.to_link_dict()}")
    raw_excluded = entry.get("exclude_sources") or []
    if not isinstance(raw_excluded, (list, tuple)):
        raise ConfigError(f"variants.{name}.exclude_sources must be a list, e.g. [image-text], got {raw_excluded!r}")
    excluded = tuple(raw_excluded)
    bad = set(excluded) - set(SOURCES)
    if bad:
        raise ConfigError(f"variants.{name}.exclude_sources: unknown source(s) {sorted(bad)}; known: {SOURCES}")
    paired = entry.get("paired")
    if paired is not None:
        if not isinstance(paired, str) or not paired:
            raise ConfigError(f"variants.{name}.paired must be the name of a dataset of true pairs (e.g. demo), got {paired!r}")
        if official or excluded:
            raise ConfigError(f"variants.{name}: paired (train on true pairs) cannot be combined with "
                              f"{'official' if official else 'exclude_sources'}")
        if setup_of(params) == "demo" and paired != "demo":
            raise ConfigError(f"variants.{name}.paired: the demo world's true pairs are the dataset 'demo', got {paired!r}")
        if setup_of(params) == "paper":
            require_manifests(params, paired_sets(connection, paired), f"variants.{name}.paired: {paired!r}", "Setups")
        config = paired_objective(config)  # the pair term at τ3 only (cmcr.config.paired_objective)
    return Variant(name, group, str(entry.get("label", name)), config, excluded, official, paired)


def require_manifests(params: Mapping[str, Any], files: Mapping[str, str], what: str, section: str) -> None:
    """``setup: paper``: every ``{space: set file}`` of true pairs listed in ``paper.sets``; ConfigError naming the
    missing ``paper.sets.<space>.<file>`` keys otherwise (``what`` starts the message, ``section`` the README's)."""
    sets = (params.get("paper") or {}).get("sets") or {}
    missing = [f"paper.sets.{space}.{file}" for space, file in files.items() if file not in (sets.get(space) or {})]
    if missing:
        raise ConfigError(f"{what} needs the manifests {', '.join(missing)} (true pairs joined by pair_id; "
                          f"README \"{section}\")")
