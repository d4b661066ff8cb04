"""A second public world, written as bring-your-own embeddings: three contrastive spaces that relate *near-linearly*
through a shared latent, each modality offset by a large gap — the kind of world where a closed-form linear map
(:mod:`cmcr.closed_form`) is strong, beside the demo world whose stand-ins are far from linear.

Not the paper's, and tuned to no method: the structure is stated here and fixed by its seed. Items carry a latent
z ∈ R^latent: a concept centre (``concepts`` of them) plus size and condition offsets (audio, images and texts
show all three; a point cloud shows the concept only, as in the demo world) plus item noise. Space s embeds
modality m of an item as

    normalise(z A_s + bend · tanh(z B_s) + g_{s,m} + noise · ε)

— one linear map per space shared by its modalities (so the space aligns them), a mild nonlinearity ``bend``, and
a per-modality offset g of norm ``gap`` (the modality gap; the spaces' own gaps are large, like CLIP's). Widths
64 (clip: text, image), 48 (clap: text, audio), 40 (ulip: image, points). The files are the byo layout
(``byo/embeddings/README.md``) for dataset ``linear``: C-MCR's texts in both CLIP and CLAP (with sources), the
memories (ImageNet-, AudioSet-, Objaverse-like), retrieval pairs, 3D classification items and prompts, the graph's
audio↔3D / audio↔text sets and every paired-data reference's true pairs.

``cmcr linear-world --out byo/embeddings`` writes it; ``dvc exp run -S setup=byo`` then runs the whole pipeline on
it (``benchmarks/linear_world.py``: the graph table measured there, RESULTS.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cmcr.artifacts import save_npy, write_parquet

#: the spaces' widths and the two modalities each embeds
SPACES = {"clip": (64, ("text", "image")), "clap": (48, ("text", "audio")), "ulip": (40, ("image", "points"))}
SOURCES = ("image-text", "video-text", "audio-text")
DATASET = "linear"


@dataclass(frozen=True)
class LinearWorldConfig:
    """The sizes and the structure of the linear world (defaults: the demo world's sizes, 40 concepts)."""

    seed: int = 0
    concepts: int = 40
    latent: int = 24
    gap: float = 2.0           # norm of each modality's offset, against a latent part of norm ≈ 1
    bend: float = 0.15         # norm of the nonlinear part (tanh, saturating), relative to the latent part's ≈ 1
    noise: float = 0.05        # norm of the per-embedding noise
    item_noise: float = 0.35   # an item's spread around its concept (with size and condition)
    texts: int = 2000
    memory_images: int = 3000
    memory_audio: int = 3000
    memory_points: int = 2000
    eval_pairs: int = 600
    eval_points: int = 600
    graph_eval: int = 600
    paired: int = 2000
    templates: int = 4


def write_linear_world(folder: str | Path, config: LinearWorldConfig = LinearWorldConfig()) -> dict[str, int]:
    """Write the world's sets into ``folder`` (``<space>/<set>.npy`` + ``.parquet``); returns ``{file: rows}``."""
    folder = Path(folder)
    rng = np.random.default_rng(config.seed)
    k = config.latent
    centres = rng.standard_normal((config.concepts, k)) / np.sqrt(k)
    sizes, conditions = rng.standard_normal((3, k)) / np.sqrt(k), rng.standard_normal((4, k)) / np.sqrt(k)
    maps = {s: (rng.standard_normal((k, d)) / np.sqrt(d), rng.standard_normal((k, d)) * 2.0)  # ‖z A‖ ≈ ‖z‖ ≈ 1
            for s, (d, _) in SPACES.items()}
    gaps = {}
    for space, (d, modalities) in SPACES.items():
        for modality in modalities:
            g = rng.standard_normal(d)
            gaps[space, modality] = config.gap * g / np.linalg.norm(g)
    written: dict[str, int] = {}

    def items(n: int, shows_all: bool = True) -> pd.DataFrame:
        frame = pd.DataFrame({"concept": rng.integers(config.concepts, size=n), "size": rng.integers(3, size=n),
                              "condition": rng.integers(4, size=n)})
        return frame if shows_all else frame.assign(size=-1, condition=-1)

    def latent(frame: pd.DataFrame, seen: bool = True) -> np.ndarray:
        z = centres[frame["concept"].to_numpy()] + config.item_noise * rng.standard_normal((len(frame), k)) / np.sqrt(k)
        if seen:  # size and condition shown (audio, images, texts); a point cloud shows the concept only
            z = z + 0.5 * sizes[frame["size"].to_numpy()] + 0.5 * conditions[frame["condition"].to_numpy()]
        return z

    def embed(space: str, modality: str, z: np.ndarray) -> np.ndarray:
        a, b = maps[space]
        width = a.shape[1]
        x = z @ a + config.bend * np.tanh(z @ b) / np.sqrt(width) + gaps[space, modality]
        x = x + config.noise * rng.standard_normal(x.shape) / np.sqrt(width)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def write(space: str, name: str, matrix: np.ndarray, table: pd.DataFrame) -> None:
        (folder / space).mkdir(parents=True, exist_ok=True)
        save_npy(folder / space / f"{name}.npy", matrix)
        write_parquet(folder / space / f"{name}.parquet", table.reset_index(drop=True))
        written[f"{space}/{name}"] = len(table)

    # C-MCR's texts, in CLIP and CLAP (the same items: text_id), from the three sources in §4.1's proportions
    texts = items(config.texts)
    z = latent(texts)
    texts = texts.assign(text_id=np.arange(config.texts), text=[f"text {i}" for i in range(config.texts)],
                         source=rng.choice(SOURCES, size=config.texts, p=np.array([1.66, 0.58, 0.077]) / 2.317))
    write("clip", "text", embed("clip", "text", z), texts)
    write("clap", "text", embed("clap", "text", z), texts[["text_id"]])
    # the memories: images in CLIP and ULIP (the same items), sounds in CLAP, point clouds in ULIP
    images = items(config.memory_images)
    z = latent(images)
    images = images.assign(item_id=np.arange(config.memory_images))
    write("clip", "image", embed("clip", "image", z), images)
    write("ulip", "image", embed("ulip", "image", z), images[["item_id"]])
    sounds = items(config.memory_audio)
    write("clap", "audio", embed("clap", "audio", latent(sounds)), sounds.assign(item_id=np.arange(config.memory_audio)))
    clouds = items(config.memory_points, shows_all=False)
    write("ulip", "points", embed("ulip", "points", latent(clouds, seen=False)),
          clouds.assign(item_id=np.arange(config.memory_points)))

    def pairs(n: int, first: tuple[str, str], second: tuple[str, str], names: tuple[str, str], shows_all=True) -> None:
        """n pairs of two *different* items of one class (as the demo world's): the same concept, size and
        condition (the second a point cloud: the same concept), each side its own draw — so the exact ceiling of
        the benchmark's classes holds."""
        frame = items(n)
        z_first, z_second = latent(frame), latent(frame, seen=shows_all)
        frame = frame.assign(pair_id=np.arange(n))
        write(first[0], names[0], embed(*first, z_first), frame)
        write(second[0], names[1], embed(*second, z_second), frame)

    d = DATASET
    pairs(config.eval_pairs, ("clap", "audio"), ("clip", "image"), (f"eval_audio@{d}", f"eval_image@{d}"))
    pairs(config.paired, ("clip", "image"), ("clap", "audio"), (f"paired_image@{d}", f"paired_audio@{d}"))
    pairs(config.paired, ("clip", "text"), ("ulip", "points"), (f"paired_text@{d}", f"paired_points@{d}"), shows_all=False)
    pairs(config.paired, ("clap", "audio"), ("ulip", "points"), (f"paired_audio_points@{d}", f"paired_points_audio@{d}"),
          shows_all=False)
    # the graph's triples: a sound, a caption of its concept, size and condition, a point cloud of its concept
    frame = items(config.graph_eval)
    frame = frame.assign(pair_id=np.arange(config.graph_eval))
    write("clap", f"graph_audio@{d}", embed("clap", "audio", latent(frame)), frame)
    write("clip", f"graph_text@{d}", embed("clip", "text", latent(frame)), frame)
    write("ulip", f"graph_points@{d}", embed("ulip", "points", latent(frame, seen=False)), frame)
    # zero-shot 3D: point clouds of every concept, class prompts (templates × concepts) in CLIP
    clouds = items(config.eval_points, shows_all=False)
    write("ulip", f"eval_points@{d}", embed("ulip", "points", latent(clouds, seen=False)), clouds)
    labels = np.repeat(np.arange(config.concepts), config.templates)
    z = centres[labels] + config.item_noise * rng.standard_normal((len(labels), k)) / np.sqrt(k) / 2
    write("clip", f"prompts@{d}", embed("clip", "text", z), pd.DataFrame({"label": labels}))
    (folder / "WORLD.json").write_text(pd.Series(asdict(config)).to_json(indent=1) + "\n")
    return written
