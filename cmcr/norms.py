"""Per-modality BatchNorm statistics for the projectors (params ``projector.norm_stats``; issue 30, point 3).

A projector's BatchNorm layers normalise with the statistics of the batch while training — and every batch C-MCR
feeds it is one modality (its texts, or its Eq. 2 aggregates of images): so training sees each modality centred
and scaled by its *own* statistics, the modality gap taken out. At inference (eval mode) the layers use one
running average over those alternating batches: each modality is then off by half the difference of the
modalities' means — the gap comes back where no loss ever saw it. On a world whose spaces relate near-linearly
with large gaps (:mod:`cmcr.linear_world`) this alone cost row K 43 of its 71 mAP (README "Closed-form
baselines and what the graph learns").

``norm_stats: modality`` gives each modality a projector embeds its own inference statistics: after training,
the exact mean and variance of every BatchNorm layer's input over that modality's training set in that space
(the shared set for the shared modality; the raw memory set — ImageNet, AudioSet, Objaverse — for the other),
layer by layer, in float64 chunks (:func:`calibrate`). Training is unchanged (its batch statistics are the
same), so the trained weights are the paper's bytes; only inference differs, and only when told the modality
(``embed(x, modality)``; without one, the shared running statistics as before). ``shared`` (default) is the
paper's and the official release's behaviour.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cmcr.artifacts import load_npy

_BUFFER = re.compile(r"^norm_(\d+)_(.+)_(mean|var)$")


class ModalityNorms:
    """Mixin for a module whose BatchNorm layers sit in ``self.norm_sequence()`` (an ``nn.Sequential``): per-modality
    inference statistics as buffers ``norm_<layer>_<modality>_{mean,var}`` (so they travel in the state dict)."""

    def norm_sequence(self) -> nn.Sequential:  # pragma: no cover - each module says which
        raise NotImplementedError

    def norm_input(self, x: torch.Tensor) -> torch.Tensor:
        """What ``norm_sequence()`` receives from the module's input (default: the input itself)."""
        return x

    def norm_modalities(self) -> tuple[str, ...]:
        """The modalities with statistics of their own, in the order calibrated."""
        found = []
        for name, _ in self.named_buffers(recurse=False):
            match = _BUFFER.match(name)
            if match and match.group(2) not in found:
                found.append(match.group(2))
        return tuple(found)

    def run_sequence(self, x: torch.Tensor, modality: str | None) -> torch.Tensor:
        """``norm_sequence()`` on ``x``; in eval mode a BatchNorm layer uses ``modality``'s statistics when it has
        them (else its shared running statistics, as a plain ``nn.Sequential``)."""
        sequence = self.norm_sequence()
        first = next((i for i, layer in enumerate(sequence) if isinstance(layer, nn.BatchNorm1d)), None)
        if self.training or modality is None or first is None or not hasattr(self, f"norm_{first}_{modality}_mean"):
            return sequence(x)
        for i, layer in enumerate(sequence):
            if isinstance(layer, nn.BatchNorm1d):
                x = F.batch_norm(x, getattr(self, f"norm_{i}_{modality}_mean"), getattr(self, f"norm_{i}_{modality}_var"),
                                 layer.weight, layer.bias, False, 0.0, layer.eps)
            else:
                x = layer(x)
        return x

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """A checkpoint's per-modality statistics become buffers before loading (their modalities are in the keys)."""
        for key, value in state_dict.items():
            if key.startswith(prefix) and _BUFFER.match(key[len(prefix):]) and not hasattr(self, key[len(prefix):]):
                self.register_buffer(key[len(prefix):], torch.empty_like(value))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


@torch.no_grad()
def calibrate(module: ModalityNorms, modality: str, x: torch.Tensor | np.ndarray, chunk: int = 65536) -> None:
    """Give ``module`` ``modality``'s own inference statistics: for each BatchNorm layer in turn, the exact mean and
    (unbiased, as BatchNorm's running) variance of its input over all rows of ``x`` — the layers before it applied
    with this modality's statistics already fitted — accumulated in float64 over chunks of ``chunk`` rows."""
    sequence = module.norm_sequence()
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    n = int(x.shape[0])
    if n < 2:
        raise ValueError(f"calibrating {modality} statistics needs 2+ rows, got {n}")
    was_training = module.training
    module.eval()
    device = next(module.parameters()).device
    fitted: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def upto(rows: torch.Tensor, stop: int) -> torch.Tensor:
        h = module.norm_input(rows.to(device=device, dtype=torch.float32))
        for i, layer in enumerate(sequence):
            if i == stop:
                return h
            h = (F.batch_norm(h, *fitted[i], layer.weight, layer.bias, False, 0.0, layer.eps)
                 if isinstance(layer, nn.BatchNorm1d) else layer(h))
        return h

    for i, layer in enumerate(sequence):
        if not isinstance(layer, nn.BatchNorm1d):
            continue
        total = total_sq = None
        for start in range(0, n, chunk):
            h = upto(x[start:start + chunk], i).double()
            s, sq = h.sum(0), (h * h).sum(0)
            total, total_sq = (s, sq) if total is None else (total + s, total_sq + sq)
        mean = total / n
        var = (total_sq - n * mean * mean).clamp_min(0) / (n - 1)
        fitted[i] = (mean.float(), var.float())
    for i, (mean, var) in fitted.items():
        for suffix, value in (("mean", mean), ("var", var)):
            name = f"norm_{i}_{modality}_{suffix}"
            if hasattr(module, name):
                getattr(module, name).copy_(value)
            else:
                module.register_buffer(name, value.clone())
    module.train(was_training)


def link_sets(embeddings, links, shared: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """The training set of every (space, modality) the ``links`` name (the first link naming one gives it): each
    space's memory set as the pipeline lays it out, ``<embeddings>/<space>/<modality>.npy`` (memory-mapped), and each
    link's shared set — ``shared[link][space]``, the rows it trained on (paired by id, text sources left out), where
    given, else as laid out."""
    sets: dict[str, dict[str, np.ndarray]] = {}
    for link in links:
        for space in link.spaces:
            for modality in (link.shared_modality, link.memory_modality[space]):
                if modality in sets.setdefault(space, {}):
                    continue
                if shared is not None and modality == link.shared_modality and link.name in shared:
                    sets[space][modality] = shared[link.name][space]
                else:
                    sets[space][modality] = load_npy(Path(embeddings) / f"{link.set_path(space, modality)}.npy")
    return sets


def calibrate_all(projectors: Mapping[str, nn.Module], sets: Mapping[str, Mapping[str, torch.Tensor | np.ndarray]]) -> list[str]:
    """:func:`calibrate` every projector of ``projectors`` that has BatchNorm statistics (:class:`ModalityNorms`) on
    each ``sets[space][modality]``; returns what was calibrated (``space/modality (rows)``), for the log."""
    done = []
    for space, by_modality in sets.items():
        module = projectors[space] if space in projectors else None
        if not isinstance(module, ModalityNorms):
            continue  # the base's identity, a closed-form map: nothing to calibrate
        for modality, x in by_modality.items():
            calibrate(module, modality, x)
            done.append(f"{space}/{modality} ({len(x):,})")
    return done
