"""The encoder interface every contrastive space implements, and the registry that builds them by name.

A space (CLIP, CLAP, ULIP-2, or a demo stand-in) states its ``name``, its ``dim`` and its
``modalities``; for each modality it can ``load`` one raw item — an :class:`~cmcr.items.Item` (a file,
optionally cropped to a box) or, for text, the string — into a tensor, raising on a bad item, and
``encode`` a batch of loaded items into L2-normalised float32 embeddings. Extraction over many items
(batching, failures, shards) is :mod:`cmcr.extraction`; devices and precision are :mod:`cmcr.device`.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F

from cmcr.config import ConfigError


class EncoderSpace(abc.ABC):
    """A frozen multi-modal contrastive space seen through its encoders."""

    name: str
    dim: int
    modalities: tuple[str, ...]

    @abc.abstractmethod
    def load(self, modality: str, item: Any) -> torch.Tensor:
        """Decode and preprocess one item (an :class:`~cmcr.items.Item` or a path; a string for text); raise
        (``ValueError``, ``OSError``…) if it is unusable — extraction records that as a per-item failure."""

    @abc.abstractmethod
    def encode_batch(self, modality: str, batch: list[torch.Tensor]) -> torch.Tensor:
        """Embed a batch of loaded items; returns B×dim (normalised by :meth:`encode`)."""

    def identity(self) -> dict[str, Any]:
        """What decides this space's embeddings, as plain JSON: class, name, dim, the cmcr version, its
        plain settings (numbers, strings, dataclass configs, autocast settings) and a digest of every
        weight and buffer of its modules. Resumable extraction keys its shards by it, so shards made
        with other weights or settings are never mistaken for this run's. Computed once per space.
        """
        if getattr(self, "_identity", None) is None:
            from cmcr import __version__

            settings, digest = {}, hashlib.blake2b(digest_size=16)
            for key, value in sorted(vars(self).items()):
                if key.startswith("_") or key == "device":
                    continue
                if isinstance(value, torch.nn.Module):
                    digest.update(key.encode())
                    state_digest(value, digest)
                elif (plain := _plain(value)) is not None:
                    settings[key] = plain
            self._identity = {"class": f"{type(self).__module__}.{type(self).__qualname__}", "name": self.name,
                              "dim": self.dim, "cmcr": __version__, "settings": settings,
                              "weights": digest.hexdigest()}
        return self._identity

    def encode(self, modality: str, batch: list[torch.Tensor]) -> torch.Tensor:
        if modality not in self.modalities:
            raise ValueError(f"space {self.name!r} has no {modality!r} encoder (it has {list(self.modalities)})")
        with torch.no_grad():
            out = self.encode_batch(modality, batch).float()
        if out.shape != (len(batch), self.dim):
            raise RuntimeError(f"{self.name} {modality} encoder returned {tuple(out.shape)}, expected {(len(batch), self.dim)}")
        return F.normalize(out, dim=-1)


def state_digest(module: torch.nn.Module, digest: Any) -> None:
    """Feed every tensor of ``module``'s state (name, dtype, shape, bytes) into a hashlib ``digest``."""
    for key, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def _plain(value: Any) -> Any:
    """``value`` as JSON-able plain data, or None when it is not plain (models, tokenizers, functions…)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.dtype):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return items if all(i is not None for i in items) else None
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        items = {k: _plain(v) for k, v in value.items()}
        return items if all(i is not None for i in items.values()) else None
    return None


_REGISTRY: dict[str, Callable[..., EncoderSpace]] = {}


def register(name: str) -> Callable[[Callable[..., EncoderSpace]], Callable[..., EncoderSpace]]:
    def deco(factory: Callable[..., EncoderSpace]) -> Callable[..., EncoderSpace]:
        _REGISTRY[name] = factory
        return factory
    return deco


#: the plugin files imported so far, by content digest: (module, {name: factory} it registered)
_PLUGINS: dict[str, tuple[ModuleType, dict[str, Callable[..., EncoderSpace]]]] = {}


def load_plugin(path: str | Path) -> tuple[ModuleType, dict[str, Callable[..., EncoderSpace]]]:
    """Import a user's encoder module from its file (``plugins/touch.py``), which registers its space(s) with
    :func:`register`; returns the module and what it registered. No ``sys.path`` change. The module is named
    after the file and a digest of its bytes (``cmcr_plugin_touch_<digest>``): an edited plugin is another
    module, so its space's identity — and the extraction shards keyed by it — change with it, and the same file
    imported from two places is one module. Extraction workers import it again in their own process."""
    file = Path(path)
    if not file.is_file() or file.suffix != ".py":
        raise FileNotFoundError(f"encoder plugin {path}: not a Python file")
    source = file.read_bytes()
    digest = hashlib.blake2b(source, digest_size=6).hexdigest()
    if digest in _PLUGINS:
        return _PLUGINS[digest]
    name = f"cmcr_plugin_{file.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, file.resolve())
    module = importlib.util.module_from_spec(spec)
    before = dict(_REGISTRY)
    sys.modules[name] = module  # dataclasses and pickling look their module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    _PLUGINS[digest] = module, {k: f for k, f in _REGISTRY.items() if before.get(k) is not f}
    return _PLUGINS[digest]


def registered(name: str, plugin: str | Path | None = None) -> Callable[..., EncoderSpace]:
    """The factory registered under ``name`` — by ``plugin``'s file when given (imported first; its own
    registration wins over another file's of the same name) — ``KeyError`` naming the registered ones otherwise."""
    if plugin is not None:
        _, own = load_plugin(plugin)
        if name in own:
            return own[name]
    if name not in _REGISTRY:
        where = f" (after importing {plugin})" if plugin is not None else ""
        raise KeyError(f"unknown encoder space {name!r}{where}; registered: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def encoder_source(space: str, options: Mapping[str, Any]) -> tuple[str | None, str]:
    """``paper.encoders.<space>``'s ``plugin`` (a file, or None) and ``encoder`` (the registered name; default the
    space's), each a non-empty string where given; ConfigError naming the key otherwise."""
    for key in ("plugin", "encoder"):
        value = options.get(key)
        if value is not None and not (isinstance(value, str) and value):
            raise ConfigError(f"paper.encoders.{space}.{key} must be a string (or null), got {value!r}")
    return options.get("plugin"), options.get("encoder") or space


def register_paper_encoders(params: Mapping[str, Any]) -> None:
    """Called once at start-up by whatever checks params (``cmcr.validation.validate_params``, the report stage), never
    as a side effect of parsing. Setup paper: make every ``paper.encoders.<space>`` buildable by its space's name — import its ``plugin``
    (a .py file under the project's ``plugins/`` folder, which dvc.yaml tracks, registering the user's encoder
    class) and register an ``encoder`` alias (space ``clip_l`` with ``encoder: clip``) — so a link's and a
    graph's checks know the space's modalities. ConfigError naming the key for a bad path or a failed import."""

    if params.get("setup") != "paper":  # (setup's value is checked by the validate stage)
        return
    encoders = (params.get("paper") or {}).get("encoders") or {}
    for space, options in (encoders.items() if isinstance(encoders, Mapping) else ()):
        if not isinstance(options, Mapping) or (options.get("plugin") is None and options.get("encoder") is None):
            continue
        plugin, encoder = encoder_source(space, options)
        key = f"paper.encoders.{space}"
        if plugin is not None:
            path = Path(str(plugin))
            if path.is_absolute() or path.parts[:1] != ("plugins",) or ".." in path.parts or path.suffix != ".py":
                raise ConfigError(f"{key}.plugin: {plugin!r} must be a .py file under the project's plugins/ folder "
                                  "(e.g. plugins/touch.py): dvc.yaml tracks that folder, so an edit re-extracts")
            if not path.is_file():
                raise ConfigError(f"{key}.plugin: {plugin} does not exist (paths are relative to the project root)")
        try:
            factory = registered(encoder, plugin)
        except KeyError as exc:
            raise ConfigError(f"{key}: {exc.args[0]}") from None
        except Exception as exc:  # noqa: BLE001 — any error while importing the user's file is reported as such
            raise ConfigError(f"{key}.plugin: importing {plugin} failed: {type(exc).__name__}: {exc}") from None
        _REGISTRY.setdefault(space, factory)  # a built-in space keeps its own entry (same modalities)


def build_space(name: str, *, encoder: str | None = None, plugin: str | Path | None = None, **kwargs: Any
                ) -> EncoderSpace:
    """Build a registered space by name (``clip``, ``clap``, ``ulip``, ``demo_clip``…) with its keyword arguments.

    ``paper.encoders.<space>`` may add two keys: ``plugin`` — a Python file that registers the encoder (a space of
    your own: README "Adding a space of your own") — and ``encoder`` — the registered name when it differs from the
    space's (e.g. a second CLIP model as space ``clip_l``: ``encoder: clip``)."""
    return registered(encoder or name, plugin)(**kwargs)


def non_empty_text(item: Any) -> str:
    """A text item as a string; ``ValueError`` (a recorded per-item failure) if it is blank."""
    text = str(item)
    if not text.strip():
        raise ValueError("empty text")
    return text
