"""The embedded demo world: hidden concepts shared by images, sounds, point clouds and captions.

Real CLIP / CLAP / ULIP weights and the paper's datasets cannot be used here, so the default pipeline
generates a small world whose ground truth is known and runs the same stages on it. Every concept has
a visual form (shape + colour), a sound (pitch, timbre, rhythm), a 3D shape and words (noun, colour,
action, sound verb). Every generated item varies within its concept (position, size, condition, jitter, noise).

Files are written as a real dataset would be: ``images/*.png`` (32×32 RGB), ``audio/*.wav``
(8 kHz mono 16-bit), ``points/*.npy`` (N×3 float32), plus ``manifest.parquet`` (one row per file:
``item_id, modality, split, concept, path``; an image–sound–points triple used for a pair shares a
``pair_id``) and ``captions.parquet`` (``text_id, text, concept, source, split``).

Splits and what uses them (no audio–image and no 3D–text pair is ever used for training):
- captions ``clip_pairs`` + images ``clip_pairs``  → trains the CLIP stand-in (image–text pairs);
- captions ``clap_pairs`` + audio ``clap_pairs``   → trains the CLAP stand-in (audio–text pairs);
- images ``ulip_pairs`` + points ``ulip_pairs``    → trains the ULIP stand-in (3D–image pairs);
- captions ``corpus`` (three sources, like §4.1)   → the C-MCR text set;
- images / audio / points ``memory``               → ImageNet / AudioSet / Objaverse stand-ins;
- audio + images ``eval`` (same ``pair_id``)       → AVE-like audio–image retrieval pairs;
- points ``eval``                                  → ModelNet-like 3D classification set;
- audio + points + captions ``graph_eval``         → the MCR graph's audio↔3D and audio↔text sets (issue 22);
- audio + points ``graph_reference``               → true audio–3D pairs, for the paired-data reference only.
"""

from __future__ import annotations

import logging
import math
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from cmcr.artifacts import write_parquet
from cmcr.items import Item
from cmcr.sources.texts import SOURCES

log = logging.getLogger(__name__)

IMAGE_SIZE = 32
SAMPLE_RATE = 8000
AUDIO_SECONDS = 0.5
POINTS = 256

#: name, colour word, RGB, 2-D shape, action, sound verb, sound adjective, f0 (Hz), harmonic decay,
#: amplitude-modulation rate (Hz), 3-D shape
CONCEPTS: list[tuple] = [
    ("bell", "golden", (230, 180, 40), "circle", "swinging", "ringing", "bright", 880.0, 0.3, 0.0, "sphere"),
    ("drum", "red", (200, 40, 40), "square", "being hit", "booming", "deep", 110.0, 0.8, 4.0, "cylinder"),
    ("bird", "blue", (50, 90, 220), "triangle", "flying", "chirping", "high", 2200.0, 0.2, 12.0, "cone"),
    ("car", "silver", (190, 190, 200), "bar", "driving", "humming", "steady", 160.0, 0.9, 0.0, "box"),
    ("dog", "brown", (130, 80, 40), "blob", "running", "barking", "loud", 440.0, 0.7, 3.0, "capsule"),
    ("rain", "grey", (110, 110, 120), "stripes", "falling", "pattering", "soft", 0.0, 0.0, 0.0, "plane"),
    ("train", "black", (30, 30, 30), "rails", "moving", "rumbling", "heavy", 70.0, 0.95, 2.0, "long box"),
    ("guitar", "orange", (240, 130, 30), "ring", "being played", "strumming", "warm", 330.0, 0.6, 0.0, "torus"),
    ("fire", "yellow", (250, 220, 60), "flame", "burning", "crackling", "hot", 0.0, 0.0, 25.0, "pyramid"),
    ("clock", "white", (240, 240, 240), "cross", "ticking", "ticking", "sharp", 1500.0, 0.1, 2.0, "disc"),
    ("phone", "green", (40, 180, 70), "diamond", "vibrating", "buzzing", "shrill", 1100.0, 0.5, 8.0, "thin box"),
    ("engine", "purple", (130, 50, 160), "hexagon", "running", "roaring", "rough", 55.0, 0.97, 30.0, "cube"),
]

