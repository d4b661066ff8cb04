"""Import the official C-MCR release's projector checkpoints into our named projectors.

The release stores two heads, ``Head_A`` and ``Head_B``, and their meaning swaps between the two files:
in ``ulip_clip.pt`` Head_A is the CLIP side, in ``clap_clip.pt`` Head_A is the CLAP side. Here each head
becomes the projector of the space it serves (``clip``, ``clap``, ``ulip``), so the official model is
evaluated by the same code as ours.

Key layouts (the official ``cmcr/cmcr_projector.py``):

- ``ulip_clip.pt``: ``ULIPCLIP_Head`` holds two ``MLP_Half`` — one ``net = Sequential(Linear, BN, ReLU)``,
  so keys ``Head_A.net.0.weight``, ``Head_A.net.1.running_mean``, … (our ``official_ulip_clip`` as is).
- ``clap_clip.pt``: ``CLAPCLIP_Head`` holds two ``MLP(res_expansion=2)`` — ``net1 = Sequential(Linear,
  BN, ReLU)`` then ``net2 = Sequential(Linear, BN)``, so keys ``Head_A.net1.0.weight``,
  ``Head_A.net1.1.running_mean``, ``Head_A.net2.0.weight``, ``Head_A.net2.1.weight``, … They map onto our
  ``official_clap_clip`` (one ``net`` of five layers) as ``net1.i → net.i`` and ``net2.i → net.(3+i)``.
  A flat ``net.0 … net.4`` layout (what cmcr itself writes for that kind) is accepted too.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cmcr.config import Connection, ConnectionConfig, LossConfig, ProjectorConfig
from cmcr.projector import build_projectors

#: What each released file is: the link it was trained on (release metadata, in the plain form of
#: ``Connection.to_link_dict``; a variant importing it trains nothing and is evaluated as that link), its projector
#: kind and which head serves which space.
RELEASES = {
    "ulip_clip": {"link": {"name": "clip_ulip", "spaces": ["clip", "ulip"], "shared": "image",
                           "memory": {"clip": "text", "ulip": "points"}},
                  "kind": "official_ulip_clip", "heads": {"clip": "Head_A", "ulip": "Head_B"}},
    "clap_clip": {"link": {"name": "clip_clap", "spaces": ["clip", "clap"], "shared": "text",
                           "memory": {"clip": "image", "clap": "audio"}},
                  "kind": "official_clap_clip", "heads": {"clap": "Head_A", "clip": "Head_B"}},
}


#: the official ``MLP``'s two blocks → positions in our single ``net``: net1 = layers 0–2, net2 = layers 3–4
_BLOCK_OFFSET = {"net1": 0, "net2": 3}


def flat_layout(head: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One head's state dict with the official ``MLP`` keys (``net1.<i>.*`` / ``net2.<i>.*``) renamed to our
    flat ``net.<i>.*``; a head already flat (``MLP_Half``, or cmcr's own) is returned as it is. Mixing both
    layouts in one head is refused."""
    blocks = {k.split(".")[0] for k in head}
    if not blocks & set(_BLOCK_OFFSET):
        return head
    if blocks - set(_BLOCK_OFFSET):
        raise ValueError(f"a head mixes the official MLP layout (net1/net2) with other keys: {sorted(blocks)}")
    out = {}
    for key, value in head.items():
        block, index, rest = key.split(".", 2)
        out[f"net.{_BLOCK_OFFSET[block] + int(index)}.{rest}"] = value
    return out


def load_official(path: str | Path, release: str) -> tuple[nn.ModuleDict, ConnectionConfig]:
    """Load ``ulip_clip.pt`` or ``clap_clip.pt`` (``weights_only=True``) as projectors keyed by space and the config
    they run with (a one-link graph: :func:`cmcr.graph.connection_unit`)."""
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
    heads = {space: flat_layout(sub) for space, sub in heads.items()}
    last_norm = {"official_ulip_clip": "net.1.weight", "official_clap_clip": "net.4.weight"}[spec["kind"]]
    for space, sub in heads.items():
        missing = sorted({"net.0.weight", last_norm} - set(sub))
        if missing:
            raise ValueError(f"{path}: {spec['heads'][space]} does not match the released {spec['kind']} layout "
                             f"(missing {missing})")
    link = Connection.from_link_dict(spec["link"])
    first = next(iter(heads.values()))
    out_dim, hidden = int(first[last_norm].shape[0]), int(first["net.0.weight"].shape[0])
    config = ConnectionConfig(
        connection=link,
        projector=ProjectorConfig(kind=spec["kind"], in_dims={s: int(h["net.0.weight"].shape[1]) for s, h in heads.items()},
                                  hidden_dim=hidden, out_dim=out_dim),
        loss=LossConfig(intra_spaces=link.spaces),
    )
    projectors = build_projectors(config.projector, link.spaces)
    for space, sub in heads.items():
        try:
            projectors[space].load_state_dict(sub, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"{path}: {spec['heads'][space]} does not match the released {spec['kind']} layout: {exc}") from exc
    return projectors.eval(), config
