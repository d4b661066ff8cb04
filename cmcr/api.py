"""Use a connected space: embed raw files and texts with trained C-MCR projectors.

    from cmcr.api import ConnectedModel

    model = ConnectedModel.from_pipeline(".", variant="K")      # after `dvc repro` (demo or paper setup)
    audio = model.embed_audio(["dog.wav"])                       # 1×512 float32, L2-normalised
    images = model.embed_image(["a.jpg", "b.jpg"])
    scores = audio @ images.T                                    # cosine similarity in the connected space

Inference is the paper's Figure 1 (b): a file goes through its space's frozen encoder — loaded and
preprocessed by that encoder's own loader, exactly as the extraction stage does — then through that
space's projector, then L2 normalisation (:meth:`cmcr.projector.Projector.embed`). So the API's
embedding of a file equals the pipeline's extracted embedding of it after projection.

A variant is a one-link graph (one checkpoint format, :func:`cmcr.graph.load_unit`; a connection checkpoint of an
older cmcr is converted on load). The connection's *shared* modality (text for CLIP–CLAP, images for CLIP–ULIP)
exists in both spaces.
``shared_space`` says which feeds the connected space: one space's name, or ``mean`` (default: both
projected embeddings averaged and re-normalised). The paper trains both projections of the shared
modality to agree (L_ttc, Eq. 5) but states no inference rule for it; ``mean`` uses both encoders.

A *graph* checkpoint (``models/graphs/<name>/seed<s>.pt``, :mod:`cmcr.graph`) works the same way with any
number of spaces: every modality of the graph is embedded by the one space :meth:`cmcr.graph.Graph.modalities`
assigns (``extend``: the base embeds what it has; e.g. text and images by CLIP, sounds by CLAP + its projector,
point clouds by ULIP-2 + its projector), so a sound and a point cloud meet in one space::

    model = ConnectedModel.from_pipeline(".", graph="extend")
    scores = model.embed_audio(["dog.wav"]) @ model.embed_points(["shape.npy"]).T
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmcr import layout
from cmcr.config import ConfigError
from cmcr.encoders.base import EncoderSpace, build_space
from cmcr.extraction import extract
from cmcr.graph import GraphResult, load_unit
from cmcr.plan import read_plan


class EmbedError(ValueError):
    """An item could not be embedded (the message names the item and why)."""


def file_digest(path: str | Path) -> str:
    """BLAKE2b of a file's bytes (16 bytes hex): what an index records of the checkpoint it was built with."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ConnectedModel:
    """Frozen spaces and a trained unit's modules — a variant (a one-link graph: a connection's two projectors) or a
    graph of any number of spaces, one type (:class:`cmcr.graph.GraphResult`, :func:`cmcr.graph.load_unit`): embeds
    raw items into the connected space, and projects a space's precomputed embeddings there (:meth:`project`).

    ``spaces`` gives an encoder per space; a space without one (setup byo: its embeddings were computed elsewhere;
    or ``encoders=False``) can still project its precomputed embeddings, but not embed raw items. ``shared_space``:
    which space feeds a modality that several embed (a connection's shared modality, :meth:`cmcr.graph.Graph.owners`):
    ``mean`` (default) or one space's name."""

    def __init__(self, result: GraphResult, spaces: Mapping[str, EncoderSpace], *, shared_space: str = "mean",
                 batch_size: int = 64, checkpoint_digest: str | None = None) -> None:
        self.result, self.graph = result, result.graph
        names = set(result.projectors)
        if not set(spaces) <= names:
            raise ConfigError(f"the checkpoint connects {sorted(names)} ({self._what()}); encoders were given "
                              f"for {sorted(spaces)}")
        for name, space in spaces.items():
            width = result.projectors[name].in_dim
            if space.dim != width:
                raise ConfigError(f"the checkpoint's {name} projector takes {width}-d embeddings but the {name} encoder "
                                  f"({space.name}) gives {space.dim}-d: another encoder than the one it was trained on")
        if shared_space not in (*self.graph.spaces, "mean"):
            raise ConfigError(f"shared_space must be one of {', '.join((*self.graph.spaces, 'mean'))}; "
                              f"got {shared_space!r}")
        self.spaces, self.shared_space, self.batch_size = dict(spaces), shared_space, batch_size
        self.checkpoint_digest = checkpoint_digest
        self.dim = {m.out_dim for m in result.projectors.values()}.pop()

    # -- construction ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, checkpoint: str | Path, spaces: Mapping[str, EncoderSpace | Mapping[str, Any]], **kwargs: Any
             ) -> "ConnectedModel":
        """From a cmcr checkpoint (``cmcr train``, the pipeline, or ``cmcr import-official``) and, per space, an
        encoder or the keyword arguments of :func:`cmcr.encoders.base.build_space` (as ``paper.encoders``)."""
        result = load_unit(checkpoint)
        built = {name: s if isinstance(s, EncoderSpace) else build_space(name, **dict(s)) for name, s in spaces.items()}
        return cls(result, built, checkpoint_digest=file_digest(checkpoint), **kwargs)

    @classmethod
    def from_pipeline(cls, root: str | Path = ".", variant: str = "K", *, seed: int | None = None,
                      checkpoint: str | Path | None = None, graph: str | None = None, encoders: bool = True,
                      **kwargs: Any) -> "ConnectedModel":
        """The model ``dvc repro`` trained: ``models/connections/<variant>/seed<seed>.pt`` — or with ``graph``
        ``models/graphs/<graph>/seed<seed>.pt`` — (``seed`` default: the first of the pipeline's seeds; or
        ``checkpoint``) with the encoders of the project's setup — the demo stand-ins (``models/spaces/<space>.pt``)
        for ``setup: demo``, the real encoders of ``paper.encoders`` for ``setup: paper``. ``setup: byo`` has no
        encoders (its embeddings were computed elsewhere), nor has ``encoders=False`` (no encoder built): such a model
        projects precomputed embeddings (:meth:`project`) and nothing else. Setup, seeds and encoders are the ones the
        pipeline ran with: its overview plan (``data/params/overview.json``, :func:`cmcr.plan.overview_plan`), not
        params.yaml as edited since."""
        root = Path(root)
        plan = read_plan(root / layout.OVERVIEW_PLAN)
        if checkpoint is not None:
            path = Path(checkpoint)
        else:
            seeds = plan["seeds"]
            if seed is not None and seed not in seeds:
                raise ConfigError(f"seed {seed} is not one of the pipeline's seeds {seeds}: no such checkpoint")
            folder, name = (root / layout.GRAPHS, graph) if graph else (root / layout.CONNECTIONS, variant)
            path = layout.checkpoint_path(folder, name, seeds[0] if seed is None else seed)
        result = load_unit(path)
        setup = plan["setup"]
        spaces: dict[str, EncoderSpace] = {}
        for name in result.projectors:
            if not encoders or setup == "byo":
                break
            if setup == "demo":
                spaces[name] = build_space(f"demo_{name}", checkpoint=root / layout.SPACES / f"{name}.pt")
            elif setup == "paper":
                options = dict(plan["encoders"].get(name) or {})
                for key in ("weights", "plugin"):  # relative to the project (a plugin always is: plugins/<file>.py)
                    value = options.get(key)
                    if value and not Path(value).is_absolute() and (root / value).exists():
                        options[key] = str(root / value)
                spaces[name] = build_space(name, **options)
        return cls(result, spaces, checkpoint_digest=file_digest(path), **kwargs)

    # -- which space embeds what ------------------------------------------------------------------------
    def spaces_for(self, modality: str) -> list[str]:
        """The space(s) whose encoder and module embed ``modality`` (:meth:`cmcr.graph.Graph.owners`: both of a
        connection's spaces for its shared modality under ``mean``; a graph embeds a space of your own's modalities
        too, e.g. touch)."""
        owners = self.graph.owners(modality)
        if len(owners) == 1 or self.shared_space == "mean":
            return owners
        return [self.shared_space] if self.shared_space in owners else owners[:1]

    def modalities(self) -> dict[str, list[str]]:
        """Every modality this model embeds and the space(s) that embed it."""
        return {m: self.spaces_for(m) for m in self.graph.modalities()}

    def identity(self, modality: str) -> dict[str, Any]:
        """What decides this model's embeddings of ``modality`` (an index built with another is refused)."""
        owners = self.graph.owners(modality)
        encoders = {s: self.spaces[s].identity() for s in self.spaces_for(modality) if s in self.spaces}
        return {"graph": self.graph.name, "checkpoint": self.checkpoint_digest, "modality": modality,
                "shared_space": self.shared_space if len(owners) > 1 else None, "spaces": encoders}

    # -- embedding --------------------------------------------------------------------------------------
    def project(self, space: str, modality: str, embeddings: np.ndarray | torch.Tensor) -> np.ndarray:
        """Map ``space``'s own (L2-normalised) embeddings of ``modality`` — computed by the pipeline, by
        ``encode_raw`` or elsewhere (setup byo) — into the connected space: projector, L2 normalisation. A space
        that does not embed ``modality`` here, or rows of another width than the projector takes, is an
        :class:`EmbedError` naming what the model has."""
        try:
            owners = self.spaces_for(modality)
        except ValueError as exc:
            raise EmbedError(str(exc)) from None
        if space not in owners:
            raise EmbedError(f"{self._what()} embeds {modality} with {', '.join(owners)}, not {space}")
        x = torch.from_numpy(np.array(embeddings, dtype=np.float32))  # a writable copy (inputs may be read-only maps)
        if x.ndim != 2:
            raise EmbedError(f"{space} {modality} embeddings must be an N×d matrix, got shape {tuple(x.shape)}")
        width = self.result.projectors[space].in_dim
        if x.shape[1] != width:
            raise EmbedError(f"{self._what()}'s {space} projector takes {width}-d embeddings; these are "
                             f"{x.shape[1]}-d (another space or encoder than it was trained on)")
        with torch.no_grad():
            return self.result.projectors[space].embed(x, modality).numpy().astype(np.float32, copy=False)

    def _what(self) -> str:
        return self.graph.label()

    def encode_raw(self, space: str, modality: str, items: Sequence[Any]) -> np.ndarray:
        """``space``'s own embeddings of ``items`` through :func:`cmcr.extraction.extract` (the extraction's
        loaders and batching); an item that cannot be loaded is an :class:`EmbedError` naming it."""
        encoder = self.spaces.get(space)
        if encoder is None:
            raise EmbedError(f"no {space} encoder here (setup byo, or loaded without encoders): project {space}'s "
                             f"precomputed embeddings with ConnectedModel.project / `cmcr project`, or index them "
                             f"with `cmcr index --embeddings`")
        result = extract(encoder, modality, list(items), batch_size=self.batch_size, progress=False)
        if result.failures:
            failure = result.failures[0]
            raise EmbedError(f"{failure['item']}: cannot be read as {modality} by {encoder.name}: {failure['reason']}")
        return result.embeddings

    def combine(self, projected: Mapping[str, np.ndarray]) -> np.ndarray:
        """Several spaces' projections of the same items → one (the mean, re-normalised; or the only one)."""
        stacked = np.stack(list(projected.values()))
        mean = stacked.mean(axis=0)
        return (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32)

    def embed(self, modality: str, items: Sequence[Any] | Any) -> np.ndarray:
        """``items`` (paths, :class:`~cmcr.items.Item` s, or strings for text; one item or a list) → N×d float32 rows,
        L2-normalised, in the connected space."""
        if isinstance(items, (str, Path)) or not isinstance(items, Sequence):
            items = [items]
        items = [str(i) if isinstance(i, Path) else i for i in items]
        if not items:
            return np.empty((0, self.dim), dtype=np.float32)
        projected = {s: self.project(s, modality, self.encode_raw(s, modality, items)) for s in self.spaces_for(modality)}
        return self.combine(projected)

    def embed_text(self, texts: Sequence[str] | str) -> np.ndarray:
        return self.embed("text", texts)

    def embed_image(self, images: Sequence[Any] | Any) -> np.ndarray:
        return self.embed("image", images)

    def embed_audio(self, clips: Sequence[Any] | Any) -> np.ndarray:
        return self.embed("audio", clips)

    def embed_points(self, clouds: Sequence[Any] | Any) -> np.ndarray:
        return self.embed("points", clouds)