#: Every item also has a size (0 small, 1 medium, 2 large), visible in images (object radius), audible
#: in sounds (smaller → higher pitch / faster rhythm) and named in most captions: a within-concept
#: attribute shared across modalities, so that retrieval has more to find than the concept alone.
SIZE_WORDS = (("small", "tiny", "little"), ("medium-sized", "regular", "ordinary"), ("large", "big", "huge"))
SIZE_RADIUS = (0.17, 0.26, 0.36)
SIZE_PITCH = (1.5, 1.0, 0.66)

#: Every item also has a condition (0 new … 3 battered): an item-specific wear, visible in images (grain on
#: the object's surface), audible in sounds (hiss and a duller spectrum) and named in most captions. It is the
#: retrieval benchmark's third class factor (issue 11): with concept × size × condition = 144 classes, items
#: that share a concept still differ in detail both spaces encode, so the benchmark's exact ceiling sits far
#: above what a concept-level match reaches.
CONDITION_WORDS = (("new", "shiny", "pristine"), ("used", "scuffed", "worn"), ("old", "faded", "weathered"),
                   ("battered", "rusty", "decrepit"))
CONDITION_GRAIN = (0.0, 28.0, 55.0, 85.0)   # std of the per-pixel grain on the object (0-255 scale)
CONDITION_HISS = (0.0, 0.05, 0.11, 0.2)     # std of the hiss added to the sound (full scale 1)
CONDITION_DULL = (1, 1, 2, 3)               # moving-average length: older recordings sound duller

_TEMPLATES = {
    "image-text": ["a photo of a {colour} {noun}", "a {colour} {noun} on a plain background",
                   "a picture showing a {noun}", "a small {colour} {noun}", "a close-up of a {colour} {noun}"],
    "video-text": ["a {noun} is {action}", "a video of a {noun} {action}", "someone watches a {noun} {action}",
                   "a {colour} {noun} {action} slowly"],
    "audio-text": ["the sound of a {noun} {sound}", "a {adj} {sound} from a {noun}", "{sound} of a {noun} nearby",
                   "a {noun} {sound} in the distance", "{adj} {sound} noise"],
}


SCENE_SIZE = 64


@dataclass(frozen=True)
class WorldConfig:
    """Sizes of the demo world (params ``demo.world``)."""

    seed: int = 0
    pair_captions: int = 3000      # caption–image pairs (CLIP stand-in) and caption–audio pairs (CLAP)
    ulip_pairs: int = 2000         # image–points pairs (ULIP stand-in)
    corpus: int = 4000             # C-MCR training texts
    memory_images: int = 3000
    memory_audio: int = 3000
    memory_points: int = 2000
    eval_pairs: int = 600          # audio–image retrieval pairs
    eval_points: int = 600         # 3D classification items
    scenes: int = 300              # localization scenes: two objects, the sound of one of them
    scene_negatives: int = 150     # counterfactual negatives: the sound of an object not in the scene
    reference_pairs: int = 3000    # true audio–image pairs (the paired-data reference trains on them; C-MCR never)
    reference_points: int = 2000   # true point cloud–caption pairs (the same for CLIP–ULIP)
    graph_eval: int = 600          # sound–point cloud–caption triples: the unified space's audio↔3D, audio↔text sets
    graph_reference: int = 2000    # true sound–point cloud pairs (the audio–3D paired-data reference only)

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if not isinstance(value, int) or value < (0 if name == "seed" else 1):
                raise ValueError(f"demo.world.{name} must be a positive integer, got {value!r}")

    def set_rows(self, name: str) -> int | None:
        """How many items extraction set ``name`` holds in this world (memory sets named by modality, the texts
        ``text``; ``paired_*`` the true pairs), before any item fails to load; None for a set it has not."""
        sizes = {"text": self.corpus, "image": self.memory_images, "audio": self.memory_audio,
                 "points": self.memory_points, "paired_image": self.reference_pairs, "paired_audio": self.reference_pairs,
                 "paired_points": self.reference_points, "paired_text": self.reference_points,
                 "paired_audio_points": self.graph_reference, "paired_points_audio": self.graph_reference}
        return sizes.get(name.split("@")[0])


