"""Import the official C-MCR release's projector checkpoints into our named projectors.

The release stores two heads as ``Head_A.net.*`` / ``Head_B.net.*``, and their meaning swaps between
the two files: in ``ulip_clip.pt`` Head_A is the CLIP side, in ``clap_clip.pt`` Head_A is the CLAP
side. Here each head becomes the projector of the space it serves (``clip``, ``clap``, ``ulip``), so
the official model is evaluated by the same code as ours.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cmcr.config import CLIP_CLAP, CLIP_ULIP, ConnectionConfig, LossConfig, ProjectorConfig
from cmcr.projector import build_projectors
from cmcr.train import TrainResult

RELEASES = {
    "ulip_clip": {"connection": CLIP_ULIP, "kind": "official_ulip_clip", "heads": {"clip": "Head_A", "ulip": "Head_B"}},
    "clap_clip": {"connection": CLIP_CLAP, "kind": "official_clap_clip", "heads": {"clap": "Head_A", "clip": "Head_B"}},
}


def load_official(path: str | Path, release: str) -> TrainResult:
    """Load ``ulip_clip.pt`` or ``clap_clip.pt`` (``weights_only=True``) as projectors keyed by space."""
    if release not in RELEASES:
        raise ValueError(f"unknown release {release!r}; known: {sorted(RELEASES)}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"official checkpoint not found: {path} (from the MCR-PEFT/C-MCR release)")
    spec = RELEASES[release]
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    heads = {space: {k[len(head) + 1:]: v for k, v in state.items() if k.startswith(head + ".")}
             for space, head in spec["heads"].items()}
    for space, sub in heads.items():
        if not sub:
            raise ValueError(f"{path}: no {spec['heads'][space]}.* keys (is this the {release} release?)")
    last_norm = {"official_ulip_clip": "net.1.weight", "official_clap_clip": "net.4.weight"}[spec["kind"]]
    for space, sub in heads.items():
        missing = sorted({"net.0.weight", last_norm} - set(sub))
        if missing:
            raise ValueError(f"{path}: {spec['heads'][space]} does not match the released {spec['kind']} layout "
                             f"(missing {missing})")
    first = next(iter(heads.values()))
    out_dim, hidden = int(first[last_norm].shape[0]), int(first["net.0.weight"].shape[0])
    config = ConnectionConfig(
        connection=spec["connection"],
        projector=ProjectorConfig(kind=spec["kind"], in_dims={s: int(h["net.0.weight"].shape[1]) for s, h in heads.items()},
                                  hidden_dim=hidden, out_dim=out_dim),
        loss=LossConfig(intra_spaces=spec["connection"].spaces),
    )
    projectors = build_projectors(config.projector, spec["connection"].spaces)
    for space, sub in heads.items():
        try:
            projectors[space].load_state_dict(sub, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"{path}: {spec['heads'][space]} does not match the released {spec['kind']} layout: {exc}") from exc
    projectors.eval()
    return TrainResult(projectors, config, [])
