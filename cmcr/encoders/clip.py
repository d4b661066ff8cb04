"""CLIP (image–text) through open_clip, behind the :class:`~cmcr.encoders.base.EncoderSpace` interface.

The paper (and the official release) use OpenAI's ViT-B/32. Its weights need open_clip's
``ViT-B-32-quickgelu`` architecture: ``ViT-B-32`` with OpenAI weights silently builds the wrong
activation (open_clip issue #771), so that combination is refused here.

Weights come from, in order of preference: a local file (``weights: /path/to/ViT-B-32.pt`` or an
``open_clip_pytorch_model.bin``), or an open_clip tag (``openai``) that resolves from a pre-filled
Hugging Face cache — or from the hub when the user is online and has not set ``HF_HUB_OFFLINE=1``.
Nothing is downloaded otherwise; a missing file is one clear error naming it and the param.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from cmcr.checkpoints import TRUST_SWITCH, is_torchscript, trust_help
from cmcr.config import ConfigError
from cmcr.device import amp_settings, resolve_device, seeded_init
from cmcr.encoders.base import EncoderSpace, non_empty_text, register
from cmcr.sources.images import load_image

log = logging.getLogger(__name__)

WEIGHTS_HELP = ("OpenAI CLIP ViT-B/32 weights: the open_clip tag 'openai' for ViT-B-32-quickgelu "
                "(hub: timm/vit_base_patch32_clip_224.openai), or OpenAI's ViT-B-32.pt")


@register("clip")
class ClipSpace(EncoderSpace):
    """CLIP image and text encoders; outputs are L2-normalised by :meth:`EncoderSpace.encode`."""

    modalities = ("image", "text")

    def __init__(self, weights: str | None = None, model_name: str = "ViT-B-32-quickgelu", device: str = "auto",
                 precision: str = "fp32", allow_random: bool = False, seed: int = 0,
                 param: str = "encoders.clip.weights", trust_checkpoint: bool = False) -> None:
        import open_clip

        if model_name == "ViT-B-32" and weights is not None and "openai" in str(weights).lower():
            raise ConfigError("OpenAI CLIP weights need model_name 'ViT-B-32-quickgelu': 'ViT-B-32' builds GELU "
                              "where OpenAI trained QuickGELU (open_clip #771), which silently degrades embeddings")
        if weights is None and not allow_random:
            raise ConfigError(f"no CLIP weights given: set {param} to {WEIGHTS_HELP}")
        pretrained = weights
        if weights is not None and _looks_like_path(weights):
            path = Path(weights).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"CLIP weights not found: {path}. Expected {WEIGHTS_HELP}; "
                                        f"set {param} to the file's path")
            pretrained = str(path)
        self.device = resolve_device(device)
        try:
            with seeded_init(seed):  # only matters without weights (allow_random)
                model, _, preprocess = open_clip.create_model_and_transforms(
                    model_name, pretrained=pretrained, device=self.device, weights_only=not trust_checkpoint)
        except (RuntimeError, pickle.UnpicklingError) as exc:
            refused = isinstance(exc, pickle.UnpicklingError) or "weights_only" in str(exc) or is_torchscript(pretrained)
            if pretrained and _looks_like_path(pretrained) and not trust_checkpoint and refused:
                raise ValueError(f"CLIP weights cannot be loaded with weights_only=True ({type(exc).__name__}). "
                                 + trust_help(pretrained, TRUST_SWITCH.format("clip"))) from exc
            if os.environ.get("HF_HUB_OFFLINE") == "1" and pretrained and not _looks_like_path(pretrained):
                raise FileNotFoundError(
                    f"CLIP weights tag {pretrained!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 "
                    f"forbids downloading it. Pre-fill the cache or set {param} to a local file ({WEIGHTS_HELP})"
                ) from exc
            raise
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.dim = int(open_clip.get_model_config(model_name)["embed_dim"])
        self.name = "clip"
        self.amp = amp_settings(precision, self.device)
        log.info("CLIP %s (%s) on %s, %d-d", model_name, pretrained or "random init", self.device, self.dim)

    def load(self, modality: str, item: Any) -> torch.Tensor:
        if modality == "text":
            return self.tokenizer([non_empty_text(item)])[0]  # longer than the context (77 tokens): truncated, ends with EOT
        return self.preprocess(load_image(item))  # RGB, cropped to the item's box; decoding errors raise OSError

    def encode_batch(self, modality: str, batch: list[torch.Tensor]) -> torch.Tensor:
        x = torch.stack(batch).to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, **self.amp):
            out = self.model.encode_image(x) if modality == "image" else self.model.encode_text(x)
        return out.float()


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.endswith((".pt", ".bin", ".safetensors", ".pth"))
