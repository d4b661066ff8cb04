"""Demo stand-ins for CLIP (image–text), CLAP (audio–text) and ULIP (3D–image).

Small dual encoders trained inside the demo pipeline on paired data of the demo world
(:mod:`cmcr.world`) with the symmetric InfoNCE loss, as their real counterparts were. They plug into the same
:class:`~cmcr.encoders.base.EncoderSpace` interface as the real models: files in, L2-normalised ``dim``-wide
embeddings out.

A stand-in is either *learned* (learnable temperature, whatever geometry training gives) or *shaped* to a
real model's published statistics (:data:`cmcr.metrics.spaces.PUBLISHED`): trained at the temperature that
makes the shaped space's temperature the real one, then given one fixed offset per modality so that its cones
and modality gap are the real model's (:mod:`cmcr.encoders.geometry`). The offsets are buffers of the model,
so every embedding the pipeline, the API or a search extracts is shaped.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from cmcr.loss import symmetric_info_nce
from cmcr.optim import AdamW
from cmcr.encoders.base import EncoderSpace, register
from cmcr.encoders.geometry import Geometry, centre, offset_vectors, project_out, shape
from cmcr.items import file_of
from cmcr.sources.images import load_image
from cmcr.sources.audio import read_audio
from cmcr.world import AUDIO_SECONDS, IMAGE_SIZE, POINTS, SAMPLE_RATE, normalize_points

log = logging.getLogger(__name__)

FORMAT = "cmcr.demo_space/1"
#: which modalities each stand-in space pairs
#: the towers' initialisation takes the global RNG under this lock (stand-ins train side by side in threads)
_INIT_LOCK = threading.Lock()
DEMO_SPACES = {"clip": ("image", "text"), "clap": ("audio", "text"), "ulip": ("points", "image")}
_TOKEN = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


class TextTower(nn.Module):
    """Bag of words: mean word embedding → MLP."""

    def __init__(self, vocab: list[str], dim: int, width: int = 128) -> None:
        super().__init__()
        self.vocab = list(vocab)
        self.index = {w: i + 1 for i, w in enumerate(self.vocab)}  # 0: unknown word
        self.embed = nn.EmbeddingBag(len(self.vocab) + 1, width, mode="mean")
        self.mlp = nn.Sequential(nn.Linear(width, 256), nn.ReLU(), nn.Linear(256, dim))

    def ids(self, text: str) -> torch.Tensor:
        tokens = tokenize(text)
        if not tokens:
            raise ValueError(f"empty text {text!r}")
        return torch.tensor([self.index.get(t, 0) for t in tokens], dtype=torch.long)

    def forward(self, batch: list[torch.Tensor]) -> torch.Tensor:
        offsets = torch.tensor([0] + [len(b) for b in batch[:-1]]).cumsum(0)
        return self.mlp(self.embed(torch.cat(batch), offsets))


class ImageTower(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, dim))

    def forward(self, batch: list[torch.Tensor]) -> torch.Tensor:
        return self.net(torch.stack(batch))


class AudioTower(nn.Module):
    """Log-magnitude spectrum statistics and the envelope's modulation spectrum → MLP."""

    n_fft, hop = 256, 128

    def __init__(self, dim: int) -> None:
        super().__init__()
        frames = int(SAMPLE_RATE * AUDIO_SECONDS) // self.hop + 1
        features = 2 * (self.n_fft // 2 + 1) + frames // 2 + 1
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(features, 256), nn.ReLU(), nn.Linear(256, dim))

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(wave, self.n_fft, self.hop, window=self.window, return_complex=True).abs()
        logspec = torch.log1p(spec)
        envelope = spec.pow(2).sum(1).sqrt()
        modulation = torch.fft.rfft(envelope - envelope.mean(-1, keepdim=True)).abs()
        modulation = torch.log1p(modulation / (envelope.mean(-1, keepdim=True) + 1e-6))
        return torch.cat([logspec.mean(-1), logspec.std(-1), modulation], dim=-1)

    def forward(self, batch: list[torch.Tensor]) -> torch.Tensor:
        return self.mlp(self.features(torch.stack(batch)))


