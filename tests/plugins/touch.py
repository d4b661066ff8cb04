"""A space of your own, as a user writes it: a tactile–visual encoder registered as ``touch``.

Touch items are ``.npy`` files holding one 1-D force signal each (any length: resampled to ``samples``); image
items are pictures (an :class:`~cmcr.items.Item` may crop one). Two linear towers, weights from a
``torch.save``'d state dict ``{"touch.weight", "touch.bias", "image.weight", "image.bias"}``. README "Adding a
space of your own" walks through it; the tests copy it to ``plugins/touch.py`` of a pipeline they run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from cmcr.device import resolve_device
from cmcr.encoders.base import EncoderSpace, register
from cmcr.items import file_of
from cmcr.sources.images import load_image


@register("touch")
class TouchSpace(EncoderSpace):
    """Tactile signals and images in one contrastive space."""

    name = "touch"
    modalities = ("touch", "image")

    def __init__(self, weights: str, device: str = "auto", samples: int = 64, size: int = 16) -> None:
        state = torch.load(weights, map_location="cpu", weights_only=True)  # plain tensors only: no code runs
        self.samples, self.size = samples, size
        self.dim = int(state["touch.weight"].shape[0])
        self.device = resolve_device(device)
        self.towers = nn.ModuleDict({"touch": nn.Linear(samples, self.dim), "image": nn.Linear(3 * size * size, self.dim)})
        self.towers.load_state_dict(state)  # strict: a file of another shape is an error naming the keys
        self.towers.to(self.device).eval()

    def load(self, modality: str, item: Any) -> torch.Tensor:
        if modality == "touch":
            path = file_of(item, "touch")
            signal = np.load(path, allow_pickle=False)
            if signal.ndim != 1 or signal.size < 2 or not np.isfinite(signal).all():
                raise ValueError(f"{path}: a touch signal is a finite 1-D array of 2 or more samples, got shape "
                                 f"{signal.shape}")
            x = np.interp(np.linspace(0, signal.size - 1, self.samples), np.arange(signal.size), signal.astype(np.float64))
            x = (x - x.mean()) / (x.std() + 1e-8)
            return torch.from_numpy(x.astype(np.float32))
        image = load_image(item).resize((self.size, self.size))
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).reshape(-1)

    def encode_batch(self, modality: str, batch: list[torch.Tensor]) -> torch.Tensor:
        return self.towers[modality](torch.stack(batch).to(self.device))


def random_weights(path: str, dim: int = 32, samples: int = 64, size: int = 16, seed: int = 0) -> None:
    """A random-weight checkpoint in this encoder's file format (what the tests use instead of trained weights)."""
    torch.manual_seed(seed)
    towers = nn.ModuleDict({"touch": nn.Linear(samples, dim), "image": nn.Linear(3 * size * size, dim)})
    torch.save(towers.state_dict(), path)
