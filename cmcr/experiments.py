"""Experiment variants: the paper's connections, Table 5 rows, the Figure 3 σ² sweep, the appendix-A
text-source ablation — each a named set of overrides in ``params.yaml`` (``variants``) resolved here
into a :class:`~cmcr.config.ConnectionConfig`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cmcr.config import (ConfigError, ConnectionConfig, connection_config_from_params, deep_merge,
                         memory_config_from_params)
from cmcr.sources.texts import SOURCES

SETUPS = ("demo", "byo", "paper")
GROUPS = ("table5", "figure3", "text_sources", "table4", "table1")
_VARIANT_KEYS = {"group", "connection", "overrides", "exclude_sources", "label", "official"}


@dataclass(frozen=True)
class Variant:
    name: str
    group: str
    label: str
    config: ConnectionConfig
    exclude_sources: tuple[str, ...] = ()
    official: Mapping[str, str] | None = None  # {release, checkpoint}: import instead of training


def setup_of(params: Mapping[str, Any]) -> str:
    setup = params.get("setup", "demo")
    if setup not in SETUPS:
        raise ConfigError(f"setup must be one of {SETUPS}, got {setup!r}")
    return setup


def variant_names(params: Mapping[str, Any]) -> list[str]:
    return list((params.get("variants") or {}).keys())


def _variant_entry(params: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """``variants.<name>`` of params (``{}`` when empty); ConfigError naming the known ones if absent."""
    variants = params.get("variants") or {}
    if name not in variants:
        raise ConfigError(f"unknown variant {name!r}; params.yaml variants are: {', '.join(variants) or 'none'}")
    return variants[name] or {}


def variant_connection(params: Mapping[str, Any], name: str) -> str:
    """Which connection a variant trains, reading only ``variants.<name>.connection``."""
    entry = _variant_entry(params, name)
    if entry.get("official"):
        from cmcr.official import RELEASES

        return RELEASES[entry["official"]["release"]]["connection"].name
    return entry.get("connection", "clip_clap")


def connections_used(params: Mapping[str, Any]) -> list[str]:
    """The connections the variants train (or import), in the order of ``CONNECTIONS``: only their training
    sets are required (e.g. the audio–visual connection alone needs no ULIP-2 embeddings)."""
    from cmcr.config import CONNECTIONS

    used = {variant_connection(params, name) for name in variant_names(params)}
    return [name for name in CONNECTIONS if name in used]


def variant_memory_mode(params: Mapping[str, Any], name: str) -> str | None:
    """The Eq. 2 mode variant ``name`` trains with (None for an imported official release), reading only the
    memory settings (base, connection, demo scale, variant) — so the aggregate stage that asks does not
    depend on σ², λ, epochs…"""
    entry = _variant_entry(params, name)
    if entry.get("official"):
        return None
    layers = [((params.get("demo") or {}).get("overrides") or {})] if setup_of(params) == "demo" else []
    layers.append(entry.get("overrides") or {})
    mode = None
    for layer in layers:
        mode = (layer.get("memory") or {}).get("mode", mode)
    return memory_config_from_params(params, variant_connection(params, name), mode).mode


def aggregates_needed(params: Mapping[str, Any]) -> dict[str, set[str]]:
    """``{connection: {Eq. 2 modes}}`` the variants train with: the aggregates the pipeline must compute."""
    needed: dict[str, set[str]] = {}
    for name in variant_names(params):
        mode = variant_memory_mode(params, name)
        if mode is not None:
            needed.setdefault(variant_connection(params, name), set()).add(mode)
    return needed


def resolve_variant(params: Mapping[str, Any], name: str) -> Variant:
    """The config of variant ``name``: base groups → connection overrides → (demo scale) → variant overrides."""
    entry = _variant_entry(params, name)
    unknown = set(entry) - _VARIANT_KEYS
    if unknown:
        raise ConfigError(f"variants.{name}: unknown key(s) {sorted(unknown)}; known: {sorted(_VARIANT_KEYS)}")
    group = entry.get("group", "table5")
    if group not in GROUPS:
        raise ConfigError(f"variants.{name}.group must be one of {GROUPS}, got {group!r}")
    official = entry.get("official")
    if official:
        from cmcr.official import RELEASES

        if set(official) != {"release", "checkpoint"} or official["release"] not in RELEASES:
            raise ConfigError(f"variants.{name}.official must be {{release: {'|'.join(RELEASES)}, checkpoint: <path>}}, "
                              f"got {dict(official)}")
        official = {"release": str(official["release"]), "checkpoint": str(official["checkpoint"])}
    overrides: dict[str, Any] = {}
    if setup_of(params) == "demo":
        overrides = deep_merge(overrides, (params.get("demo") or {}).get("overrides") or {})
    overrides = deep_merge(overrides, entry.get("overrides") or {})
    config = connection_config_from_params(params, variant_connection(params, name), overrides)
    excluded = tuple(entry.get("exclude_sources") or ())
    bad = set(excluded) - set(SOURCES)
    if bad:
        raise ConfigError(f"variants.{name}.exclude_sources: unknown source(s) {sorted(bad)}; known: {SOURCES}")
    return Variant(name, group, str(entry.get("label", name)), config, excluded, official)
