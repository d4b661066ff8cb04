"""The encoder interface every contrastive space implements, a registry by name, and batched extraction.

A space (CLIP, CLAP, ULIP-2, or a demo stand-in) states its ``name``, its ``dim`` and its
``modalities``; for each modality it can ``load`` one raw item (a file path, or the text itself) into
a tensor — raising on a bad item — and ``encode`` a batch of loaded items into L2-normalised float32
embeddings. :func:`extract` drives any space over a list of items with batching, a progress bar and
per-item failure records.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cmcr.config import PRECISIONS

log = logging.getLogger(__name__)


class EncoderSpace(abc.ABC):
    """A frozen multi-modal contrastive space seen through its encoders."""

    name: str
    dim: int
    modalities: tuple[str, ...]

    @abc.abstractmethod
    def load(self, modality: str, item: Any) -> torch.Tensor:
        """Decode and preprocess one item (a path, or a string for text); raise ``ValueError`` if unusable."""

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


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Build a model's random initial weights from ``seed`` without touching the caller's RNG state:
    a space built with ``allow_random`` (tests, benchmarks, random-weight baselines) is reproducible."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def amp_settings(precision: str, device: torch.device) -> dict[str, Any]:
    """``torch.autocast`` arguments: mixed precision (``bf16`` / ``fp16``) on CUDA only; fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
    enabled = precision != "fp32" and device.type == "cuda"
    return {"dtype": torch.bfloat16 if precision == "bf16" else torch.float16, "enabled": enabled}


_REGISTRY: dict[str, Callable[..., EncoderSpace]] = {}


def register(name: str) -> Callable[[Callable[..., EncoderSpace]], Callable[..., EncoderSpace]]:
    def deco(factory: Callable[..., EncoderSpace]) -> Callable[..., EncoderSpace]:
        _REGISTRY[name] = factory
        return factory
    return deco


def build_space(name: str, **kwargs: Any) -> EncoderSpace:
    """Build a registered space by name (``demo_clip``, ``demo_clap``, ``demo_ulip``…)."""
    import cmcr.encoders  # noqa: F401  (registers the built-in spaces)

    if name not in _REGISTRY:
        raise KeyError(f"unknown encoder space {name!r}; registered: {sorted(_REGISTRY)}")
    return _REGISTRY[name](**kwargs)


@dataclass
class Extraction:
    """Embeddings of the items that loaded, their positions in the input, and the failures."""

    embeddings: np.ndarray
    kept: list[int]
    failures: list[dict[str, str]] = field(default_factory=list)


def non_empty_text(item: Any) -> str:
    """A text item as a string; ``ValueError`` (a recorded per-item failure) if it is blank."""
    text = str(item)
    if not text.strip():
        raise ValueError("empty text")
    return text


def check_failure_rate(label: str, failed: int, total: int, limit: float, detail: str) -> None:
    """Fail a set whose share of failed items exceeds ``limit`` (``detail`` says where to look)."""
    rate = failed / total if total else 0.0
    if rate > limit:
        raise RuntimeError(f"{label}: {failed} of {total} items failed ({rate:.1%} > {limit:.1%}); {detail}")


def extract(space: EncoderSpace, modality: str, items: Sequence[Any], *, ids: Sequence[str] | None = None,
            batch_size: int = 256, progress: bool = True, desc: str | None = None) -> Extraction:
    """Embed ``items`` with ``space``'s ``modality`` encoder; a bad item is recorded, never silently dropped."""
    ids = list(ids) if ids is not None else [str(i) for i in range(len(items))]
    out = np.empty((len(items), space.dim), dtype=np.float32)
    kept: list[int] = []
    failures: list[dict[str, str]] = []
    bar = tqdm(total=len(items), desc=desc or f"{space.name} {modality}", unit="item", disable=not progress)
    for start in range(0, len(items), batch_size):
        batch, positions = [], []
        for i in range(start, min(start + batch_size, len(items))):
            try:
                batch.append(space.load(modality, items[i]))
                positions.append(i)
            except (ValueError, OSError) as exc:
                failures.append({"id": ids[i], "item": str(items[i]), "reason": f"{type(exc).__name__}: {exc}"})
        if batch:
            emb = space.encode(modality, batch).cpu().numpy()
            out[len(kept):len(kept) + len(batch)] = emb
            kept.extend(positions)
        bar.update(min(batch_size, len(items) - start))
    bar.close()
    if failures:
        log.warning("%s %s: %d of %d items failed (first: %s)", space.name, modality, len(failures), len(items),
                    failures[0]["reason"])
    return Extraction(out[:len(kept)], kept, failures)
