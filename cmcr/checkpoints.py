"""Reading third-party checkpoints (CLIP, CLAP, ULIP) safely, and converting them once into tensors-only files.

``torch.load(weights_only=True)`` first: it cannot run code. Two kinds of published files fail that way:

- a pickle carrying other objects — ULIP-2's ``pointbert_ULIP-2.pt`` holds an ``argparse.Namespace``
  under ``args`` (the official C-MCR code reads it); unpickling runs code from the file;
- a TorchScript archive — OpenAI's ``ViT-B-32.pt``; loading it runs its scripted code.

Loading either needs an explicit trust switch (``paper.encoders.<space>.trust_checkpoint``, or
``cmcr extract --trust-checkpoint``), or a one-time conversion by ``cmcr convert-weights SRC DST --trust``
into a tensors-only file that loads with ``weights_only=True`` from then on. Wrapping keys
(``state_dict``, ``module.``) and TorchScript's metadata entries are removed.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from cmcr.artifacts import save_torch

#: how the trust switch of a space is named in messages
TRUST_SWITCH = "paper.encoders.{}.trust_checkpoint (CLI: --trust-checkpoint)"
#: non-tensor entries OpenAI's TorchScript CLIP keeps in its state dict (open_clip drops them too)
TORCHSCRIPT_METADATA = ("input_resolution", "context_length", "vocab_size")


def is_torchscript(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip with scripted ``code/``), not a ``torch.save`` file."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name or name.startswith("code/") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def trust_help(path: str | Path, switch: str) -> str:
    """One line on why ``path`` needs trust and the two ways to give it."""
    kind = ("is a TorchScript archive (e.g. OpenAI's ViT-B-32.pt): loading it runs the code inside"
            if is_torchscript(path) else
            "pickles objects besides tensors (e.g. ULIP-2's checkpoint, an argparse Namespace under 'args'): "
            "unpickling runs code from the file")
    return (f"{path} {kind}. If it comes from a source you trust, set {switch} to true, or convert it once into "
            f"a tensors-only file: cmcr convert-weights {path} <out.pt> --trust")


def load_state_dict_file(path: Path, *, trust: bool = False, switch: str = "trust_checkpoint") -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint as a flat state dict without ``module.`` prefixes."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=not trust)
    except Exception as exc:
        if trust:
            raise
        raise ValueError(f"cannot be loaded with weights_only=True ({type(exc).__name__}). {trust_help(path, switch)}") from exc
    if isinstance(payload, torch.jit.ScriptModule):
        payload = {k: v for k, v in payload.state_dict().items() if k not in TORCHSCRIPT_METADATA}
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else payload
    if not isinstance(state, dict):
        raise ValueError(f"{path}: no state dict inside (got {type(state).__name__})")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()
            if isinstance(v, torch.Tensor)}


def convert_checkpoint(src: str | Path, dst: str | Path, *, trust: bool = False) -> int:
    """Write ``src``'s tensors (a pickle or a TorchScript archive) to ``dst`` as a flat, tensors-only state dict
    that loads with ``weights_only=True``; returns the number of tensors. ``trust`` must be given for files
    that run code when loaded (the conversion loads them once)."""
    state = load_state_dict_file(Path(src), trust=trust, switch="--trust")
    save_torch(dst, state)
    return len(state)
