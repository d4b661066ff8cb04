"""Reading third-party checkpoints (CLAP, ULIP) safely.

``torch.load(weights_only=True)`` first: it cannot run code. A release file that pickles other objects
(an argparse Namespace, an optimizer) fails that way; loading it needs an explicit ``trust`` switch,
because unpickling runs code from the file. Wrapping keys (``state_dict``, ``module.``) are removed.
"""

from __future__ import annotations

from pathlib import Path

import torch


def load_state_dict_file(path: Path, *, trust: bool = False, switch: str = "trust_checkpoint") -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint as a flat state dict without ``module.`` prefixes."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as exc:
        if trust:
            raise
        raise ValueError(f"{path}: cannot be loaded with weights_only=True ({exc}); if the file comes from the "
                         f"official release and you trust it, set {switch} to load it with pickle") from exc
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else payload
    if not isinstance(state, dict):
        raise ValueError(f"{path}: no state dict inside (got {type(state).__name__})")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
