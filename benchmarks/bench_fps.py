"""Benchmark: ULIP's farthest point sampling (10,000 → 8,192 points), one cloud at a time vs batched.

    python benchmarks/bench_fps.py [--device cpu|cuda] [--batch 16] [--points 10000] [--npoints 8192]

The sampling is 8,192 sequential steps per cloud and dominated ULIP extraction on the CPU when it ran
per cloud in the loader; the space now samples each batch in one loop on the encoder's device.
"""

from __future__ import annotations

import time

import torch
import typer

app = typer.Typer(add_completion=False)


@app.command()
def main(device: str = "cpu", batch: int = 16, points: int = 10_000, npoints: int = 8192) -> None:
    from cmcr.encoders.pointbert import farthest_point_sample

    dev = torch.device(device)
    clouds = torch.randn(batch, points, 3, generator=torch.Generator().manual_seed(0)).to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    farthest_point_sample(clouds[:1, :1000], 16)  # warm-up
    print(f"device {dev}, torch threads {torch.get_num_threads()}, {points} → {npoints} points")
    start = time.perf_counter()
    singles = [farthest_point_sample(clouds[i:i + 1], npoints) for i in range(min(batch, 4))]
    sync()
    one = (time.perf_counter() - start) / len(singles)
    start = time.perf_counter()
    together = farthest_point_sample(clouds, npoints)
    sync()
    per_cloud = (time.perf_counter() - start) / batch
    same = all(torch.equal(s[0], together[i]) for i, s in enumerate(singles))
    print(f"one cloud at a time: {one:.3f} s/cloud ({1 / one:.1f} clouds/s)")
    print(f"batch of {batch}:      {per_cloud:.3f} s/cloud ({1 / per_cloud:.1f} clouds/s), "
          f"{one / per_cloud:.1f}× faster; same indices: {same}")


if __name__ == "__main__":
    app()
