"""Where and in which precision things run: device resolution, autocast settings, seeded initialisation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from cmcr.config import PRECISIONS


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto``/None → CUDA when present, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def amp_settings(precision: str, device: torch.device) -> dict[str, Any]:
    """``torch.autocast`` arguments: mixed precision (``bf16`` / ``fp16``) on CUDA only; fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
    enabled = precision != "fp32" and device.type == "cuda"
    return {"dtype": torch.bfloat16 if precision == "bf16" else torch.float16, "enabled": enabled}


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Build a model's random initial weights from ``seed`` without touching the caller's RNG state:
    a space built with ``allow_random`` (tests, benchmarks, random-weight baselines) is reproducible."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