class PointTower(nn.Module):
    """PointNet: shared per-point MLP, max pooling, MLP."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.point_mlp = nn.Sequential(nn.Conv1d(3, 64, 1), nn.ReLU(), nn.Conv1d(64, 128, 1), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, dim))

    def forward(self, batch: list[torch.Tensor]) -> torch.Tensor:
        x = torch.stack(batch).transpose(1, 2)  # B×3×N
        return self.head(self.point_mlp(x).amax(dim=2))


class DemoSpaceModel(nn.Module):
    def __init__(self, name: str, dim: int, vocab: list[str]) -> None:
        super().__init__()
        if name not in DEMO_SPACES:
            raise ValueError(f"unknown demo space {name!r}; known: {sorted(DEMO_SPACES)}")
        self.name, self.dim = name, dim
        towers = {"text": lambda: TextTower(vocab, dim), "image": lambda: ImageTower(dim),
                  "audio": lambda: AudioTower(dim), "points": lambda: PointTower(dim)}
        self.towers = nn.ModuleDict({m: towers[m]() for m in DEMO_SPACES[name]})
        self.logit_scale = nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))
        # cmcr.encoders.geometry: the offset plane (zero: not shaped) and one offset per modality (row order of
        # DEMO_SPACES[name]; zero until fitted after training)
        self.register_buffer("geometry_basis", torch.zeros(2, dim))
        self.register_buffer("geometry_offsets", torch.zeros(2, dim))
        self.register_buffer("geometry_centres", torch.zeros(2, dim))

    @property
    def shaped(self) -> bool:
        return bool(self.geometry_basis.abs().sum() > 0)

    def embed(self, modality: str, batch: list[torch.Tensor]) -> torch.Tensor:
        """The space's embedding: the tower's output, shaped when the space is (unnormalised otherwise)."""
        return self.shape_output(modality, self.towers[modality](batch))

    def shape_output(self, modality: str, out: torch.Tensor) -> torch.Tensor:
        """A tower's output (or the unit embedding it gave before the offsets were fitted) as the space embeds
        it: unchanged when not shaped, else projected, centred and offset (:mod:`cmcr.encoders.geometry`)."""
        if not self.shaped:
            return out
        row = DEMO_SPACES[self.name].index(modality)
        u = project_out(out, self.geometry_basis)
        if self.geometry_centres[row].abs().sum() > 0:
            u = centre(u, self.geometry_centres[row])
        return shape(u, self.geometry_offsets[row])

    def set_geometry(self, basis: torch.Tensor, geometry: Geometry | None = None,
                     centres: torch.Tensor | None = None) -> None:
        """Fix the offset plane (before training) and, once fitted, the modality centres and offsets."""
        self.geometry_basis.copy_(basis)
        self.geometry_offsets.zero_()
        self.geometry_centres.zero_()
        if centres is not None:
            self.geometry_centres.copy_(centres)
        if geometry is not None:
            self.geometry_offsets.copy_(offset_vectors(basis, geometry))


class DemoSpace(EncoderSpace):
    """A trained (or freshly initialised) demo stand-in behind the common encoder interface."""

    def __init__(self, model: DemoSpaceModel) -> None:
        self.model = model.eval()
        self.name = f"demo_{model.name}"
        self.dim = model.dim
        self.modalities = DEMO_SPACES[model.name]

    # -- loading raw items -------------------------------------------------------------------
    def load(self, modality: str, item: Any) -> torch.Tensor:
        if modality == "text":
            return self.model.towers["text"].ids(str(item))
        if modality == "image":
            return image_tensor(load_image(item))  # the item's box (an object proposal) crops it
        if modality == "audio":
            return load_audio(Path(file_of(item, modality)))
        if modality == "points":
            return load_points(Path(file_of(item, modality)))
        raise ValueError(f"unknown modality {modality!r}")

    def encode_batch(self, modality: str, batch: list[torch.Tensor]) -> torch.Tensor:
        return self.model.embed(modality, batch)

    # -- persistence -------------------------------------------------------------------------
    def checkpoint(self, history: list[dict] | None = None) -> dict:
        vocab = self.model.towers["text"].vocab if "text" in self.model.towers else []
        return {"format": FORMAT, "space": self.model.name, "dim": self.dim, "vocab": vocab,
                "state": {k: v.detach().cpu() for k, v in self.model.state_dict().items()}, "history": history or []}

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> "DemoSpace":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"demo space checkpoint not found: {path} (produced by the `spaces` stage)")
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format") != FORMAT:
            raise ValueError(f"{path}: not a demo space checkpoint")
        model = DemoSpaceModel(payload["space"], payload["dim"], payload["vocab"])
        state = dict(payload["state"])
        for key in ("geometry_basis", "geometry_offsets", "geometry_centres"):  # checkpoints from before shaping: not shaped
            state.setdefault(key, torch.zeros(2, payload["dim"]))
        model.load_state_dict(state)
        return cls(model)


def image_tensor(img) -> torch.Tensor:
    """An RGB ``PIL.Image`` (from :func:`~cmcr.sources.images.load_image`) resized to the stand-in's input."""
    if img.size != (IMAGE_SIZE, IMAGE_SIZE):
        img = img.resize((IMAGE_SIZE, IMAGE_SIZE))
    array = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).sub(0.5).div(0.25)