def concept_names() -> list[str]:
    return [c[0] for c in CONCEPTS]


def class_names() -> dict[str, dict[int, str]]:
    """Words for the evaluation tables' class columns (their values are indices): each concept's name, each size
    level's and condition's first word ("small", "used")."""
    return {"concept": dict(enumerate(concept_names())),
            "size": {level: words[0] for level, words in enumerate(SIZE_WORDS)},
            "condition": {level: words[0] for level, words in enumerate(CONDITION_WORDS)}}


# ---------------------------------------------------------------- captions

def make_caption(concept: int, size: int, source: str, rng: np.random.Generator, condition: int = 0) -> str:
    """A caption of the given source style; 80 % of captions also name the size, 80 % the condition."""
    name, colour, _, _, action, sound, adj, *_ = CONCEPTS[concept]
    template = _TEMPLATES[source][rng.integers(len(_TEMPLATES[source]))]
    if rng.uniform() < 0.8:
        name = f"{SIZE_WORDS[size][rng.integers(3)]} {name}"
    if rng.uniform() < 0.8:
        name = f"{CONDITION_WORDS[condition][rng.integers(3)]} {name}"
    return template.format(noun=name, colour=colour, action=action, sound=sound, adj=adj)


def class_prompts(name: str) -> list[str]:
    """Prompts for zero-shot 3D classification (ULIP's first template and a few of its kind)."""
    return [f"a point cloud model of {name}.", f"a 3D model of a {name}.", f"there is a {name} in the scene.",
            f"a photo of a {name}.", f"a {name}."]


# ---------------------------------------------------------------- images

def object_mask(concept: int, size_level: int, rng: np.random.Generator) -> np.ndarray:
    """32×32 boolean mask of the concept's shape at the item's size, jittered in place."""
    shape = CONCEPTS[concept][3]
    size = IMAGE_SIZE
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = size / 2 + rng.normal(0, 3, 2)
    r = size * SIZE_RADIUS[size_level] * rng.uniform(0.92, 1.08)
    dx, dy = (xx - cx) / r, (yy - cy) / r
    if shape == "circle":
        mask = dx ** 2 + dy ** 2 < 1
    elif shape == "square":
        mask = (np.abs(dx) < 0.8) & (np.abs(dy) < 0.8)
    elif shape == "triangle":
        mask = (dy < 0.8) & (dy > -0.9 + 1.7 * np.abs(dx))
    elif shape == "bar":
        mask = (np.abs(dx) < 1.2) & (np.abs(dy) < 0.4)
    elif shape == "blob":
        mask = (dx / 1.1) ** 2 + (dy / 0.7) ** 2 + 0.3 * np.sin(3 * dx) < 1
    elif shape == "stripes":
        mask = np.sin((xx + 0.5 * yy) * 0.9 + rng.uniform(0, 6)) > 0.3
    elif shape == "rails":
        mask = (np.abs(dy) < 0.9) & ((np.abs(dy - 0.5) < 0.12) | (np.abs(dy + 0.5) < 0.12) | (np.mod(dx * 3, 1) < 0.2))
    elif shape == "ring":
        rr = dx ** 2 + dy ** 2
        mask = (rr < 1) & (rr > 0.4)
    elif shape == "flame":
        mask = (dx ** 2 + (dy + 0.2) ** 2 < 0.6) | ((np.abs(dx) < 0.6 * (1 + dy)) & (dy < 0.3) & (dy > -1))
    elif shape == "cross":
        mask = ((np.abs(dx) < 0.25) | (np.abs(dy) < 0.25)) & (np.abs(dx) < 1) & (np.abs(dy) < 1)
    elif shape == "diamond":
        mask = np.abs(dx) + np.abs(dy) < 1
    elif shape == "hexagon":
        mask = (np.abs(dy) < 0.85) & (np.abs(dx) * 0.87 + np.abs(dy) * 0.5 < 0.87)
    else:  # pragma: no cover - CONCEPTS is fixed
        raise ValueError(shape)
    return mask


