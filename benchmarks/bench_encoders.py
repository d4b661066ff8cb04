"""Benchmark: items/s of each real-architecture encoder (random weights, same compute as the real ones).

    python benchmarks/bench_encoders.py [--device cpu|cuda] [--n 64]

Uses the official release's real files from ../shared/fixtures/c-mcr-official/ when present (JPEG
photos, 32 kHz WAVs resampled to 48 kHz, 10k-point Objaverse clouds), else generated inputs; times
decoding + encoding through the same `extract` path the pipeline uses.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import typer

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "c-mcr-official"
app = typer.Typer(add_completion=False)


def inputs(n: int, folder: Path) -> dict[str, list[str]]:
    if FIXTURES.is_dir():
        pick = lambda ext: [str(p) for p in sorted(FIXTURES.glob(f"*.{ext}"))]  # noqa: E731
        images, sounds, clouds = pick("jpeg"), pick("wav"), pick("npy")
    else:
        from PIL import Image
        import soundfile

        rng = np.random.default_rng(0)
        images, sounds, clouds = [], [], []
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
            soundfile.write(folder / f"{i}.wav", rng.normal(0, 0.1, 32000 * 10).astype(np.float32), 32000)
            np.save(folder / f"{i}.npy", rng.normal(size=(10000, 3)).astype(np.float32))
            images.append(str(folder / f"{i}.jpg")), sounds.append(str(folder / f"{i}.wav")), clouds.append(str(folder / f"{i}.npy"))
    cycle = lambda xs: [xs[i % len(xs)] for i in range(n)]  # noqa: E731
    return {"image": cycle(images), "audio": cycle(sounds), "points": cycle(clouds),
            "text": [f"a photo of a dog number {i} playing in the park" for i in range(n)]}


@app.command()
def main(device: str = "cpu", n: int = 64, batch_size: int = 32) -> None:
    from cmcr.encoders.base import build_space
    from cmcr.extraction import extract

    torch.manual_seed(0)
    print(f"device {device}, torch threads {torch.get_num_threads()}, {n} items per encoder, batch {batch_size}")
    with tempfile.TemporaryDirectory() as tmp:
        data = inputs(n, Path(tmp))
        runs = [("clip", "image", {}), ("clip", "text", {}), ("clap", "audio", {}),
                ("ulip", "points", {"trust_pickled_points": True})]
        spaces = {}
        for name, modality, extra in runs:
            if name not in spaces:
                start = time.perf_counter()
                spaces[name] = build_space(name, allow_random=True, device=device, **extra)
                print(f"{name}: built in {time.perf_counter() - start:.1f} s")
            extract(spaces[name], modality, data[modality][:batch_size], batch_size=batch_size, progress=False)  # warm-up
            start = time.perf_counter()
            out = extract(spaces[name], modality, data[modality], batch_size=batch_size, progress=False)
            seconds = time.perf_counter() - start
            print(f"{name:>5} {modality:<6}: {n / seconds:8.1f} items/s  ({len(out.kept)} ok, {len(out.failures)} failed)")


if __name__ == "__main__":
    app()