def load_audio(path: Path) -> torch.Tensor:
    wave = read_audio(path, SAMPLE_RATE)
    n = int(SAMPLE_RATE * AUDIO_SECONDS)
    if len(wave) >= n:  # deterministic centre crop
        start = (len(wave) - n) // 2
        wave = wave[start:start + n]
    else:
        wave = np.pad(wave, (0, n - len(wave)))
    return torch.from_numpy(np.ascontiguousarray(wave))


def load_points(path: Path) -> torch.Tensor:
    points = np.load(path, allow_pickle=False)
    if points.ndim != 2 or points.shape[1] < 3 or points.shape[0] < 1:
        raise ValueError(f"{path}: expected an N×3 point cloud, got shape {points.shape}")
    points = points[:, :3].astype(np.float32)
    if not np.isfinite(points).all():
        raise ValueError(f"{path}: point cloud has NaN or infinite coordinates")
    index = np.linspace(0, len(points) - 1, POINTS).round().astype(int)  # deterministic resampling
    return torch.from_numpy(normalize_points(points[index]))


def train_demo_space(name: str, pairs: dict[str, list[Any]], *, vocab: list[str], dim: int = 512, epochs: int = 15,
                     batch_size: int = 256, lr: float = 2e-3, seed: int = 0, temperature: float | None = None,
                     basis: torch.Tensor | None = None, progress: bool = True) -> tuple[DemoSpace, list[dict]]:
    """Train a stand-in space contrastively on paired raw items (``pairs[modality][i]`` are pair i).

    ``temperature``: a fixed InfoNCE temperature (``None``: learnable, initialised at 0.07 as CLIP's).
    ``basis``: the offset plane of a shaped space (:func:`cmcr.encoders.geometry.geometry_basis`); the tower
    then trains on unit embeddings orthogonal to it, and the offsets are fitted afterwards
    (:meth:`DemoSpaceModel.set_geometry`). Thread-safe: several stand-ins train side by side in one process (the
    ``spaces`` stage), each computing what it computes alone.
    """
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):  # the towers' initialisation from the seed, while no other
        torch.manual_seed(seed)                           # stand-in (another thread of the spaces stage) draws
        model = DemoSpaceModel(name, dim, vocab)
    if temperature is not None:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        model.logit_scale.data.fill_(float(np.log(1 / temperature)))
        model.logit_scale.requires_grad_(False)
    if basis is not None:
        model.set_geometry(basis, None)
    space = DemoSpace(model)
    first, second = DEMO_SPACES[name]
    loaded = {m: [space.load(m, x) for x in pairs[m]] for m in (first, second)}
    n = len(loaded[first])
    optimizer = AdamW([p for p in model.parameters() if p.requires_grad], weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    history = []
    model.train()
    bar = tqdm(range(epochs), desc=f"train demo {name}", unit="epoch", disable=not progress)
    for epoch in bar:
        order = torch.randperm(n, generator=generator).tolist()
        total, steps = 0.0, 0
        for start in range(0, n - 1, batch_size):
            idx = order[start:start + batch_size]
            if len(idx) < 2:
                continue
            a = model.embed(first, [loaded[first][i] for i in idx])
            b = model.embed(second, [loaded[second][i] for i in idx])
            scale = model.logit_scale if temperature is not None else model.logit_scale.clamp(max=np.log(100))
            loss = symmetric_info_nce(a, b, 1.0 / scale.exp())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step(lr)
            total, steps = total + loss.item(), steps + 1
        history.append({"epoch": epoch + 1, "loss": total / max(steps, 1),
                        "temperature": float(1 / model.logit_scale.detach().exp())})
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}")
    model.eval()
    return space, history


for _space in DEMO_SPACES:
    register(f"demo_{_space}")(lambda checkpoint, _s=_space: DemoSpace.from_checkpoint(checkpoint))