def object_colour(concept: int, rng: np.random.Generator) -> np.ndarray:
    return np.clip(np.asarray(CONCEPTS[concept][2], dtype=np.float32) + rng.normal(0, 18, 3), 0, 255)


def render_image(concept: int, size_level: int, rng: np.random.Generator, condition: int = 0) -> np.ndarray:
    """32×32 RGB uint8: the concept's shape in its colour at the item's size, jittered in place, hue and noise;
    the object's surface grained by its condition."""
    size = IMAGE_SIZE
    mask = object_mask(concept, size_level, rng)
    background = rng.uniform(0, 255, 3) * 0.5 + 60
    colour = object_colour(concept, rng)
    image = np.empty((size, size, 3), dtype=np.float32)
    image[:] = background
    image[mask] = colour
    if CONDITION_GRAIN[condition] > 0:  # luminance grain on the object only
        image[mask] += rng.normal(0, CONDITION_GRAIN[condition], (int(mask.sum()), 1))
    image += rng.normal(0, 10, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- sounds

def synthesize_sound(concept: int, size_level: int, rng: np.random.Generator, condition: int = 0) -> np.ndarray:
    """0.5 s mono float32 in [-1, 1]: harmonic tone (or noise) with the concept's pitch, timbre and rhythm,
    pitch and rhythm scaled by the item's size, hiss and dullness by its condition."""
    *_, f0, decay, am_rate, _ = CONCEPTS[concept]
    f0, am_rate = f0 * SIZE_PITCH[size_level], am_rate * SIZE_PITCH[size_level]
    n = int(SAMPLE_RATE * AUDIO_SECONDS)
    t = np.arange(n, dtype=np.float32) / SAMPLE_RATE
    if f0 > 0:
        f = f0 * rng.uniform(0.94, 1.06)
        signal = np.zeros(n, dtype=np.float32)
        for h in range(1, 9):
            if f * h >= SAMPLE_RATE / 2:
                break
            signal += (decay ** (h - 1)) * np.sin(2 * np.pi * f * h * t + rng.uniform(0, 2 * np.pi))
    else:  # noise-like concepts (rain, fire): band-shaped noise
        signal = rng.normal(0, 1, n).astype(np.float32)
        if CONCEPTS[concept][0] == "rain":
            signal = np.convolve(signal, np.ones(2 + 2 * size_level) / (2 + 2 * size_level), mode="same").astype(np.float32)
        else:
            signal = np.diff(signal, prepend=0).astype(np.float32)
    if am_rate > 0:
        signal *= 0.55 + 0.45 * np.sin(2 * np.pi * am_rate * rng.uniform(0.9, 1.1) * t + rng.uniform(0, 6))
    signal /= np.abs(signal).max() + 1e-6
    signal = signal * rng.uniform(0.4, 0.9) + rng.normal(0, 0.03, n)
    if condition:
        dull = CONDITION_DULL[condition]
        if dull > 1:
            signal = np.convolve(signal, np.ones(dull) / dull, mode="same")
        signal = signal + rng.normal(0, CONDITION_HISS[condition], n)
    return np.clip(signal, -1, 1).astype(np.float32)


def write_wav(path: Path, signal: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    pcm = (np.clip(signal, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(sample_rate)
        handle.writeframes(pcm.tobytes())


# ---------------------------------------------------------------- point clouds

def sample_points(concept: int, rng: np.random.Generator, n: int = POINTS) -> np.ndarray:
    """n×3 float32 points on the concept's 3-D surface, randomly rotated about z, scaled and jittered."""
    shape = CONCEPTS[concept][-1]
    u, v = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    theta, phi = 2 * np.pi * u, np.arccos(2 * v - 1)
    if shape == "sphere":
        p = np.stack([np.sin(phi) * np.cos(theta), np.sin(phi) * np.sin(theta), np.cos(phi)], 1)
    elif shape in ("box", "cube", "long box", "thin box"):
        dims = {"box": (1.0, 0.6, 0.4), "cube": (0.8, 0.8, 0.8), "long box": (1.6, 0.35, 0.35), "thin box": (0.5, 0.9, 0.08)}[shape]
        p = rng.uniform(-1, 1, (n, 3))
        axis = rng.integers(0, 3, n)
        p[np.arange(n), axis] = np.sign(p[np.arange(n), axis])
        p = p * np.asarray(dims)
    elif shape == "cylinder":
        p = np.stack([np.cos(theta), np.sin(theta), 2 * v - 1], 1) * np.array([0.7, 0.7, 0.6])
    elif shape == "cone":
        h = np.sqrt(v)
        p = np.stack([h * np.cos(theta) * 0.7, h * np.sin(theta) * 0.7, 1 - 2 * h], 1)
    elif shape == "capsule":
        p = np.stack([np.sin(phi) * np.cos(theta) * 0.5, np.sin(phi) * np.sin(theta) * 0.5, np.cos(phi) * 0.5], 1)
        p[:, 0] += np.where(rng.uniform(size=n) < 0.5, -0.5, 0.5) * (np.abs(p[:, 0]) < 2)
    elif shape == "plane":
        p = np.stack([2 * u - 1, 2 * v - 1, 0.05 * rng.normal(size=n)], 1)
    elif shape == "torus":
        p = np.stack([(0.7 + 0.25 * np.cos(2 * np.pi * v)) * np.cos(theta),
                      (0.7 + 0.25 * np.cos(2 * np.pi * v)) * np.sin(theta), 0.25 * np.sin(2 * np.pi * v)], 1)
    elif shape == "pyramid":
        h = np.sqrt(v)
        s = 2 * rng.uniform(size=n) - 1
        side = rng.integers(0, 4, n)
        x = np.where(side % 2 == 0, h * s, h * np.where(side == 1, 1, -1))
        y = np.where(side % 2 == 1, h * s, h * np.where(side == 0, 1, -1))
        p = np.stack([x * 0.8, y * 0.8, 1 - 2 * h], 1)
    elif shape == "disc":
        rr = np.sqrt(v)
        p = np.stack([rr * np.cos(theta), rr * np.sin(theta), 0.08 * (2 * rng.uniform(size=n) - 1)], 1)
        p = p[:, [0, 2, 1]]
    else:  # pragma: no cover - CONCEPTS is fixed
        raise ValueError(shape)
    angle = rng.uniform(0, 2 * np.pi)
    rot = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    p = p @ rot.T * rng.uniform(0.8, 1.2) + rng.normal(0, 0.02, (n, 3))
    return p.astype(np.float32)


def normalize_points(points: np.ndarray) -> np.ndarray:
    """Centre and scale into the unit sphere (as ULIP does for its inputs)."""
    centred = points - points.mean(axis=0, keepdims=True)
    scale = np.linalg.norm(centred, axis=1).max()
    return (centred / (scale if scale > 0 else 1.0)).astype(np.float32)


# ---------------------------------------------------------------- generation

def generate_world(root: str | Path, config: WorldConfig = WorldConfig(), *, progress: bool = True) -> dict[str, int]:
    """Write the demo world's files under ``root``; returns item counts per (modality, split)."""
    root = Path(root)
    for sub in ("images", "audio", "points"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    k = len(CONCEPTS)
    rows: list[dict] = []
    captions: list[dict] = []

    def add_caption(concept: int, size: int, condition: int, source: str, split: str) -> int:
        text_id = len(captions)
        captions.append({"text_id": text_id, "text": make_caption(concept, size, source, rng, condition),
                         "concept": concept, "size": size, "condition": condition, "source": source, "split": split})
        return text_id

    def add(modality: str, split: str, concept: int, size: int, condition: int, pair_id: int = -1,
            text_id: int = -1) -> None:
        item_id = f"{modality}_{len(rows):06d}"
        if modality == "image":
            path = f"images/{item_id}.png"
            Image.fromarray(render_image(concept, size, rng, condition)).save(root / path)
        elif modality == "audio":
            path = f"audio/{item_id}.wav"
            write_wav(root / path, synthesize_sound(concept, size, rng, condition))
        else:  # a point cloud is the object's shape: its condition is not visible in it
            path = f"points/{item_id}.npy"
            np.save(root / path, sample_points(concept, rng))
        rows.append({"item_id": item_id, "modality": modality, "split": split, "concept": concept, "size": size,
                     "condition": condition, "pair_id": pair_id, "text_id": text_id, "path": path})

    def draw() -> tuple[int, int, int]:
        return int(rng.integers(k)), int(rng.integers(3)), int(rng.integers(len(CONDITION_WORDS)))

    plan = [("clip_pairs", config.pair_captions), ("clap_pairs", config.pair_captions), ("ulip_pairs", config.ulip_pairs),
            ("memory_images", config.memory_images), ("memory_audio", config.memory_audio),
            ("memory_points", config.memory_points), ("eval_pairs", config.eval_pairs), ("eval_points", config.eval_points)]
    bar = tqdm(total=sum(n for _, n in plan), desc="demo world", unit="item", disable=not progress)
    pair = 0
    for split, n in plan:
        for _ in range(n):
            item = draw()
            if split == "clip_pairs":  # CLIP stand-in learns image–text from pairs
                add("image", split, *item, pair, add_caption(*item, SOURCES[rng.integers(3)], split))
            elif split == "clap_pairs":  # CLAP stand-in learns audio–text from pairs
                add("audio", split, *item, pair, add_caption(*item, SOURCES[rng.integers(3)], split))
            elif split == "ulip_pairs":  # ULIP stand-in learns 3D–image from pairs
                add("image", split, *item, pair)
                add("points", split, *item, pair)
            elif split == "memory_images":
                add("image", "memory", *item)
            elif split == "memory_audio":
                add("audio", "memory", *item)
            elif split == "memory_points":
                add("points", "memory", *item)
            elif split == "eval_pairs":  # AVE-like: an audio and an image of the same event
                add("audio", "eval", *item, pair)
                add("image", "eval", *item, pair)
            else:
                add("points", "eval", *item, pair)
            pair += 1
            bar.update(1)
    bar.close()
    # The C-MCR text corpus: the three sources of §4.1 in the paper's proportions (1.66M : 0.58M : 77K).
    weights = np.array([1.66, 0.58, 0.077]) / (1.66 + 0.58 + 0.077)
    for _ in range(config.corpus):
        add_caption(*draw(), SOURCES[rng.choice(3, p=weights)], "corpus")
    # True pairs of the two modalities C-MCR connects without pairs, for the paired-data reference only
    # (drawn last, so every item above is the same with or without them).
    for _ in range(config.reference_pairs):
        item = draw()
        add("audio", "reference", *item, pair)
        add("image", "reference", *item, pair)
        pair += 1
    for _ in range(config.reference_points):
        item = draw()
        add("points", "reference", *item, pair, add_caption(*item, SOURCES[rng.integers(3)], "reference"))
        pair += 1
    generate_scenes(root, config)
    # The MCR graph's sets, from their own generator and after everything else: every item above is the same
    # with or without them. A sound and a point cloud of one triple share the concept (a shape shows neither
    # size nor condition); its caption is an audio-text caption of the sound's concept, size and condition.
    rng = np.random.default_rng(config.seed + 2)
    for split, n in (("graph_eval", config.graph_eval), ("graph_reference", config.graph_reference)):
        for _ in range(n):
            item = draw()
            text_id = add_caption(*item, "audio-text", split) if split == "graph_eval" else -1
            add("audio", split, *item, pair, text_id)
            add("points", split, *item, pair, text_id)
            pair += 1
    write_parquet(root / "manifest.parquet", pd.DataFrame(rows))
    write_parquet(root / "captions.parquet", pd.DataFrame(captions))
    write_parquet(root / "concepts.parquet", pd.DataFrame({"concept": range(k), "name": concept_names()}))
    counts = pd.DataFrame(rows).groupby(["modality", "split"]).size().to_dict()
    return {f"{m}/{s}": int(n) for (m, s), n in counts.items()} | {"captions": len(captions)}


def render_scene(objects: list[tuple[int, int]], rng: np.random.Generator) -> tuple[np.ndarray, list[list[int]]]:
    """A 64×64 scene with one object per (concept, size) side by side, in new condition; returns the image and
    each object's box."""
    image = np.empty((SCENE_SIZE, SCENE_SIZE, 3), dtype=np.float32)
    image[:] = rng.uniform(0, 255, 3) * 0.5 + 60
    boxes = []
    for slot, (concept, size_level) in enumerate(objects):
        mask = object_mask(concept, size_level, rng)
        ox = int(rng.integers(0, 5)) + slot * 28
        oy = int(rng.integers(0, SCENE_SIZE - IMAGE_SIZE + 1))
        image[oy:oy + IMAGE_SIZE, ox:ox + IMAGE_SIZE][mask] = object_colour(concept, rng)
        ys, xs = np.nonzero(mask)
        boxes.append([int(xs.min()) + ox, int(ys.min()) + oy, int(xs.max()) + 1 + ox, int(ys.max()) + 1 + oy])
    image += rng.normal(0, 10, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), boxes


def generate_scenes(root: Path, config: WorldConfig) -> None:
    """Localization / counterfactual scenes (VGGSS / Ex-VGGSS stand-ins) with a documented proposal file.

    ``scenes/scenes.parquet``: scene_id, image, audio (paths), positive, width, height, concept (of the
    sound), gt_boxes (the sounding object's box; empty for negatives). ``scenes/proposals.parquet``:
    scene_id, x1, y1, x2, y2 — from a stand-in "detector": every object's box jittered by up to 2 px,
    plus two random boxes.
    """
    rng = np.random.default_rng(config.seed + 1)  # independent of the rest of the world
    folder = root / "scenes"
    folder.mkdir(parents=True, exist_ok=True)
    scenes, proposals = [], []
    k = len(CONCEPTS)
    for i in range(config.scenes + config.scene_negatives):
        positive = i < config.scenes
        concepts = rng.choice(k, size=3, replace=False)  # two in the picture, a third for negatives
        objects = [(int(c), int(rng.integers(3))) for c in concepts[:2]]
        image, boxes = render_scene(objects, rng)
        sounding = int(rng.integers(2))
        concept, size_level = objects[sounding] if positive else (int(concepts[2]), int(rng.integers(3)))
        scene_id = f"scene_{i:05d}"
        Image.fromarray(image).save(folder / f"{scene_id}.png")
        write_wav(folder / f"{scene_id}.wav", synthesize_sound(concept, size_level, rng))
        scenes.append({"scene_id": scene_id, "image": f"scenes/{scene_id}.png", "audio": f"scenes/{scene_id}.wav",
                       "positive": positive, "width": SCENE_SIZE, "height": SCENE_SIZE, "concept": concept,
                       "gt_boxes": [boxes[sounding]] if positive else []})
        for box in boxes:
            jitter = rng.integers(-2, 3, 4)
            x1, y1 = max(0, box[0] + jitter[0]), max(0, box[1] + jitter[1])
            x2, y2 = min(SCENE_SIZE, max(x1 + 2, box[2] + jitter[2])), min(SCENE_SIZE, max(y1 + 2, box[3] + jitter[3]))
            proposals.append({"scene_id": scene_id, "x1": int(x1), "y1": int(y1), "x2": int(x2), "y2": int(y2)})
        for _ in range(2):
            w, h = rng.integers(12, 31, 2)
            x1, y1 = int(rng.integers(0, SCENE_SIZE - w)), int(rng.integers(0, SCENE_SIZE - h))
            proposals.append({"scene_id": scene_id, "x1": x1, "y1": y1, "x2": int(x1 + w), "y2": int(y1 + h)})
    write_parquet(folder / "scenes.parquet", pd.DataFrame(scenes))
    write_parquet(folder / "proposals.parquet", pd.DataFrame(proposals))


class WorldFiles:
    """The demo world's file layout as the pipeline reads it — the one place that knows it.

    ``rows(name, modality)`` gives the items of an extraction set the way a user's manifest would: a
    table with an ``item`` column (an :class:`~cmcr.items.Item`, or the text) and descriptive columns
    (``pair_id``, ``concept``, ``scene_id``, box, …). Set names are those of the pipeline (``image``,
    ``audio``, ``points`` memories; ``eval_image``, ``scene_proposals``, … evaluation sets).
    """

    #: evaluation set → where its items are in the world
    EVAL = {"eval_image": "eval", "eval_audio": "eval", "eval_points": "eval", "prompts": "prompts",
            "scene_proposals": "proposals", "scene_audio": "scenes", "paired_image": "reference",
            "paired_audio": "reference", "paired_points": "reference", "paired_text": "reference",
            "graph_audio": "graph_eval", "graph_points": "graph_eval", "graph_text": "graph_eval",
            "paired_audio_points": "graph_reference", "paired_points_audio": "graph_reference"}

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _table(self, name: str):
        return pd.read_parquet(self.root / name)

    def corpus(self):
        """The C-MCR text set (§4.1 stand-in): ``text_id, text, source``."""
        captions = self._table("captions.parquet")
        return captions[captions["split"] == "corpus"][["text_id", "text", "source"]].reset_index(drop=True)

    def captions(self) -> list[str]:
        """Every caption of the world (pairs and corpus): the stand-ins' text towers take their words."""
        return list(self._table("captions.parquet")["text"])

    def pairs(self, space: str, modalities: tuple[str, str]) -> dict[str, list]:
        """The paired items a stand-in space trains on: ``{modality: items}``, pair i at position i."""
        manifest = self._table("manifest.parquet")
        rows = manifest[manifest["split"] == f"{space}_pairs"]
        out = {}
        for modality in modalities:
            if modality == "text":
                captions = self._table("captions.parquet").set_index("text_id")
                first = rows.sort_values("pair_id")
                out["text"] = list(captions.loc[first["text_id"], "text"])
            else:
                ordered = rows[rows["modality"] == modality].sort_values("pair_id")
                out[modality] = [str(self.root / p) for p in ordered["path"]]
        return out

    def rows(self, name: str, modality: str):
        """The items of extraction set ``name`` (memory sets are named by their modality)."""
        source = self.EVAL.get(name, "memory")
        if source == "prompts":
            frame = pd.DataFrame([{"label": c, "name": n, "prompt": t}
                                  for c, n in enumerate(concept_names()) for t in class_prompts(n)])
            return frame.assign(item=frame["prompt"])
        if source == "proposals":  # one row per box: the scene image cropped at it
            boxes = self._table("scenes/proposals.parquet")
            items = [Item(str(self.root / "scenes" / f"{sid}.png"), (x1, y1, x2, y2))
                     for sid, x1, y1, x2, y2 in boxes[["scene_id", "x1", "y1", "x2", "y2"]].itertuples(index=False)]
            return boxes.assign(item=items)
        if source == "scenes":
            scenes = self._table("scenes/scenes.parquet")
            return scenes.drop(columns=["image", "audio"]).assign(item=[str(self.root / a) for a in scenes["audio"]])
        manifest = self._table("manifest.parquet")
        if source in ("reference", "graph_eval") and modality == "text":  # the reference clouds' / triples' captions
            points = manifest[(manifest["modality"] == "points") & (manifest["split"] == source)]
            captions = self._table("captions.parquet").set_index("text_id")
            rows = points.sort_values("pair_id")[["pair_id", "text_id", "concept", "size", "condition"]].reset_index(drop=True)
            return rows.assign(item=list(captions.loc[rows["text_id"], "text"]))
        rows = manifest[(manifest["modality"] == modality) & (manifest["split"] == source)]
        rows = rows.sort_values("pair_id" if source in ("eval", "reference", "graph_eval", "graph_reference") else "item_id")
        return rows.assign(item=[str(self.root / p) for p in rows["path"]]).reset_index(drop=True)

    def memory_items(self, modality: str, limit: int | None = None) -> list[str]:
        """Paths of the world's memory files of one modality (the first ``limit``)."""
        return list(self.rows(modality, modality)["item"][:limit])
